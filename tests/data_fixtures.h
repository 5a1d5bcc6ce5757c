// data_fixtures.h: what the data-source tests share: writers of the public on-disk formats (llm.c
// token shards, Megatron-LM indexed datasets; the same formats as the pytest writers in
// tests/conftest.py), the base Config of a data test, data_open that must succeed or must fail
// with a given message, and the SequenceBuffers of a fixture's arrays. cmocka is included before this header.
#pragma once
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "data/data.h"
#include "fixtures.h"

// n bytes of v, little-endian, at p.
static inline void put_le(unsigned char *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++) p[i] = (unsigned char)(v >> (8 * i));
}

// ---- llm.c token shards: a header of 256 int32 (magic 20240520, version 1, token count, zeros),
// then the tokens as uint16.

#define LLMC_MAGIC 20240520
#define LLMC_HEADER_BYTES 1024

static inline void llmc_header(unsigned char h[LLMC_HEADER_BYTES], int32_t magic, int32_t version, int32_t count) {
    memset(h, 0, LLMC_HEADER_BYTES);
    put_le(h, (uint32_t)magic, 4);
    put_le(h + 4, (uint32_t)version, 4);
    put_le(h + 8, (uint32_t)count, 4);
}

// Writes an llm.c shard of the n tokens `tok`, with optional corruptions: another
// magic/version/count than (LLMC_MAGIC, 1, n), or `cut` bytes removed from the end.
static inline void write_llmc_shard(const char *path, const uint16_t *tok, int n, int32_t magic, int32_t version,
                                    int32_t count, int cut) {
    size_t size = LLMC_HEADER_BYTES + 2 * (size_t)n;
    unsigned char *buf = malloc(size);
    assert_non_null(buf);
    llmc_header(buf, magic, version, count);
    for (int i = 0; i < n; i++) put_le(buf + LLMC_HEADER_BYTES + 2 * (size_t)i, tok[i], 2);
    write_bytes(path, buf, size - (size_t)cut);
    free(buf);
}

// ---- Megatron-LM indexed datasets (PREFIX.idx + PREFIX.bin)

// Writes PREFIX.idx / PREFIX.bin the way Megatron-LM's _IndexWriter does: one sequence per
// document, doc_idx = [0, 1, ..., n_seq] (so the document count is n_seq + 1); tokens of
// `itemsize` bytes with dtype code `dtype`. `bin_cut` bytes are removed from the end of the .bin,
// `idx_extra` (zero) bytes appended to the .idx.
// Token i of a test shard: distinct within a shard, and shards differ by `salt`.
static inline uint16_t salted_token(int salt, int i) { return (uint16_t)((salt * 20000 + i * 7 + 3) % 65000); }

// An llm.c shard `name` in scratch directory `dir` of n salted tokens; its path into path_out (256 bytes).
static inline void write_salted_shard(const char *dir, const char *name, int salt, int n, char *path_out) {
    uint16_t *tok = malloc((size_t)n * sizeof *tok);
    for (int i = 0; i < n; i++) tok[i] = salted_token(salt, i);
    scratch_path(dir, name, path_out, 256);
    write_llmc_shard(path_out, tok, n, LLMC_MAGIC, 1, n, 0);
    free(tok);
}

static inline void write_megatron(const char *prefix, int dtype, int itemsize, const int64_t *tok, const int *seq_len,
                                  int n_seq, int bin_cut, int idx_extra) {
    int n_tok = 0;
    for (int s = 0; s < n_seq; s++) n_tok += seq_len[s];
    unsigned char *bin = calloc((size_t)n_tok * itemsize + 1, 1);
    assert_non_null(bin);
    for (int i = 0; i < n_tok; i++) put_le(bin + (size_t)i * itemsize, (uint64_t)tok[i], itemsize);
    char path[256];
    snprintf(path, sizeof path, "%s.bin", prefix);
    write_bytes(path, bin, (size_t)n_tok * itemsize - (size_t)bin_cut);
    free(bin);

    int n_doc = n_seq + 1;
    size_t idx_size = 34 + 4 * (size_t)n_seq + 8 * (size_t)n_seq + 8 * (size_t)n_doc;
    unsigned char *idx = calloc(idx_size + (size_t)idx_extra, 1);
    assert_non_null(idx);
    memcpy(idx, "MMIDIDX\0\0", 9);
    put_le(idx + 9, 1, 8);
    idx[17] = (unsigned char)dtype;
    put_le(idx + 18, (uint64_t)n_seq, 8);
    put_le(idx + 26, (uint64_t)n_doc, 8);
    unsigned char *p = idx + 34;
    for (int s = 0; s < n_seq; s++, p += 4) put_le(p, (uint64_t)seq_len[s], 4);
    int64_t ptr = 0;
    for (int s = 0; s < n_seq; s++, p += 8) {
        put_le(p, (uint64_t)ptr, 8);
        ptr += (int64_t)seq_len[s] * itemsize;
    }
    for (int d = 0; d < n_doc; d++, p += 8) put_le(p, (uint64_t)d, 8);
    snprintf(path, sizeof path, "%s.idx", prefix);
    write_bytes(path, idx, idx_size + (size_t)idx_extra);
    free(idx);
}

// ---- data sources

// The sampler the tests of the file readers pin: data.sampling = "random" (hashed starts, with
// replacement), whose windows each reader test checks against data_hash4 and which issue 20 kept
// bit for bit. The epoch order (the default) is tested in test_data_order.c.
static inline Config with_random_sampling(Config c) {
    snprintf(c.data_sampling, sizeof c.data_sampling, "random");
    return c;
}

// A Config of zeros but for the data source (`train`: a file, glob or prefix; "" for the
// synthetic tasks) and the shape and seed the test reads it with.
static inline Config data_config(const char *kind, const char *train, int seq_len, int vocab_size, int batch_size,
                                 uint64_t seed) {
    Config c;
    memset(&c, 0, sizeof c);
    snprintf(c.data_kind, sizeof c.data_kind, "%s", kind);
    snprintf(c.data_train, sizeof c.data_train, "%s", train);
    c.seq_len = seq_len;
    c.vocab_size = vocab_size;
    c.batch_size = batch_size;
    c.seed = seed;
    return c;
}

// data_open that must succeed: a failure fails the test with data_open's message.
static inline DataSource *open_ok(const Config *c, DataSplit split) {
    Error err = { "" };
    DataSource *src = data_open(c, split, &err);
    if (!src) fail_msg("data_open: %s", err.msg);
    return src;
}

// Expects data_open to fail with a one-line message containing every string of the
// NULL-terminated list.
static inline void expect_open_error(const Config *c, DataSplit split, ...) {
    Error err = { "" };
    DataSource *src = data_open(c, split, &err);
    assert_null(src);
    va_list ap;
    va_start(ap, split);
    for (const char *s = va_arg(ap, const char *); s; s = va_arg(ap, const char *)) {
        if (!strstr(err.msg, s)) fail_msg("message \"%s\" lacks \"%s\"", err.msg, s);
    }
    va_end(ap);
    assert_null(strchr(err.msg, '\n'));
}

// The SequenceBuffers of a fixture that holds int32_t tokens[], targets[] and buckets[] arrays.
#define SEQ_BUFS(f) ((SequenceBuffers){ (f)->tokens, (f)->targets, (f)->buckets })
