// data_llmc.c: llm.c token shards.
//
// Format (llm.c dev/data/data_common.py), all little-endian:
//   header  int32[256]: [0] magic 20240520, [1] version, [2] token count N, rest unused
//   tokens  version 1: uint16[N]; version 2: uint32[N]; starting at byte 1024
// The file size must be exactly 1024 + itemsize N, as llm.c's own loader requires.
//
// Version 2 is entrank's extension (llm.c itself only writes version 1): the same header, with
// uint32 tokens, for vocabularies above 65,535 ids; tools/prepare-data writes it. All shards of
// one pattern must share a version, because a split is read with one token width.
#define _FILE_OFFSET_BITS 64
#include "data_files.h"
#include <errno.h>
#include <string.h>
#include <unistd.h>

#define LLMC_MAGIC 20240520
#define LLMC_VERSION_U16 1
#define LLMC_VERSION_U32 2
#define LLMC_HEADER_BYTES (256 * 4)

static int llmc_check_shard(const char *path, const char *key, int64_t *n_tokens, int *itemsize, Error *err) {
    int fd;
    int64_t size;
    if (data_file_open(path, key, &fd, &size, err)) return -1;
    unsigned char h[LLMC_HEADER_BYTES];
    int64_t got = data_pread_full(fd, h, LLMC_HEADER_BYTES, 0);
    int e = errno;
    close(fd);
    if (got < 0) return error_set(err, "%s: byte offset 0: read error: %s", path, strerror(e));
    if (got < LLMC_HEADER_BYTES)
        return error_set(err, "%s: truncated header: expected %d bytes, the file has %lld (data ends at byte offset %lld)",
                         path, LLMC_HEADER_BYTES, (long long)got, (long long)got);
    int32_t magic = (int32_t)data_le(h, 4), version = (int32_t)data_le(h + 4, 4), count = (int32_t)data_le(h + 8, 4);
    if (magic != LLMC_MAGIC)
        return error_set(err, "%s: byte offset 0: bad magic %d (an llm.c token shard starts with %d)", path, magic, LLMC_MAGIC);
    if (version != LLMC_VERSION_U16 && version != LLMC_VERSION_U32)
        return error_set(err, "%s: byte offset 4: unsupported version %d (expected %d: uint16 tokens, or %d: uint32 tokens)", path, version,
                         LLMC_VERSION_U16, LLMC_VERSION_U32);
    if (count < 0) return error_set(err, "%s: byte offset 8: negative token count %d", path, count);
    *itemsize = version == LLMC_VERSION_U16 ? 2 : 4;
    int64_t expected = LLMC_HEADER_BYTES + *itemsize * (int64_t)count;
    if (size < expected)
        return error_set(err, "%s: truncated: the header declares %d tokens, so %lld bytes are expected, but the file has %lld (data ends at byte offset %lld)",
                         path, count, (long long)expected, (long long)size, (long long)size);
    if (size > expected)
        return error_set(err, "%s: byte offset %lld: %lld trailing bytes after the %d tokens the header declares (expected size %lld, actual %lld)",
                         path, (long long)expected, (long long)(size - expected), count, (long long)expected, (long long)size);
    *n_tokens = count;
    return 0;
}

int llmc_open(const char *pattern, const char *key, TokenFiles *out, Error *err) {
    memset(out, 0, sizeof *out);
    out->itemsize = 2;
    out->is_signed = 0;
    char **paths;
    int n;
    if (data_expand_pattern(pattern, key, &paths, &n, err)) return -1;
    for (int i = 0; i < n; i++) {
        int64_t count;
        int itemsize;
        if (llmc_check_shard(paths[i], key, &count, &itemsize, err) ||
            (i > 0 && itemsize != out->itemsize &&
             error_set(err, "%s: byte offset 4: version %d (%s tokens) differs from %s's (%s tokens); one split reads one token width", paths[i],
                       itemsize == 2 ? LLMC_VERSION_U16 : LLMC_VERSION_U32, itemsize == 2 ? "uint16" : "uint32", paths[0],
                       out->itemsize == 2 ? "uint16" : "uint32"))) {
            data_free_paths(paths, n);
            token_files_free(out);
            return -1;
        }
        out->itemsize = itemsize;
        token_files_add(out, paths[i], LLMC_HEADER_BYTES, count);
    }
    data_free_paths(paths, n);
    return 0;
}
