// test_data_megatron.c: Megatron indexed datasets (.idx/.bin): dtypes, windows and bad input.
#define _FILE_OFFSET_BITS 64
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "data/data.h"
#include "data/data_hash.h"
#include "data_fixtures.h"

#define T 8

typedef struct {
    char dir[SCRATCH_DIR_LEN];
    char prefix[128], idx[160], bin[160];   // PREFIX, PREFIX.idx, PREFIX.bin
    int32_t tokens[T], targets[T], buckets[T];
} Fixture;

static int setup(void **state) {
    if (scratch_setup(state, Fixture, "/tmp/entrank-test-megatron.XXXXXX") != 0) return -1;
    Fixture *f = *state;
    scratch_path(f->dir, "corpus_text_document", f->prefix, sizeof f->prefix);
    snprintf(f->idx, sizeof f->idx, "%s.idx", f->prefix);
    snprintf(f->bin, sizeof f->bin, "%s.bin", f->prefix);
    return 0;
}

static Config base_config(const char *prefix, int vocab) { return with_random_sampling(data_config("megatron", prefix, T, vocab, 2, 7)); }

// Reads many train windows and checks each against the stream at the hashed start.
static void check_train_windows(Fixture *f, const Config *c, const int64_t *tok, int n_tok) {
    Error err = { "" };
    DataSource *src = open_ok(c, SPLIT_TRAIN);
    assert_int_equal(data_n_sequences(src), n_tok - T);
    for (uint64_t step = 0; step < 30; step++)
        for (int i = 0; i < 2; i++) {
            assert_int_equal(data_get_sequence(src, step, i, SEQ_BUFS(f), &err), 0);
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
    DataSource *tr = open_ok(&c, SPLIT_TRAIN), *va = open_ok(&c, SPLIT_VAL);
    assert_int_equal(data_n_sequences(va), (30 - 1) / T);
    for (uint64_t step = 0; step < 40; step++) {
        assert_int_equal(data_get_sequence(tr, step, 1, SEQ_BUFS(f), &err), 0);
        for (int t = 0; t < T; t++) assert_true(f->targets[t] < 70);
        assert_int_equal(data_get_sequence(va, step, 1, SEQ_BUFS(f), &err), 0);
        int w = (int)((step * 2 + 1) % ((30 - 1) / T));
        assert_int_equal(f->tokens[0], 70 + w * T);
        assert_int_equal(f->targets[T - 1], 70 + w * T + T);
    }
    data_close(tr);
    data_close(va);
}

// The dataset of the bad-input tests: two documents of 20 tokens, 0 to 39.
static void write_two_docs(const Fixture *f, int dtype, int itemsize, int bin_cut, int idx_extra) {
    int seq_len[2] = { 20, 20 };
    int64_t tok[40];
    for (int i = 0; i < 40; i++) tok[i] = i;
    write_megatron(f->prefix, dtype, itemsize, tok, seq_len, 2, bin_cut, idx_extra);
}

// Overwrites the byte at `offset` of the file at path.
static void patch_byte(const char *path, long offset, int value) {
    FILE *fp = fopen(path, "r+b");
    assert_non_null(fp);
    fseek(fp, offset, SEEK_SET);
    fputc(value, fp);
    fclose(fp);
}

static void test_bad_idx(void **state) {
    Fixture *f = *state;
    Config c = base_config(f->prefix, 1000);

    write_two_docs(f, 8, 2, 0, 0);
    patch_byte(f->idx, 0, 'X');   // magic
    expect_open_error(&c, SPLIT_TRAIN, f->idx, "offset 0", "magic", NULL);

    write_two_docs(f, 8, 2, 0, 0);
    patch_byte(f->idx, 9, 2);   // version 2
    expect_open_error(&c, SPLIT_TRAIN, f->idx, "offset 9", "version 2", NULL);

    write_two_docs(f, 7, 4, 0, 0);   // float32 tokens
    expect_open_error(&c, SPLIT_TRAIN, f->idx, "offset 17", "float32", NULL);
    write_two_docs(f, 9, 4, 0, 0);   // no such code
    expect_open_error(&c, SPLIT_TRAIN, f->idx, "offset 17", NULL);

    write_two_docs(f, 8, 2, 0, 5);   // 5 stray bytes: neither layout
    expect_open_error(&c, SPLIT_TRAIN, f->idx, "offset", "sequences", NULL);

    write_two_docs(f, 8, 2, 0, 0);
    assert_int_equal(truncate(f->idx, 20), 0);
    expect_open_error(&c, SPLIT_TRAIN, f->idx, "truncated", "offset 20", NULL);
}

static void test_short_bin_and_missing(void **state) {
    Fixture *f = *state;
    Config c = base_config(f->prefix, 1000);

    write_two_docs(f, 8, 2, 3, 0);   // .bin 77 bytes, the index says 80
    expect_open_error(&c, SPLIT_TRAIN, f->bin, "truncated", "offset 80", "offset 77", NULL);

    unlink(f->bin);
    expect_open_error(&c, SPLIT_TRAIN, f->bin, "cannot open", "data.train", NULL);
    unlink(f->idx);
    expect_open_error(&c, SPLIT_TRAIN, f->idx, "cannot open", "data.train", NULL);
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
    char want[512];
    DataSource *src = open_ok(&c, SPLIT_TRAIN);
    assert_int_equal(data_get_sequence(src, 0, 0, SEQ_BUFS(f), &err), -1);
    snprintf(want, sizeof want, "%s: byte offset 6: negative token id -5", f->bin);
    assert_string_equal(err.msg, want);
    data_close(src);

    tok[3] = 3;
    tok[7] = 5000;   // int64 dataset, id over the vocabulary
    write_megatron(f->prefix, 5, 8, tok, seq_len, 1, 0, 0);
    src = open_ok(&c, SPLIT_TRAIN);
    assert_int_equal(data_get_sequence(src, 0, 0, SEQ_BUFS(f), &err), -1);
    snprintf(want, sizeof want, "%s: byte offset 56: token id 5000 >= model.vocab_size 1000", f->bin);
    assert_string_equal(err.msg, want);
    data_close(src);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_uint16_roundtrip, setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_int32_roundtrip, setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_multimodal_modes_and_val_fraction, setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_bad_idx, setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_short_bin_and_missing, setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_bad_tokens, setup, scratch_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
