// test_data_retrieval.c: the synthetic retrieval task: answer, distance, buckets, keys, splits.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "data/data.h"
#include "data/data_hash.h"
#include "data_fixtures.h"
#include "data/task_retrieval.h"

#define TMAX 1024

typedef struct {
    int32_t tokens[TMAX], targets[TMAX], buckets[TMAX];
} Seq;

static Config retrieval_config(int T, const int *d, int n) {
    Config c = data_config("retrieval", "", T, 4096, 4, 5);
    for (int i = 0; i < n; i++) c.retrieval_distances[i] = d[i];
    c.retrieval_n_distances = n;
    return c;
}

// Checks one sequence from first principles; returns its bucket.
static int check_sequence(const Seq *s, int T, const int *fit, int n_fit, int n_keys, DataSplit split) {
    int q = T - 3, key0 = RETR_KEY0, value0 = RETR_KEY0 + n_keys;
    assert_int_equal(s->tokens[q], RETR_QUERY);
    int key = s->tokens[q + 1];
    assert_in_range(key, key0, key0 + n_keys - 1);
    // Exactly one loss position, at the query's key, whose target is the next token.
    for (int t = 0; t < T; t++) {
        if (t == q + 1) continue;
        assert_int_equal(s->targets[t], -1);
        assert_int_equal(s->buckets[t], -1);
    }
    assert_int_equal(s->targets[q + 1], s->tokens[q + 2]);
    // Walk the pairs before the query: keys distinct, values in range, the queried key found once.
    static unsigned char seen[TMAX];
    memset(seen, 0, sizeof seen);
    int p = 0, found = -1;
    while (p < q) {
        int t = s->tokens[p];
        if (t == RETR_PAD) { p++; continue; }
        assert_in_range(t, key0, key0 + n_keys - 1);
        assert_int_equal(seen[t - key0], 0);
        seen[t - key0] = 1;
        assert_true(p + 1 < q);
        assert_in_range(s->tokens[p + 1], value0, value0 + RETR_N_VALUES - 1);
        if (t == key) {
            found = p;
            assert_int_equal(s->targets[q + 1], s->tokens[p + 1]);   // the value of the queried key
        }
        p += 2;
    }
    assert_true(found >= 0);
    int b = s->buckets[q + 1];
    assert_in_range(b, 0, n_fit - 1);
    assert_int_equal(q - found, fit[b]);   // distance from the pair to the query
    assert_int_equal(data_hash_tokens(s->tokens, T) % 8 == 0, split == SPLIT_VAL);
    return b;
}

static void test_answer_and_distance(void **state) {
    (void)state;
    int d[4] = { 8, 100, 33, 64 };   // 100 does not fit in T = 96
    int fit[3] = { 8, 33, 64 };
    Config c = retrieval_config(96, d, 4);
    Error err = { "" };
    DataSource *src = open_ok(&c, SPLIT_TRAIN);
    assert_int_equal(data_n_buckets(src), 3);
    assert_string_equal(data_bucket_label(src, 0), "distance 8");
    assert_string_equal(data_bucket_label(src, 1), "distance 33");
    assert_string_equal(data_bucket_label(src, 2), "distance 64");
    int n_keys = 48;   // max(32, T / 2)
    assert_int_equal(data_vocab_needed(src), RETR_KEY0 + n_keys + RETR_N_VALUES);
    static Seq s;
    int hist[3] = { 0, 0, 0 };
    for (uint64_t step = 0; step < 100; step++)
        for (int i = 0; i < 4; i++) {
            assert_int_equal(data_get_sequence(src, step, i, SEQ_BUFS(&s), &err), 0);
            hist[check_sequence(&s, 96, fit, 3, n_keys, SPLIT_TRAIN)]++;
        }
    for (int b = 0; b < 3; b++) assert_true(hist[b] > 400 / 3 / 2);
    data_close(src);
}

static void test_long_distances(void **state) {
    (void)state;
    int d[4] = { 128, 256, 512, 1024 };   // the default distances; 1024 does not fit in T = 1024
    Config c = retrieval_config(1024, d, 4);
    Error err = { "" };
    DataSource *tr = open_ok(&c, SPLIT_TRAIN), *va = open_ok(&c, SPLIT_VAL);
    assert_int_equal(data_n_buckets(tr), 3);
    static Seq s;
    static uint64_t htr[64], hva[64];
    for (int k = 0; k < 64; k++) {
        assert_int_equal(data_get_sequence(tr, (uint64_t)k, 0, SEQ_BUFS(&s), &err), 0);
        check_sequence(&s, 1024, d, 3, 512, SPLIT_TRAIN);
        htr[k] = data_hash_tokens(s.tokens, 1024);
        assert_int_equal(data_get_sequence(va, (uint64_t)k, 0, SEQ_BUFS(&s), &err), 0);
        check_sequence(&s, 1024, d, 3, 512, SPLIT_VAL);
        hva[k] = data_hash_tokens(s.tokens, 1024);
    }
    for (int i = 0; i < 64; i++)
        for (int j = 0; j < 64; j++) assert_true(htr[i] != hva[j]);
    data_close(tr);
    data_close(va);
}

static void test_deterministic(void **state) {
    (void)state;
    int d[2] = { 10, 20 };
    Config c = retrieval_config(64, d, 2);
    Error err = { "" };
    DataSource *src = open_ok(&c, SPLIT_TRAIN);
    static Seq a[8], s;
    for (int k = 0; k < 8; k++) assert_int_equal(data_get_sequence(src, 3, k, SEQ_BUFS(&a[k]), &err), 0);
    for (int k = 7; k >= 0; k--) {
        assert_int_equal(data_get_sequence(src, 3, k, SEQ_BUFS(&s), &err), 0);
        assert_memory_equal(s.tokens, a[k].tokens, 64 * sizeof(int32_t));
        assert_memory_equal(s.targets, a[k].targets, 64 * sizeof(int32_t));
        assert_memory_equal(s.buckets, a[k].buckets, 64 * sizeof(int32_t));
    }
    for (int k = 1; k < 8; k++) assert_memory_not_equal(a[k].tokens, a[k - 1].tokens, 64 * sizeof(int32_t));
    data_close(src);
}

static void test_config_errors(void **state) {
    (void)state;
    int big[2] = { 128, 256 };
    Config c = retrieval_config(64, big, 2);
    expect_open_error(&c, SPLIT_TRAIN, "data.retrieval.distances", "model.seq_len 64", NULL);
    int one[1] = { 1 };
    c = retrieval_config(64, one, 1);
    expect_open_error(&c, SPLIT_TRAIN, "data.retrieval.distances", NULL);
    int dup[2] = { 8, 8 };
    c = retrieval_config(64, dup, 2);
    expect_open_error(&c, SPLIT_TRAIN, "twice", NULL);
    c = retrieval_config(64, big, 0);
    expect_open_error(&c, SPLIT_TRAIN, "data.retrieval.distances", NULL);
    int ok[1] = { 8 };
    c = retrieval_config(64, ok, 1);
    c.vocab_size = 50;   // needs 2 + 32 keys + 32 values = 66
    expect_open_error(&c, SPLIT_TRAIN, "model.vocab_size", NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_answer_and_distance),
        cmocka_unit_test(test_long_distances),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_config_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
