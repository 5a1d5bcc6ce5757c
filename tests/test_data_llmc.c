// test_data_llmc.c: llm.c token shards: windows, globs, splits, determinism and bad input.
#define _FILE_OFFSET_BITS 64
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "data/data.h"
#include "data/data_hash.h"
#include "data_fixtures.h"

#define T 16

typedef struct {
    char dir[SCRATCH_DIR_LEN];
    int32_t tokens[T], targets[T], buckets[T];
} Fixture;

static int setup(void **state) { return scratch_setup(state, Fixture, "/tmp/entrank-test-llmc.XXXXXX"); }

static void make_shard(Fixture *f, const char *name, int salt, int n, char *path_out) {
    write_salted_shard(f->dir, name, salt, n, path_out);
}

static Config base_config(const char *train) { return with_random_sampling(data_config("llmc", train, T, 65536, 4, 1234)); }

// Checks that the sequence is window `start` of shard `salt` (inputs and shifted targets).
static void assert_window(Fixture *f, int salt, int64_t start) {
    for (int t = 0; t < T; t++) {
        assert_int_equal(f->tokens[t], salted_token(salt, (int)start + t));
        assert_int_equal(f->targets[t], salted_token(salt, (int)start + t + 1));
        assert_int_equal(f->buckets[t], -1);
    }
}

static void test_window_is_the_hashed_start(void **state) {
    Fixture *f = *state;
    char path[256];
    make_shard(f, "one.bin", 0, 1000, path);
    Config c = base_config(path);
    Error err = { "" };
    DataSource *src = open_ok(&c, SPLIT_TRAIN);
    assert_int_equal(data_vocab_needed(src), 0);
    assert_int_equal(data_n_buckets(src), 0);
    assert_int_equal(data_n_sequences(src), 1000 - T);
    for (uint64_t step = 0; step < 20; step++)
        for (int i = 0; i < 8; i++) {
            assert_int_equal(data_get_sequence(src, step, i, SEQ_BUFS(f), &err), 0);
            int64_t start = (int64_t)(data_hash4(c.seed, SPLIT_TRAIN, step, (uint64_t)i) % (1000 - T));
            assert_window(f, 0, start);
        }
    data_close(src);
}

static void test_glob_shards_sorted(void **state) {
    Fixture *f = *state;
    // Created out of order, so the shard order can only come from sorting the names.
    enum { NS = 6 };
    const int order[NS] = { 3, 0, 5, 1, 4, 2 };
    int64_t n_win[NS], total = 0;
    char path[256], pattern[300];
    for (int k = 0; k < NS; k++) {
        int s = order[k];
        char name[32];
        snprintf(name, sizeof name, "part_%03d.bin", s);
        make_shard(f, name, s, 100 + 37 * s, path);
    }
    for (int s = 0; s < NS; s++) { n_win[s] = 100 + 37 * s - T; total += n_win[s]; }
    make_shard(f, "other.bin", 2, 400, path);   // not matched by the pattern
    scratch_path(f->dir, "part_*.bin", pattern, sizeof pattern);
    Config c = base_config(pattern);
    Error err = { "" };
    DataSource *src = open_ok(&c, SPLIT_TRAIN);
    assert_int_equal(data_n_sequences(src), total);
    int seen[NS] = { 0 };
    for (uint64_t step = 0; step < 100; step++)
        for (int i = 0; i < 4; i++) {
            assert_int_equal(data_get_sequence(src, step, i, SEQ_BUFS(f), &err), 0);
            int64_t r = (int64_t)(data_hash4(c.seed, SPLIT_TRAIN, step, (uint64_t)i) % (uint64_t)total);
            int s = 0;
            while (r >= n_win[s]) r -= n_win[s++];
            assert_window(f, s, r);
            seen[s]++;
        }
    for (int s = 0; s < NS; s++) assert_true(seen[s] > 0);
    data_close(src);
}

static void test_any_order_same_sequence(void **state) {
    Fixture *f = *state;
    char path[256];
    make_shard(f, "one.bin", 0, 5000, path);
    Config c = base_config(path);
    Error err = { "" };
    DataSource *src = open_ok(&c, SPLIT_TRAIN);
    enum { N = 40 };
    static int32_t fwd[N][T], bwd[N][T];
    for (int k = 0; k < N; k++) {
        assert_int_equal(data_get_sequence(src, (uint64_t)(k / 8), k % 8, SEQ_BUFS(f), &err), 0);
        memcpy(fwd[k], f->tokens, sizeof fwd[k]);
    }
    for (int k = N - 1; k >= 0; k--) {
        assert_int_equal(data_get_sequence(src, (uint64_t)(k / 8), k % 8, SEQ_BUFS(f), &err), 0);
        memcpy(bwd[k], f->tokens, sizeof bwd[k]);
    }
    // A second source (a restarted run) answers the same.
    DataSource *again = open_ok(&c, SPLIT_TRAIN);
    assert_int_equal(data_get_sequence(again, 3, 5, SEQ_BUFS(f), &err), 0);
    assert_memory_equal(f->tokens, fwd[3 * 8 + 5], sizeof fwd[0]);
    int distinct = 0;
    for (int k = 0; k < N; k++) {
        assert_memory_equal(fwd[k], bwd[k], sizeof fwd[k]);
        if (k > 0 && memcmp(fwd[k], fwd[k - 1], sizeof fwd[k]) != 0) distinct++;
    }
    assert_int_equal(distinct, N - 1);
    // Another seed gives another batch.
    Config c2 = c;
    c2.seed = 99;
    DataSource *other = open_ok(&c2, SPLIT_TRAIN);
    assert_int_equal(data_get_sequence(other, 0, 0, SEQ_BUFS(f), &err), 0);
    assert_memory_not_equal(f->tokens, fwd[0], sizeof fwd[0]);
    data_close(other);
    data_close(again);
    data_close(src);
}

static void test_val_fraction_disjoint_and_contiguous(void **state) {
    Fixture *f = *state;
    // Token i is i itself, so a token tells where in the file it was read.
    int n = 2000;
    uint16_t *tok = malloc((size_t)n * sizeof *tok);
    for (int i = 0; i < n; i++) tok[i] = (uint16_t)i;
    char path[256];
    scratch_path(f->dir, "pos.bin", path, sizeof path);
    write_llmc_shard(path, tok, n, LLMC_MAGIC, 1, n, 0);
    free(tok);
    Config c = base_config(path);
    c.data_val_fraction = 0.25;   // last 500 tokens: [1500, 2000)
    Error err = { "" };
    DataSource *tr = open_ok(&c, SPLIT_TRAIN), *va = open_ok(&c, SPLIT_VAL);
    assert_int_equal(data_n_sequences(tr), 1500 - T);
    assert_int_equal(data_n_sequences(va), (500 - 1) / T);
    int max_train = 0;
    for (uint64_t step = 0; step < 200; step++)
        for (int i = 0; i < 4; i++) {
            assert_int_equal(data_get_sequence(tr, step, i, SEQ_BUFS(f), &err), 0);
            for (int t = 0; t < T; t++) {
                assert_true(f->targets[t] < 1500);
                if (f->targets[t] > max_train) max_train = f->targets[t];
            }
            assert_int_equal(data_get_sequence(va, step, i, SEQ_BUFS(f), &err), 0);
            int w = (int)((step * 4 + (uint64_t)i) % (uint64_t)((500 - 1) / T));
            for (int t = 0; t < T; t++) {
                assert_int_equal(f->tokens[t], 1500 + w * T + t);
                assert_int_equal(f->targets[t], 1500 + w * T + t + 1);
            }
        }
    assert_true(max_train > 1400);   // the train part is really used up to the cut
    data_close(tr);
    data_close(va);
}

static void test_val_file(void **state) {
    Fixture *f = *state;
    char tr_path[256], va_path[256];
    make_shard(f, "train.bin", 0, 400, tr_path);
    make_shard(f, "val.bin", 1, 100, va_path);
    Config c = base_config(tr_path);
    snprintf(c.data_val, sizeof c.data_val, "%s", va_path);
    c.data_val_fraction = 0.5;   // ignored: data.val is set
    Error err = { "" };
    DataSource *tr = open_ok(&c, SPLIT_TRAIN), *va = open_ok(&c, SPLIT_VAL);
    assert_int_equal(data_n_sequences(tr), 400 - T);
    assert_int_equal(data_n_sequences(va), (100 - 1) / T);
    assert_int_equal(data_get_sequence(va, 1, 2, SEQ_BUFS(f), &err), 0);
    assert_window(f, 1, (int64_t)((1 * 4 + 2) % ((100 - 1) / T)) * T);
    data_close(tr);
    data_close(va);
}

static void test_bad_magic_version_truncated(void **state) {
    Fixture *f = *state;
    uint16_t tok[100];
    for (int i = 0; i < 100; i++) tok[i] = (uint16_t)i;
    char path[256];
    scratch_path(f->dir, "bad.bin", path, sizeof path);
    Config c = base_config(path);

    write_llmc_shard(path, tok, 100, 20240521, 1, 100, 0);
    expect_open_error(&c, SPLIT_TRAIN, path, "offset 0", "magic", NULL);
    write_llmc_shard(path, tok, 100, LLMC_MAGIC, 7, 100, 0);
    expect_open_error(&c, SPLIT_TRAIN, path, "offset 4", "version 7", NULL);
    write_llmc_shard(path, tok, 100, LLMC_MAGIC, 1, 100, 10);   // 10 bytes short: 1214 bytes of 1224
    expect_open_error(&c, SPLIT_TRAIN, path, "truncated", "1224", "1214", "offset 1214", NULL);
    write_llmc_shard(path, tok, 100, LLMC_MAGIC, 1, 100, 1100);  // not even a header
    expect_open_error(&c, SPLIT_TRAIN, path, "truncated", "offset 124", NULL);
    write_llmc_shard(path, tok, 100, LLMC_MAGIC, 1, 90, 0);      // 20 bytes more than declared
    expect_open_error(&c, SPLIT_TRAIN, path, "offset 1204", "trailing", NULL);
    write_llmc_shard(path, tok, 100, LLMC_MAGIC, 1, 100, 0);     // and the good file opens
    data_close(open_ok(&c, SPLIT_TRAIN));
}

static void test_missing_file_and_empty_glob(void **state) {
    Fixture *f = *state;
    char path[256], pattern[300];
    scratch_path(f->dir, "nothere.bin", path, sizeof path);
    Config c = base_config(path);
    expect_open_error(&c, SPLIT_TRAIN, path, "data.train", "cannot open", NULL);
    scratch_path(f->dir, "shard_*.bin", pattern, sizeof pattern);
    c = base_config(pattern);
    expect_open_error(&c, SPLIT_TRAIN, "data.train", pattern, NULL);
    c = base_config("");
    expect_open_error(&c, SPLIT_TRAIN, "data.train", NULL);
    // A missing data.val names data.val.
    make_shard(f, "ok.bin", 0, 100, path);
    c = base_config(path);
    scratch_path(f->dir, "noval.bin", c.data_val, sizeof c.data_val);
    expect_open_error(&c, SPLIT_VAL, c.data_val, "data.val", NULL);
}

static void test_too_short_for_a_window(void **state) {
    Fixture *f = *state;
    char path[256];
    make_shard(f, "short.bin", 0, T, path);   // T tokens: one short of a window
    Config c = base_config(path);
    expect_open_error(&c, SPLIT_TRAIN, "data.train", "model.seq_len", NULL);
    make_shard(f, "mid.bin", 0, 100, path);
    c = base_config(path);
    c.data_val_fraction = 0.1;   // 10 held-out tokens < T + 1
    expect_open_error(&c, SPLIT_VAL, "data.val_fraction", "model.seq_len", NULL);
    c.data_val_fraction = 0;
    expect_open_error(&c, SPLIT_VAL, "data.val", NULL);
    c.data_val_fraction = 1.5;
    expect_open_error(&c, SPLIT_TRAIN, "data.val_fraction", NULL);
}

static void test_token_over_vocab(void **state) {
    Fixture *f = *state;
    uint16_t tok[T + 1];
    for (int i = 0; i <= T; i++) tok[i] = (uint16_t)(i % 50);
    tok[5] = 150;
    char path[256];
    scratch_path(f->dir, "vocab.bin", path, sizeof path);
    write_llmc_shard(path, tok, T + 1, LLMC_MAGIC, 1, T + 1, 0);   // one window only: start 0
    Config c = base_config(path);
    c.vocab_size = 100;
    Error err = { "" };
    DataSource *src = open_ok(&c, SPLIT_TRAIN);
    assert_int_equal(data_get_sequence(src, 0, 0, SEQ_BUFS(f), &err), -1);
    char want[512];
    snprintf(want, sizeof want, "%s: byte offset %d: token id 150 >= model.vocab_size 100", path, 1024 + 2 * 5);
    assert_string_equal(err.msg, want);
    data_close(src);
    // The last token (a target only) is checked too.
    tok[5] = 5;
    tok[T] = 100;
    write_llmc_shard(path, tok, T + 1, LLMC_MAGIC, 1, T + 1, 0);
    src = open_ok(&c, SPLIT_TRAIN);
    assert_int_equal(data_get_sequence(src, 7, 3, SEQ_BUFS(f), &err), -1);
    snprintf(want, sizeof want, "byte offset %d: token id 100", 1024 + 2 * T);
    assert_non_null(strstr(err.msg, want));
    data_close(src);
}

// A sparse 3 GB shard: offsets beyond 2^31 and 2^32 bytes must be computed and printed in 64 bits.
static void test_large_sparse_shard(void **state) {
    Fixture *f = *state;
    const int64_t n = 1500000000;   // tokens: 3,000,001,024 bytes, holes read as token 0
    char path[256];
    scratch_path(f->dir, "big.bin", path, sizeof path);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    unsigned char h[LLMC_HEADER_BYTES];
    llmc_header(h, LLMC_MAGIC, 1, (int32_t)n);
    assert_int_equal(pwrite(fd, h, sizeof h, 0), (ssize_t)sizeof h);
    if (ftruncate(fd, 1024 + 2 * n) != 0) { close(fd); skip(); }
    // Validation keeps the last 1500 tokens: windows start at cut = n - 1500.
    const int64_t cut = n - 1500;
    unsigned char w[2 * (T + 1)];
    for (int t = 0; t <= T; t++) { w[2 * t] = (unsigned char)(t + 1); w[2 * t + 1] = 0x80; }
    assert_int_equal(pwrite(fd, w, sizeof w, 1024 + 2 * cut), (ssize_t)sizeof w);
    unsigned char bad[2] = { 0xff, 0xff };   // token 65535 in window 1, position 2
    assert_int_equal(pwrite(fd, bad, 2, 1024 + 2 * (cut + T + 2)), 2);
    close(fd);

    Config c = base_config(path);
    c.data_val_fraction = 1e-6;
    c.vocab_size = 65535;
    Error err = { "" };
    DataSource *va = open_ok(&c, SPLIT_VAL), *tr = open_ok(&c, SPLIT_TRAIN);
    assert_int_equal(data_n_sequences(va), (1500 - 1) / T);
    assert_int_equal(data_get_sequence(va, 0, 0, SEQ_BUFS(f), &err), 0);
    for (int t = 0; t < T; t++) {
        assert_int_equal(f->tokens[t], 0x8000 + t + 1);
        assert_int_equal(f->targets[t], 0x8000 + t + 2);
    }
    assert_int_equal(data_get_sequence(va, 0, 1, SEQ_BUFS(f), &err), -1);
    char want[512];
    snprintf(want, sizeof want, "%s: byte offset %lld: token id 65535 >= model.vocab_size 65535", path, 1024 + 2 * (long long)(cut + T + 2));
    assert_string_equal(err.msg, want);
    assert_non_null(strstr(err.msg, "2999998060"));
    assert_int_equal(data_n_sequences(tr), cut - T);
    assert_int_equal(data_get_sequence(tr, 123456789, 3, SEQ_BUFS(f), &err), 0);   // somewhere in a hole: zeros
    data_close(va);
    data_close(tr);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_window_is_the_hashed_start, setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_glob_shards_sorted, setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_any_order_same_sequence, setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_val_fraction_disjoint_and_contiguous, setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_val_file, setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_bad_magic_version_truncated, setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_missing_file_and_empty_glob, setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_too_short_for_a_window, setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_token_over_vocab, setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_large_sparse_shard, setup, scratch_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
