// data_text.c: raw UTF-8 text read as bytes, one token per byte (vocabulary 256).
//
// No header: the whole file is the token stream. Multi-byte UTF-8 characters become several
// tokens, as in byte-level models; nothing is decoded, so any file is valid input.
#define _FILE_OFFSET_BITS 64
#include "data_files.h"
#include <string.h>
#include <unistd.h>

int text_open(const char *pattern, const char *key, TokenFiles *out, Error *err) {
    memset(out, 0, sizeof *out);
    out->itemsize = 1;
    out->is_signed = 0;
    char **paths;
    int n;
    if (data_expand_pattern(pattern, key, &paths, &n, err)) return -1;
    for (int i = 0; i < n; i++) {
        int fd;
        int64_t size;
        if (data_file_open(paths[i], key, &fd, &size, err)) {
            data_free_paths(paths, n);
            token_files_free(out);
            return -1;
        }
        close(fd);
        token_files_add(out, paths[i], 0, size);
    }
    data_free_paths(paths, n);
    return 0;
}
