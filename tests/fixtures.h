// fixtures.h: the fixtures the C tests share: a scratch directory per test (or per group) that
// teardown removes with everything in it, and writers of the files a test puts there (text,
// bytes). Data-format writers and data-source helpers are in data_fixtures.h.
//
// A fixture struct used with scratch_setup / scratch_teardown begins with
// `char dir[SCRATCH_DIR_LEN]` (ScratchDir, when the directory is all a test needs):
//
//     typedef struct { char dir[SCRATCH_DIR_LEN]; char base[128]; } Scratch;
//     static int setup(void **state) { return scratch_setup(state, Scratch, "/tmp/entrank-x-XXXXXX"); }
//     ... cmocka_run_group_tests(tests, setup, scratch_teardown)
//
// cmocka is included before this header (the writers assert).
#pragma once
#include <ftw.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SCRATCH_DIR_LEN 64

typedef struct {
    char dir[SCRATCH_DIR_LEN];
} ScratchDir;

// Allocates `size` zeroed bytes, makes a fresh directory from `template` (mkdtemp's: it ends in
// XXXXXX) in their first SCRATCH_DIR_LEN bytes and stores them in *state. 0, or -1 on failure.
static inline int scratch_setup_size(void **state, size_t size, const char *template) {
    char *fixture = calloc(1, size);
    if (!fixture) return -1;
    snprintf(fixture, SCRATCH_DIR_LEN, "%s", template);
    if (!mkdtemp(fixture)) {
        free(fixture);
        return -1;
    }
    *state = fixture;
    return 0;
}

// scratch_setup(state, Type, template): as scratch_setup_size for a fixture of type Type, whose
// first member must be `char dir[SCRATCH_DIR_LEN]` (checked when compiling).
#define scratch_setup(state, Type, template)                                                                  \
    scratch_setup_size((state),                                                                               \
                       sizeof(Type) + 0 * sizeof(struct {                                                     \
                           _Static_assert(offsetof(Type, dir) == 0 && sizeof(((Type *)0)->dir) == SCRATCH_DIR_LEN, \
                                          #Type " must begin with char dir[SCRATCH_DIR_LEN]");               \
                           char unused;                                                                       \
                       }),                                                                                    \
                       (template))

static inline int scratch_remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
}

// Removes the scratch directory with everything below it and frees the fixture.
static inline int scratch_teardown(void **state) {
    char *dir = *state;
    nftw(dir, scratch_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
    return 0;
}

// dir/name in path (n bytes); returns path.
static inline char *scratch_path(const char *dir, const char *name, char *path, size_t n) {
    snprintf(path, n, "%s/%s", dir, name);
    return path;
}

// Writes n bytes to path (created or truncated), asserting that all of them were written.
static inline void write_bytes(const char *path, const void *buf, size_t n) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(buf, 1, n, fp), n);
    fclose(fp);
}

// Writes `text` to dir/name; the file's path goes to path (n bytes) and is returned.
static inline const char *write_scratch_file(const char *dir, const char *name, const char *text, char *path, size_t n) {
    write_bytes(scratch_path(dir, name, path, n), text, strlen(text));
    return path;
}
