// test_data_text.c: byte-level text files and the dispatcher's kind check.
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

#define T 12

typedef struct {
    char dir[SCRATCH_DIR_LEN];
    char path[128];
    int32_t tokens[T], targets[T], buckets[T];
} Fixture;

// "Grüße" carries bytes >= 128 (UTF-8 for ü and ß): they must come out as single byte tokens.
static const char TEXT[] = "Grüße aus Zürich! The quick brown fox jumps over the lazy dog. 0123456789\n";

static int setup(void **state) {
    if (scratch_setup(state, Fixture, "/tmp/entrank-test-text.XXXXXX") != 0) return -1;
    Fixture *f = *state;
    write_scratch_file(f->dir, "corpus.txt", TEXT, f->path, sizeof f->path);
    return 0;
}

static Config base_config(const char *path) { return with_random_sampling(data_config("text", path, T, 256, 3, 42)); }

static void test_bytes_are_tokens(void **state) {
    Fixture *f = *state;
    Config c = base_config(f->path);
    Error err = { "" };
    DataSource *src = open_ok(&c, SPLIT_TRAIN);
    assert_int_equal(data_vocab_needed(src), 256);
    int n = (int)sizeof TEXT - 1, high = 0;
    assert_int_equal(data_n_sequences(src), n - T);
    for (uint64_t step = 0; step < 50; step++)
        for (int i = 0; i < 3; i++) {
            assert_int_equal(data_get_sequence(src, step, i, SEQ_BUFS(f), &err), 0);
            int start = (int)(data_hash4(c.seed, SPLIT_TRAIN, step, (uint64_t)i) % (uint64_t)(n - T));
            for (int t = 0; t < T; t++) {
                assert_int_equal(f->tokens[t], (unsigned char)TEXT[start + t]);
                assert_int_equal(f->targets[t], (unsigned char)TEXT[start + t + 1]);
                assert_int_equal(f->buckets[t], -1);
                high += f->tokens[t] >= 128;
            }
        }
    assert_true(high > 0);
    data_close(src);
}

static void test_val_fraction(void **state) {
    Fixture *f = *state;
    Config c = base_config(f->path);
    c.data_val_fraction = 0.5;
    int n = (int)sizeof TEXT - 1, cut = n - (int)(n * 0.5);
    Error err = { "" };
    DataSource *va = open_ok(&c, SPLIT_VAL);
    int nw = (n - cut - 1) / T;
    assert_int_equal(data_n_sequences(va), nw);
    for (int k = 0; k < 2 * nw; k++) {
        assert_int_equal(data_get_sequence(va, (uint64_t)(k / 3), k % 3, SEQ_BUFS(f), &err), 0);
        int start = cut + (k % nw) * T;
        for (int t = 0; t < T; t++) assert_int_equal(f->tokens[t], (unsigned char)TEXT[start + t]);
    }
    data_close(va);
}

static void test_small_vocab_rejects_high_bytes(void **state) {
    Fixture *f = *state;
    Config c = base_config(f->path);
    c.vocab_size = 128;   // 7-bit vocabulary: "ü" (0xC3 0xBC at byte offset 2) is out of range
    c.seq_len = (int)sizeof TEXT - 2;   // one window: the whole file
    Error err = { "" };
    DataSource *src = open_ok(&c, SPLIT_TRAIN);
    int32_t *b = malloc(3 * (size_t)c.seq_len * sizeof *b);
    SequenceBuffers sb = { b, b + c.seq_len, b + 2 * c.seq_len };
    assert_int_equal(data_get_sequence(src, 0, 0, sb, &err), -1);
    char want[512];
    snprintf(want, sizeof want, "%s: byte offset 2: token id 195 >= model.vocab_size 128", f->path);
    assert_string_equal(err.msg, want);
    free(b);
    data_close(src);
}

static void test_unknown_kind_and_bad_index(void **state) {
    Fixture *f = *state;
    Config c = base_config(f->path);
    strcpy(c.data_kind, "parquet");
    Error err = { "" };
    expect_open_error(&c, SPLIT_TRAIN, "data.kind", "parquet", NULL);
    c = base_config(f->path);
    DataSource *src = open_ok(&c, SPLIT_TRAIN);
    assert_int_equal(data_get_sequence(src, 0, -1, SEQ_BUFS(f), &err), -1);
    assert_null(data_bucket_label(src, 0));
    data_close(src);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bytes_are_tokens, setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_val_fraction, setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_small_vocab_rejects_high_bytes, setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_unknown_kind_and_bad_index, setup, scratch_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
