// data_files.c: opening, reading and globbing token files; shared by the llmc, megatron and text kinds.
#define _FILE_OFFSET_BITS 64   // off_t is 64-bit: shards larger than 2 GiB are normal
#include "data_files.h"
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

void token_files_add(TokenFiles *f, const char *path, int64_t data_offset, int64_t n_tokens) {
    TokenShard *s = realloc(f->shards, (size_t)(f->n_shards + 1) * sizeof *s);
    CHECK_ALLOC(s);
    f->shards = s;
    s[f->n_shards].path = xstrdup(path);
    s[f->n_shards].data_offset = data_offset;
    s[f->n_shards].n_tokens = n_tokens;
    s[f->n_shards].map = NULL;
    s[f->n_shards].map_bytes = 0;
    f->n_shards++;
}

void token_files_free(TokenFiles *f) {
    for (int i = 0; i < f->n_shards; i++) {
        if (f->shards[i].map) munmap((void *)f->shards[i].map, (size_t)f->shards[i].map_bytes);
        free(f->shards[i].path);
    }
    free(f->shards);
    memset(f, 0, sizeof *f);
}

int data_file_open(const char *path, const char *key, int *fd, int64_t *size, Error *err) {
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0) return error_set(err, "%s: cannot open (%s): %s", path, key, strerror(errno));
    struct stat st;
    const char *why = NULL;
    if (fstat(*fd, &st) != 0) why = strerror(errno);
    else if (!S_ISREG(st.st_mode)) why = "not a regular file";
    if (why) {
        close(*fd);
        *fd = -1;
        return error_set(err, "%s: cannot open (%s): %s", path, key, why);
    }
    *size = (int64_t)st.st_size;
    return 0;
}

int64_t data_pread_full(int fd, void *buf, int64_t n, int64_t offset) {
    int64_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, (char *)buf + done, (size_t)(n - done), (off_t)(offset + done));
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) break;   // end of file
        done += r;
    }
    return done;
}

int data_expand_pattern(const char *pattern, const char *key, char ***paths, int *n, Error *err) {
    *paths = NULL;
    *n = 0;
    if (pattern[0] == '\0') return error_set(err, "%s: is empty (a file or glob pattern is required)", key);
    if (strpbrk(pattern, "*?[") == NULL) {
        // A plain path: keep it, so that a missing file is reported by open() with its own name.
        *paths = xmalloc(sizeof **paths);
        (*paths)[0] = xstrdup(pattern);
        *n = 1;
        return 0;
    }
    glob_t g;
    int rc = glob(pattern, GLOB_ERR, NULL, &g);   // results come sorted (no GLOB_NOSORT)
    if (rc == GLOB_NOMATCH) return error_set(err, "%s: no file matches \"%s\"", key, pattern);
    if (rc != 0) return error_set(err, "%s: cannot expand \"%s\": %s", key, pattern, rc == GLOB_NOSPACE ? "out of memory" : "read error");
    *paths = xmalloc(g.gl_pathc * sizeof **paths);
    for (size_t i = 0; i < g.gl_pathc; i++) (*paths)[i] = xstrdup(g.gl_pathv[i]);
    *n = (int)g.gl_pathc;
    globfree(&g);
    return 0;
}

void data_free_paths(char **paths, int n) {
    for (int i = 0; i < n; i++) free(paths[i]);
    free(paths);
}
