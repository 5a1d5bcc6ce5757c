// data_megatron.c: Megatron-LM indexed datasets (PREFIX.idx + PREFIX.bin, "mmap" implementation).
//
// PREFIX.idx, little-endian (as megatron/core/datasets/indexed_dataset.py _IndexWriter writes it):
//   offset  0  magic "MMIDIDX\0\0"   9 bytes
//   offset  9  version               uint64 = 1
//   offset 17  dtype code            uint8: 1 uint8, 2 int8, 3 int16, 4 int32, 5 int64,
//                                           6 float64, 7 float32, 8 uint16
//   offset 18  sequence count S      uint64
//   offset 26  document count D      uint64 (length of doc_idx, which starts with a 0)
//   offset 34  sizes                 int32[S]   tokens per sequence
//              pointers              int64[S]   byte offset of each sequence in .bin
//              doc_idx               int64[D]
//              (multimodal datasets append int8[S] sequence modes)
// PREFIX.bin: the tokens of all sequences back to back.
//
// Windows may cross sequence and document boundaries inside the .bin (as Megatron's GPTDataset
// does), so the .bin is read as one token stream from pointers[0] to pointers[S-1] + sizes[S-1].
#define _FILE_OFFSET_BITS 64
#include "data_files.h"
#include <errno.h>
#include <string.h>
#include <unistd.h>

#define IDX_MAGIC "MMIDIDX\0\0"
#define IDX_HEADER_BYTES 34

static const struct { int itemsize, is_signed; const char *name; } megatron_dtypes[9] = {
    [1] = { 1, 0, "uint8" }, [2] = { 1, 1, "int8" }, [3] = { 2, 1, "int16" }, [4] = { 4, 1, "int32" },
    [5] = { 8, 1, "int64" }, [6] = { 0, 0, "float64" }, [7] = { 0, 0, "float32" }, [8] = { 2, 0, "uint16" },
};

// Reads `n` bytes at `offset` of the .idx; the size was checked first, so a short read is an I/O error.
static int idx_read(int fd, const char *path, void *buf, int64_t n, int64_t offset, Error *err) {
    int64_t got = data_pread_full(fd, buf, n, offset);
    if (got != n) return error_set(err, "%s: byte offset %lld: read error: %s", path, (long long)(offset + (got > 0 ? got : 0)),
                                   got < 0 ? strerror(errno) : "unexpected end of file");
    return 0;
}

static int megatron_check(const char *prefix, const char *key, TokenFiles *out, Error *err) {
    size_t plen = strlen(prefix);
    char *idx_path = xmalloc(plen + 5), *bin_path = xmalloc(plen + 5);
    memcpy(idx_path, prefix, plen); memcpy(idx_path + plen, ".idx", 5);
    memcpy(bin_path, prefix, plen); memcpy(bin_path + plen, ".bin", 5);
    int rc = -1, fd = -1;
    int64_t idx_size, bin_size;
    if (data_file_open(idx_path, key, &fd, &idx_size, err)) goto done;

    unsigned char h[IDX_HEADER_BYTES];
    if (idx_size < IDX_HEADER_BYTES) {
        error_set(err, "%s: truncated header: expected %d bytes, the file has %lld (data ends at byte offset %lld)",
                  idx_path, IDX_HEADER_BYTES, (long long)idx_size, (long long)idx_size);
        goto done;
    }
    if (idx_read(fd, idx_path, h, IDX_HEADER_BYTES, 0, err)) goto done;
    if (memcmp(h, IDX_MAGIC, 9) != 0) {
        error_set(err, "%s: byte offset 0: bad magic (a Megatron index starts with \"MMIDIDX\\0\\0\")", idx_path);
        goto done;
    }
    uint64_t version = data_le(h + 9, 8);
    if (version != 1) {
        error_set(err, "%s: byte offset 9: unsupported version %llu (expected 1)", idx_path, (unsigned long long)version);
        goto done;
    }
    int code = h[17];
    if (code < 1 || code > 8 || megatron_dtypes[code].itemsize == 0) {
        error_set(err, "%s: byte offset 17: dtype code %d (%s): token ids must be integers (codes 1-5 or 8)", idx_path, code,
                  code >= 1 && code <= 8 ? megatron_dtypes[code].name : "unknown");
        goto done;
    }
    uint64_t n_seq = data_le(h + 18, 8), n_doc = data_le(h + 26, 8);
    // Counts beyond 2^40 cannot come from a real file and would overflow the size arithmetic below.
    if (n_seq > (1ULL << 40) || n_doc > (1ULL << 40)) {
        error_set(err, "%s: byte offset %d: implausible count (%llu sequences, %llu documents)", idx_path,
                  n_seq > (1ULL << 40) ? 18 : 26, (unsigned long long)n_seq, (unsigned long long)n_doc);
        goto done;
    }
    int64_t sizes_at = IDX_HEADER_BYTES, pointers_at = sizes_at + 4 * (int64_t)n_seq;
    int64_t doc_at = pointers_at + 8 * (int64_t)n_seq, expected = doc_at + 8 * (int64_t)n_doc;
    if (idx_size != expected && idx_size != expected + (int64_t)n_seq) {
        error_set(err, "%s: byte offset %lld: the counts at byte offset 18 (%llu sequences, %llu documents) need %lld bytes, the file has %lld",
                  idx_path, (long long)(idx_size < expected ? idx_size : expected), (unsigned long long)n_seq,
                  (unsigned long long)n_doc, (long long)expected, (long long)idx_size);
        goto done;
    }
    out->itemsize = megatron_dtypes[code].itemsize;
    out->is_signed = megatron_dtypes[code].is_signed;

    int64_t first = 0, end = 0;
    if (n_seq > 0) {
        unsigned char b[8];
        int64_t last_size_at = sizes_at + 4 * ((int64_t)n_seq - 1), last_ptr_at = pointers_at + 8 * ((int64_t)n_seq - 1);
        if (idx_read(fd, idx_path, b, 8, pointers_at, err)) goto done;
        first = (int64_t)data_le(b, 8);
        if (idx_read(fd, idx_path, b, 8, last_ptr_at, err)) goto done;
        int64_t last = (int64_t)data_le(b, 8);
        if (idx_read(fd, idx_path, b, 4, last_size_at, err)) goto done;
        int32_t last_size = (int32_t)data_le(b, 4);
        if (first < 0 || first % out->itemsize != 0) {
            error_set(err, "%s: byte offset %lld: bad first pointer %lld", idx_path, (long long)pointers_at, (long long)first);
            goto done;
        }
        if (last < first || (last - first) % out->itemsize != 0) {
            error_set(err, "%s: byte offset %lld: bad last pointer %lld", idx_path, (long long)last_ptr_at, (long long)last);
            goto done;
        }
        if (last_size < 0) {
            error_set(err, "%s: byte offset %lld: negative sequence size %d", idx_path, (long long)last_size_at, last_size);
            goto done;
        }
        end = last + (int64_t)last_size * out->itemsize;
    }
    close(fd);
    fd = -1;
    if (data_file_open(bin_path, key, &fd, &bin_size, err)) goto done;
    if (bin_size < end) {
        error_set(err, "%s: truncated: %s says the last sequence ends at byte offset %lld, but the file has %lld bytes (data ends at byte offset %lld)",
                  bin_path, idx_path, (long long)end, (long long)bin_size, (long long)bin_size);
        goto done;
    }
    token_files_add(out, bin_path, first, (end - first) / out->itemsize);
    rc = 0;
done:
    if (fd >= 0) close(fd);
    free(idx_path);
    free(bin_path);
    return rc;
}

int megatron_open(const char *prefix, const char *key, TokenFiles *out, Error *err) {
    memset(out, 0, sizeof *out);
    if (prefix[0] == '\0') return error_set(err, "%s: is empty (the Megatron dataset prefix, without .idx/.bin, is required)", key);
    if (megatron_check(prefix, key, out, err)) {
        token_files_free(out);
        return -1;
    }
    return 0;
}
