// test_data_megatron.c: Megatron indexed datasets (.idx/.bin): dtypes, windows and bad input.
#define _FILE_OFFSET_BITS 64
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "data/data.h"
#include "data/data_hash.h"

#define T 8

typedef struct {
    char dir[64];
    char prefix[128];
    int32_t tokens[T], targets[T], buckets[T];
} Fixture;

static SequenceBuffers bufs(Fixture *f) { SequenceBuffers b = { f->tokens, f->targets, f->buckets }; return b; }

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

static int setup(void **state) {
    Fixture *f = calloc(1, sizeof *f);
    strcpy(f->dir, "/tmp/entrank-test-megatron.XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    snprintf(f->prefix, sizeof f->prefix, "%s/corpus_text_document", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    Fixture *f = *state;
    nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static void putle(unsigned char *p, uint64_t v, int n) { for (int i = 0; i < n; i++) p[i] = (unsigned char)(v >> (8 * i)); }

static void write_file(const char *path, const unsigned char *buf, size_t n) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(buf, 1, n, fp), n);
    fclose(fp);
}

// Writes PREFIX.idx / PREFIX.bin the way Megatron-LM's _IndexWriter does: one sequence per
// document, doc_idx = [0, 1, ..., n_seq] (so the document count is n_seq + 1). `bin_cut` bytes
// are removed from the end of the .bin, `idx_extra` bytes appended to the .idx.
static void write_megatron(const char *prefix, int dtype, int itemsize, const int64_t *tok, const int *seq_len, int n_seq,
                           int bin_cut, int idx_extra) {
    int n_tok = 0;
    for (int s = 0; s < n_seq; s++) n_tok += seq_len[s];
    unsigned char *bin = calloc((size_t)n_tok * itemsize + 1, 1);
    for (int i = 0; i < n_tok; i++) putle(bin + (size_t)i * itemsize, (uint64_t)tok[i], itemsize);
    char path[256];
    snprintf(path, sizeof path, "%s.bin", prefix);
    write_file(path, bin, (size_t)n_tok * itemsize - (size_t)bin_cut);
    free(bin);

    int n_doc = n_seq + 1;
    size_t idx_size = 34 + 4 * (size_t)n_seq + 8 * (size_t)n_seq + 8 * (size_t)n_doc;
    unsigned char *idx = calloc(idx_size + (size_t)idx_extra, 1);
    memcpy(idx, "MMIDIDX\0\0", 9);
    putle(idx + 9, 1, 8);
    idx[17] = (unsigned char)dtype;
    putle(idx + 18, (uint64_t)n_seq, 8);
    putle(idx + 26, (uint64_t)n_doc, 8);
    unsigned char *p = idx + 34;
    for (int s = 0; s < n_seq; s++, p += 4) putle(p, (uint64_t)seq_len[s], 4);
    int64_t ptr = 0;
    for (int s = 0; s < n_seq; s++, p += 8) { putle(p, (uint64_t)ptr, 8); ptr += (int64_t)seq_len[s] * itemsize; }
    for (int d = 0; d < n_doc; d++, p += 8) putle(p, (uint64_t)d, 8);
    snprintf(path, sizeof path, "%s.idx", prefix);
    write_file(path, idx, idx_size + (size_t)idx_extra);
    free(idx);
}

static Config base_config(const char *prefix, int vocab) {
    Config c;
    memset(&c, 0, sizeof c);
    strcpy(c.data_kind, "megatron");
    snprintf(c.data_train, sizeof c.data_train, "%s", prefix);
    c.seq_len = T;
    c.vocab_size = vocab;
    c.batch_size = 2;
    c.seed = 7;
    return c;
}

// Reads many train windows and checks each against the stream at the hashed start.
static void check_train_windows(Fixture *f, const Config *c, const int64_t *tok, int n_tok) {
    Error err = { "" };
    DataSource *src = data_open(c, SPLIT_TRAIN, &err);
    if (!src) fail_msg("%s", err.msg);
    assert_int_equal(data_n_sequences(src), n_tok - T);
    for (uint64_t step = 0; step < 30; step++)
        for (int i = 0; i < 2; i++) {
            assert_int_equal(data_get_sequence(src, step, i, bufs(f), &err), 0);
            int64_t start = (int64_t)(data_hash4(c->seed, SPLIT_TRAIN, step, (uint64_t)i) % (uint64_t)(n_tok - T));
            for (int t = 0; t < T; t++) {
                assert_int_equal(f->tokens[t], tok[start + t]);
                assert_int_equal(f->targets[t], tok[start + t + 1]);
                assert_int_equal(f->buckets[t], -1);
            }
        }
    data_close(src);
}

static void test_uint16_roundtrip(void **state) {
    Fixture *f = *state;
    int seq_len[3] = { 10, 20, 30 };
    int64_t tok[60];
    for (int i = 0; i < 60; i++) tok[i] = 60000 - 13 * i;   // above int16: read as unsigned
    write_megatron(f->prefix, 8, 2, tok, seq_len, 3, 0, 0);
    Config c = base_config(f->prefix, 65536);
    check_train_windows(f, &c, tok, 60);
}

static void test_int32_roundtrip(void **state) {
    Fixture *f = *state;
    int seq_len[4] = { 5, 17, 9, 40 };
    int64_t tok[71];
    for (int i = 0; i < 71; i++) tok[i] = 100000 + 1009 * i;   // beyond uint16
    write_megatron(f->prefix, 4, 4, tok, seq_len, 4, 0, 0);
    Config c = base_config(f->prefix, 200000);
    check_train_windows(f, &c, tok, 71);
}

static void test_multimodal_modes_and_val_fraction(void **state) {
    Fixture *f = *state;
    int seq_len[2] = { 50, 50 };
    int64_t tok[100];
    for (int i = 0; i < 100; i++) tok[i] = i;
    write_megatron(f->prefix, 1, 1, tok, seq_len, 2, 0, 2);   // int8 modes per sequence appended
    Config c = base_config(f->prefix, 256);
    c.data_val_fraction = 0.3;   // tokens [70, 100) are validation
    Error err = { "" };
    DataSource *tr = data_open(&c, SPLIT_TRAIN, &err), *va = data_open(&c, SPLIT_VAL, &err);
    if (!tr || !va) fail_msg("%s", err.msg);
    assert_int_equal(data_n_sequences(va), (30 - 1) / T);
    for (uint64_t step = 0; step < 40; step++) {
        assert_int_equal(data_get_sequence(tr, step, 1, bufs(f), &err), 0);
        for (int t = 0; t < T; t++) assert_true(f->targets[t] < 70);
        assert_int_equal(data_get_sequence(va, step, 1, bufs(f), &err), 0);
        int w = (int)((step * 2 + 1) % ((30 - 1) / T));
        assert_int_equal(f->tokens[0], 70 + w * T);
        assert_int_equal(f->targets[T - 1], 70 + w * T + T);
    }
    data_close(tr);
    data_close(va);
}

static void expect_open_error(const Config *c, ...) {
    Error err = { "" };
    DataSource *src = data_open(c, SPLIT_TRAIN, &err);
    assert_null(src);
    va_list ap;
    va_start(ap, c);
    for (const char *s = va_arg(ap, const char *); s; s = va_arg(ap, const char *))
        if (!strstr(err.msg, s)) fail_msg("message \"%s\" lacks \"%s\"", err.msg, s);
    va_end(ap);
}

static void test_bad_idx(void **state) {
    Fixture *f = *state;
    int seq_len[2] = { 20, 20 };
    int64_t tok[40];
    for (int i = 0; i < 40; i++) tok[i] = i;
    char idx[256], bin[256];
    snprintf(idx, sizeof idx, "%s.idx", f->prefix);
    snprintf(bin, sizeof bin, "%s.bin", f->prefix);
    Config c = base_config(f->prefix, 1000);

    write_megatron(f->prefix, 8, 2, tok, seq_len, 2, 0, 0);
    FILE *fp = fopen(idx, "r+b");
    fputc('X', fp);   // magic
    fclose(fp);
    expect_open_error(&c, idx, "offset 0", "magic", NULL);

    write_megatron(f->prefix, 8, 2, tok, seq_len, 2, 0, 0);
    fp = fopen(idx, "r+b");
    fseek(fp, 9, SEEK_SET);
    fputc(2, fp);   // version 2
    fclose(fp);
    expect_open_error(&c, idx, "offset 9", "version 2", NULL);

    write_megatron(f->prefix, 7, 4, tok, seq_len, 2, 0, 0);   // float32 tokens
    expect_open_error(&c, idx, "offset 17", "float32", NULL);
    write_megatron(f->prefix, 9, 4, tok, seq_len, 2, 0, 0);   // no such code
    expect_open_error(&c, idx, "offset 17", NULL);

    write_megatron(f->prefix, 8, 2, tok, seq_len, 2, 0, 5);   // 5 stray bytes: neither layout
    expect_open_error(&c, idx, "offset", "sequences", NULL);

    write_megatron(f->prefix, 8, 2, tok, seq_len, 2, 0, 0);
    assert_int_equal(truncate(idx, 20), 0);
    expect_open_error(&c, idx, "truncated", "offset 20", NULL);
}

static void test_short_bin_and_missing(void **state) {
    Fixture *f = *state;
    int seq_len[2] = { 20, 20 };
    int64_t tok[40];
    for (int i = 0; i < 40; i++) tok[i] = i;
    char bin[256], idx[256];
    snprintf(bin, sizeof bin, "%s.bin", f->prefix);
    snprintf(idx, sizeof idx, "%s.idx", f->prefix);
    Config c = base_config(f->prefix, 1000);

    write_megatron(f->prefix, 8, 2, tok, seq_len, 2, 3, 0);   // .bin 77 bytes, the index says 80
    expect_open_error(&c, bin, "truncated", "offset 80", "offset 77", NULL);

    unlink(bin);
    expect_open_error(&c, bin, "cannot open", "data.train", NULL);
    unlink(idx);
    expect_open_error(&c, idx, "cannot open", "data.train", NULL);
}

static void test_bad_tokens(void **state) {
    Fixture *f = *state;
    int seq_len[1] = { T + 1 };
    int64_t tok[T + 1];
    for (int i = 0; i <= T; i++) tok[i] = i;
    tok[3] = -5;   // int16 dataset with a negative id
    write_megatron(f->prefix, 3, 2, tok, seq_len, 1, 0, 0);
    Config c = base_config(f->prefix, 1000);
    Error err = { "" };
    char bin[256], want[512];
    snprintf(bin, sizeof bin, "%s.bin", f->prefix);
    DataSource *src = data_open(&c, SPLIT_TRAIN, &err);
    assert_non_null(src);
    assert_int_equal(data_get_sequence(src, 0, 0, bufs(f), &err), -1);
    snprintf(want, sizeof want, "%s: byte offset 6: negative token id -5", bin);
    assert_string_equal(err.msg, want);
    data_close(src);

    tok[3] = 3;
    tok[7] = 5000;   // int64 dataset, id over the vocabulary
    write_megatron(f->prefix, 5, 8, tok, seq_len, 1, 0, 0);
    src = data_open(&c, SPLIT_TRAIN, &err);
    assert_non_null(src);
    assert_int_equal(data_get_sequence(src, 0, 0, bufs(f), &err), -1);
    snprintf(want, sizeof want, "%s: byte offset 56: token id 5000 >= model.vocab_size 1000", bin);
    assert_string_equal(err.msg, want);
    data_close(src);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_uint16_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_int32_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_multimodal_modes_and_val_fraction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_idx, setup, teardown),
        cmocka_unit_test_setup_teardown(test_short_bin_and_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_tokens, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
