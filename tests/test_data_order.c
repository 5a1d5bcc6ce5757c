// test_data_order.c: the training data order of issue 20: every window once per epoch in a
// seeded stateless permutation, blend proportions within one sample, uniform positions, and the
// old random sampler unchanged under data.sampling = "random".
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "data/data.h"
#include "data/data_hash.h"
#include "data/data_order.h"
#include "data_fixtures.h"

#define T 8

typedef struct {
    char dir[SCRATCH_DIR_LEN];
    int32_t tokens[T], targets[T], buckets[T];
} Fixture;

static int setup(void **state) { return scratch_setup(state, Fixture, "/tmp/entrank-test-order.XXXXXX"); }

static void make_shard(Fixture *f, const char *name, int salt, int n, char *path_out) {
    write_salted_shard(f->dir, name, salt, n, path_out);
}

static Config epoch_config(const char *train, int batch) {
    Config c = data_config("llmc", train, T, 65536, batch, 99);
    snprintf(c.data_sampling, sizeof c.data_sampling, "epoch");
    return c;
}

static void test_every_window_is_read_once_per_epoch_and_epochs_differ(void **state) {
    Fixture *f = *state;
    char a[256], b[256], glob[256];
    // Two shards: 8 * 37 + 1 tokens (37 windows) and 8 * 20 + 5 (20 windows, 4 tokens left over).
    make_shard(f, "s_0.bin", 1, 8 * 37 + 1, a);
    make_shard(f, "s_1.bin", 2, 8 * 20 + 5, b);
    scratch_path(f->dir, "s_*.bin", glob, sizeof glob);
    const int batch = 5, n = 57;
    Config c = epoch_config(glob, batch);
    DataSource *src = open_ok(&c, SPLIT_TRAIN);
    assert_int_equal(data_n_sequences(src), n);
    int order[3][57];
    Error err = {""};
    for (int epoch = 0; epoch < 3; epoch++) {
        int seen[57] = {0};
        for (int p = 0; p < n; p++) {
            uint64_t g = (uint64_t)epoch * n + (uint64_t)p;
            DataSampleInfo at;
            assert_int_equal(data_locate(src, g / batch, (int)(g % batch), &at), 0);
            assert_int_equal(at.epoch, epoch);
            assert_int_equal(at.position, p);
            assert_true(at.window < (uint64_t)n);
            seen[at.window]++;
            order[epoch][p] = (int)at.window;
            // The tokens are those of the window: stride T, sharing the boundary token.
            assert_int_equal(data_get_sequence(src, g / batch, (int)(g % batch), SEQ_BUFS(f), &err), 0);
            int salt = at.window < 37 ? 1 : 2;
            int start = (int)(at.window < 37 ? at.window : at.window - 37) * T;
            assert_int_equal(at.token, start);
            for (int t = 0; t < T; t++) {
                assert_int_equal(f->tokens[t], salted_token(salt, start + t));
                assert_int_equal(f->targets[t], salted_token(salt, start + t + 1));
            }
        }
        for (int w = 0; w < n; w++) assert_int_equal(seen[w], 1);
    }
    assert_true(memcmp(order[0], order[1], sizeof order[0]) != 0);
    assert_true(memcmp(order[1], order[2], sizeof order[1]) != 0);
    data_close(src);
}

static void test_permutation_is_a_bijection_for_every_size(void **state) {
    (void)state;
    static unsigned char hit[5000];
    for (uint64_t n = 1; n <= 5000; n += (n < 300 ? 1 : 97)) {
        DataPerm p;
        data_perm_init(&p, n, 7, 0, n);
        memset(hit, 0, sizeof hit);
        for (uint64_t x = 0; x < n; x++) {
            uint64_t y = data_perm_apply(&p, x);
            assert_true(y < n);
            assert_int_equal(hit[y], 0);
            hit[y] = 1;
        }
    }
    // A corpus-sized domain: values stay in range (2^40 + 3 windows, odd bit count split 20/21).
    DataPerm p;
    data_perm_init(&p, (1ULL << 40) + 3, 7, 0, 0);
    for (uint64_t x = 0; x < 1000; x++) assert_true(data_perm_apply(&p, x * 1000003) < (1ULL << 40) + 3);
}

// Upper 1% point of chi-square with k degrees of freedom (Wilson-Hilferty; within 0.5% for k > 30).
static double chi2_upper_1pct(double k) {
    double z = 2.3263478740408408, h = 2.0 / (9.0 * k);
    return k * pow(1 - h + z * sqrt(h), 3);
}

static void test_window_positions_are_uniform_over_1000_epochs(void **state) {
    Fixture *f = *state;
    char a[256];
    enum { N = 12, EPOCHS = 1000 };   // 12 windows: a Feistel domain of 16 with cycle-walking
    make_shard(f, "c.bin", 3, N * T + 1, a);
    Config c = epoch_config(a, N);   // one step = one epoch
    DataSource *src = open_ok(&c, SPLIT_TRAIN);
    assert_int_equal(data_n_sequences(src), N);
    static long count[N][N];
    memset(count, 0, sizeof count);
    for (int e = 0; e < EPOCHS; e++)
        for (int p = 0; p < N; p++) {
            DataSampleInfo at;
            data_locate(src, (uint64_t)e, p, &at);
            count[at.window][p]++;
        }
    // Each (window, position) cell expects EPOCHS / N; the margins are fixed (a permutation), so
    // the contingency table has (N - 1)^2 degrees of freedom.
    double expect = (double)EPOCHS / N, chi2 = 0;
    for (int w = 0; w < N; w++)
        for (int p = 0; p < N; p++) chi2 += (count[w][p] - expect) * (count[w][p] - expect) / expect;
    double limit = chi2_upper_1pct((N - 1) * (N - 1));
    print_message("chi-square %.1f over %d dof, 1%% limit %.1f\n", chi2, (N - 1) * (N - 1), limit);
    assert_true(chi2 < limit);
    data_close(src);
}

static void test_blend_of_three_awkward_weights_stays_within_one_sample(void **state) {
    (void)state;
    const double w[3] = {1.0 / 3.0, M_PI / 10.0, 0.7 / 3.0};   // normalised below
    double total = w[0] + w[1] + w[2];
    DataBlend b;
    int bad = -1;
    assert_int_equal(data_blend_init(&b, w, 3, &bad), 0);
    uint64_t count[3] = {0};
    double worst = 0;
    const uint64_t G = 300000;
    for (uint64_t g = 0; g < G; g++) {
        int s;
        uint64_t j;
        data_blend_pick(&b, g, &s, &j);
        assert_true(s >= 0 && s < 3);
        assert_int_equal(j, count[s]);   // the j-th sample of its source, in order
        count[s]++;
        for (int i = 0; i < 3; i++) {
            double dev = fabs((double)count[i] - w[i] / total * (double)(g + 1));
            if (dev > worst) worst = dev;
            if (dev > 1) fail_msg("after %llu samples source %d has %llu, expected %.3f", (unsigned long long)(g + 1), i,
                                   (unsigned long long)count[i], w[i] / total * (double)(g + 1));
        }
        if (g % 9973 == 0)
            for (int i = 0; i < 3; i++) assert_int_equal(data_blend_count(&b, i, g + 1), count[i]);
    }
    print_message("largest |count - weight x samples| over %llu samples: %.4f\n", (unsigned long long)G, worst);
    // Far into a run (a 100B-token run has ~5e7 samples of 2048 tokens): still within one.
    for (uint64_t g = 50000000000ULL; g < 50000000000ULL + 2000; g++)
        for (int i = 0; i < 3; i++) {
            double dev = fabs((double)data_blend_count(&b, i, g) - w[i] / total * (double)g);
            assert_true(dev <= 1);
        }
    // Two sources: Webster's bound is 1/2.
    const double w2[2] = {0.9, 0.1};
    assert_int_equal(data_blend_init(&b, w2, 2, &bad), 0);
    for (uint64_t g = 1; g < 20000; g++) assert_true(fabs((double)data_blend_count(&b, 0, g) - 0.9 * (double)g) <= 0.5 + 1e-9);
}

static void test_blend_sources_each_walk_their_own_epochs(void **state) {
    Fixture *f = *state;
    char p0[256], p1[256], p2[256];
    make_shard(f, "a.bin", 4, 10 * T + 1, p0);    // 10 windows
    make_shard(f, "b.bin", 5, 7 * T + 1, p1);     // 7
    make_shard(f, "c.bin", 6, 30 * T + 1, p2);    // 30
    Config c = epoch_config("", 4);
    const char *paths[3] = {p0, p1, p2};
    const double w[3] = {2, 1, 5};
    for (int i = 0; i < 3; i++) {
        c.data_blend[i].weight = w[i];
        snprintf(c.data_blend[i].path, sizeof c.data_blend[i].path, "%s", paths[i]);
        snprintf(c.data_blend[i].kind, sizeof c.data_blend[i].kind, "llmc");
    }
    c.data_blend_n = 3;
    snprintf(c.data_val, sizeof c.data_val, "%s", p0);
    DataSource *src = open_ok(&c, SPLIT_TRAIN);
    assert_int_equal(data_n_sources(src), 3);
    const int nw[3] = {10, 7, 30};
    int seen[3][30] = {{0}};
    uint64_t per[3] = {0};
    for (uint64_t g = 0; g < 800; g++) {
        DataSampleInfo at;
        data_locate(src, g / 4, (int)(g % 4), &at);
        assert_int_equal(at.epoch, per[at.source] / nw[at.source]);
        assert_string_equal(at.path, paths[at.source]);
        seen[at.source][at.window]++;
        per[at.source]++;
        // At each source's epoch boundary every window was read equally often.
        if (per[at.source] % nw[at.source] == 0)
            for (int k = 0; k < nw[at.source]; k++) assert_int_equal(seen[at.source][k], per[at.source] / nw[at.source]);
    }
    for (int i = 0; i < 3; i++) {
        assert_int_equal(per[i], data_samples_of_source(src, i, 800));
        assert_true(fabs((double)per[i] - w[i] / 8.0 * 800) <= 1);
    }
    data_close(src);
}

static void test_random_sampling_keeps_the_hashed_starts(void **state) {
    Fixture *f = *state;
    char a[256];
    make_shard(f, "r.bin", 7, 500, a);
    Config c = epoch_config(a, 4);
    snprintf(c.data_sampling, sizeof c.data_sampling, "random");
    DataSource *src = open_ok(&c, SPLIT_TRAIN);
    assert_int_equal(data_n_sequences(src), 500 - T);   // every start, as before issue 20
    Error err = {""};
    for (uint64_t step = 0; step < 3; step++)
        for (int i = 0; i < 4; i++) {
            assert_int_equal(data_get_sequence(src, step, i, SEQ_BUFS(f), &err), 0);
            int start = (int)(data_hash4(c.seed, SPLIT_TRAIN, step, (uint64_t)i) % (500 - T));
            for (int t = 0; t < T; t++) assert_int_equal(f->tokens[t], salted_token(7, start + t));
        }
    // The first batch of seed 99 as the old sampler drew it (starts recorded before the change).
    DataSampleInfo at;
    int64_t starts[4];
    for (int i = 0; i < 4; i++) { data_locate(src, 0, i, &at); starts[i] = at.token; }
    const int64_t before_issue_20[4] = {248, 370, 194, 454};   // main at 189fa8c, same shard and config
    for (int i = 0; i < 4; i++) assert_int_equal(starts[i], before_issue_20[i]);
    data_close(src);
}

// One nominal epoch (as many samples as non-overlapping windows) under each sampler: the old one
// draws starts with replacement, so a token is an input of none of them with probability
// (1 - T/N)^(N/T) ~ 1/e: 63% of the corpus is trained on, the rest 0, 2, 3... times.
static void test_one_nominal_epoch_covers_63_percent_random_and_all_epoch(void **state) {
    Fixture *f = *state;
    char a[256];
    enum { W = 20000, N = W * T + 1 };
    make_shard(f, "cov.bin", 8, N, a);
    static unsigned char read_[N];
    double covered[2];
    for (int k = 0; k < 2; k++) {
        Config c = epoch_config(a, 4);
        if (k == 0) snprintf(c.data_sampling, sizeof c.data_sampling, "random");
        DataSource *src = open_ok(&c, SPLIT_TRAIN);
        memset(read_, 0, sizeof read_);
        for (uint64_t g = 0; g < W; g++) {
            DataSampleInfo at;
            data_locate(src, g / 4, (int)(g % 4), &at);
            for (int t = 0; t < T; t++) read_[at.token + t] = 1;   // the inputs (the targets are shifted by one)
        }
        long n = 0;
        for (int i = 0; i < N - 1; i++) n += read_[i];   // the last token is only ever a target
        covered[k] = (double)n / (N - 1);
        data_close(src);
    }
    print_message("one nominal epoch: random sampler took %.1f%% of the tokens as inputs, epoch sampler %.1f%%\n", 100 * covered[0],
                  100 * covered[1]);
    assert_true(fabs(covered[0] - (1 - exp(-1))) < 0.02);
    assert_true(covered[1] == 1.0);
}

static void test_blend_weight_too_small_is_refused(void **state) {
    (void)state;
    const double w[2] = {1e12, 1e-8};
    DataBlend b;
    int bad = -1;
    assert_int_equal(data_blend_init(&b, w, 2, &bad), -1);
    assert_int_equal(bad, 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_every_window_is_read_once_per_epoch_and_epochs_differ, setup, scratch_teardown),
        cmocka_unit_test(test_permutation_is_a_bijection_for_every_size),
        cmocka_unit_test_setup_teardown(test_window_positions_are_uniform_over_1000_epochs, setup, scratch_teardown),
        cmocka_unit_test(test_blend_of_three_awkward_weights_stays_within_one_sample),
        cmocka_unit_test_setup_teardown(test_blend_sources_each_walk_their_own_epochs, setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_random_sampling_keeps_the_hashed_starts, setup, scratch_teardown),
        cmocka_unit_test_setup_teardown(test_one_nominal_epoch_covers_63_percent_random_and_all_epoch, setup, scratch_teardown),
        cmocka_unit_test(test_blend_weight_too_small_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
