// eval_checkpoint.c: --checkpoint as a file, the `latest` pointer or a run directory.
#include "eval_checkpoint.h"
#include "regular_file.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FORMS "give a checkpoint file, RUN/checkpoints/latest or a run directory"

static const unsigned char HDF5_SIGNATURE[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};

// 1 if `path` starts with the HDF5 signature (entrank writes no user block, so it is at offset 0).
static int is_hdf5(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    unsigned char head[8];
    int ok = fread(head, 1, sizeof head, f) == sizeof head && !memcmp(head, HDF5_SIGNATURE, sizeof head);
    fclose(f);
    return ok;
}

// The checkpoint a `latest` pointer file names: one file name, relative to the pointer's directory.
static int follow_pointer(const char *pointer, char *out, size_t n, Error *err) {
    FILE *f = fopen(pointer, "r");
    if (!f) return error_set(err, "%s: cannot read: %s", pointer, strerror(errno));
    char name[256];
    int ok = fscanf(f, "%255s", name) == 1;
    fclose(f);
    size_t len = ok ? strlen(name) : 0;
    if (!ok || strchr(name, '/') || len < 4 || strcmp(name + len - 3, ".h5"))
        return error_set(err, "%s: neither an HDF5 checkpoint nor a `latest` pointer (one checkpoint file name); " FORMS, pointer);
    const char *slash = strrchr(pointer, '/');
    int dir_len = slash ? (int)(slash - pointer) : 0;
    if (slash) snprintf(out, n, "%.*s/%s", dir_len, pointer, name);
    else snprintf(out, n, "%s", name);
    const char *why;
    if (regular_file_check(out, &why) || !is_hdf5(out))
        return error_set(err, "%s: names %s, which is not a readable checkpoint file", pointer, out);
    return 0;
}

int eval_resolve_checkpoint(const char *given, char *out, size_t n, Error *err) {
    struct stat sb;
    if (stat(given, &sb)) return error_set(err, "%s: cannot read checkpoint: %s; " FORMS, given, strerror(errno));
    if (S_ISDIR(sb.st_mode)) {
        char pointer[4096];
        snprintf(pointer, sizeof pointer, "%s/checkpoints/latest", given);
        if (access(pointer, F_OK)) snprintf(pointer, sizeof pointer, "%s/latest", given);   // RUN/checkpoints itself
        if (access(pointer, F_OK))
            return error_set(err, "%s: a directory without checkpoints/latest (no checkpoint written yet?); " FORMS, given);
        return follow_pointer(pointer, out, n, err);
    }
    const char *why;
    if (regular_file_check(given, &why)) return error_set(err, "%s: %s; " FORMS, given, why);
    if (access(given, R_OK)) return error_set(err, "%s: cannot read checkpoint: %s", given, strerror(errno));
    if (is_hdf5(given)) {
        snprintf(out, n, "%s", given);
        return 0;
    }
    return follow_pointer(given, out, n, err);
}

int eval_run_dir_of(const char *checkpoint, char *out, size_t n) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", checkpoint);
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else *slash = 0;   // RUN/checkpoints
    char *base = strrchr(dir, '/');
    if (strcmp(base ? base + 1 : dir, "checkpoints")) return 0;
    if (base) *base = 0;
    else snprintf(dir, sizeof dir, ".");
    char metrics[4200];
    snprintf(metrics, sizeof metrics, "%s/metrics.h5", dir);
    if (access(metrics, F_OK)) return 0;
    snprintf(out, n, "%s", dir);
    return 1;
}
