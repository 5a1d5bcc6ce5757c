// The trace metrics on inputs with known answers (docs/metrics-schema.md).
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include "gradcheck.h"
#include "trace.h"
#include "stream_stats.h"

static void test_row_entropy_of_uniform_and_one_hot_rows(void **state) {
    (void)state;
    const Backend *be = backend_cpu_f64();
    int T = 9;
    double *p = calloc((size_t)2 * T * T, sizeof(double));
    for (int i = 0; i < T; i++) {
        for (int j = 0; j <= i; j++) p[i * T + j] = 1.0 / (i + 1);   // head 0: uniform causal rows
        p[T * T + i * T + i / 2] = 1.0;                             // head 1: one-hot rows
    }
    void *dp = gc_upload(be, p, (size_t)2 * T * T), *ent = be->alloc((size_t)2 * T);
    be->attn_row_entropy(ent, dp, 2, T);
    double *e = gc_download(be, ent, (size_t)2 * T);
    for (int i = 0; i < T; i++) {
        assert_true(fabs(e[i] - log(i + 1.0)) < 1e-12);   // uniform over n = i+1 keys: ln n
        assert_true(e[T + i] == 0.0);                      // one-hot: 0
    }
    free(p); free(e); be->free(dp); be->free(ent);
}

static void test_stream_rank_and_token_cosine(void **state) {
    (void)state;
    const Backend *be = backend_cpu_f64();
    int B = 4, T = 512, C = 16, N = B * T;
    double *x = malloc(sizeof(double) * N * C), pr, cs;
    // Isotropic Gaussian data: PR close to C (exactly C in expectation as N grows).
    for (int i = 0; i < N * C; i++) x[i] = rng_normal(3, 3, (uint64_t)i);
    void *dx = gc_upload(be, x, (size_t)N * C);
    stream_rank_and_token_cos(be, dx, B, T, C, &pr, &cs);
    printf("# isotropic: PR %.3f of %d, adjacent cosine %.4f\n", pr, C, cs);
    assert_true(fabs(pr - C) < 0.05 * C);
    assert_true(fabs(cs) < 0.05);
    // Every token the same vector (times a positive scale): rank 1 and adjacent cosine 1.
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) x[n * C + c] = (1 + n % 3) * (c + 1.0);
    be->upload_f64(dx, x, (size_t)N * C);
    stream_rank_and_token_cos(be, dx, B, T, C, &pr, &cs);
    assert_true(fabs(pr - 1) < 1e-9);
    assert_true(fabs(cs - 1) < 1e-12);
    free(x); be->free(dx);
}

// A model whose heads all have the same query, key and value maps: redundancy 1, equal entropies
// and effective ranks across heads.
static void test_identical_heads_have_redundancy_one(void **state) {
    (void)state;
    ModelShape s = {.n_layer = 2, .n_head = 3, .d_model = 12, .head_size = 4, .seq_len = 6, .vocab_size = 11,
                    .mlp_hidden = 16, .norm = NORM_PRE, .tie_embeddings = 1, .init_std = 0.5, .scaled_init = 1};
    Model m;
    Activations a;
    const Backend *be = backend_cpu_f64();
    model_init(&m, be, s, 0, s.n_layer, 1, 1, 1);
    model_init_weights(&m, 13);
    for (int l = 0; l < 2; l++) {
        double w[36 * 12], b[36];
        be->download_f64(w, model_param(&m, PARAM_QKV_W, l), 36 * 12);
        be->download_f64(b, model_param(&m, PARAM_QKV_B, l), 36);
        for (int part = 0; part < 3; part++)
            for (int h = 1; h < 3; h++) {
                memcpy(w + (part * 12 + h * 4) * 12, w + (part * 12) * 12, sizeof(double) * 4 * 12);
                memcpy(b + part * 12 + h * 4, b + part * 12, sizeof(double) * 4);
            }
        be->upload_f64(model_param(&m, PARAM_QKV_W, l), w, 36 * 12);
        be->upload_f64(model_param(&m, PARAM_QKV_B, l), b, 36);
    }
    activations_init(&a, &m, 2);
    int32_t tok[12], tg[12];
    for (int i = 0; i < 12; i++) { tok[i] = (int32_t)(rng_hash3(1, 1, (uint64_t)i) % 11); tg[i] = tok[i]; }
    be->upload_i32(a.tokens, tok, 12);
    be->upload_i32(a.targets, tg, 12);
    model_forward(&m, &a);
    TraceRecord r;
    const int snap[1] = {1};
    trace_init(&r, &s, 2, snap, 1);
    trace_forward(&r, &m, &a);
    for (int l = 0; l < 2; l++) {
        assert_true(fabs(r.redundancy[l] - 1) < 1e-12);
        for (int h = 1; h < 3; h++) {
            assert_true(fabs(r.entropy[l * 3 + h] - r.entropy[l * 3]) < 1e-12);
            assert_true(fabs(r.eff_rank[l * 3 + h] - r.eff_rank[l * 3]) < 1e-12);
        }
        // A causal map's effective rank lies in [1, T]
        assert_true(r.eff_rank[l * 3] >= 1 && r.eff_rank[l * 3] <= 6);
    }
    assert_true(r.resid_rank[2] > 0 && r.resid_rank[2] <= 12);
    // The snapshot of layer 1: sequence 0's maps of its heads (3 < TRACE_SNAPSHOT_HEADS), exactly
    // the model's attention weights; causal rows summing to 1.
    assert_int_equal(r.n_snap, 1);
    assert_int_equal(r.snap_heads, 3);
    double probs[2 * 3 * 36];
    be->download_f64(probs, model_layer_probs(&m, &a, 1), 2 * 3 * 36);
    for (int h = 0; h < 3; h++)
        for (int i = 0; i < 6; i++) {
            double sum = 0;
            for (int j = 0; j < 6; j++) {
                double v = r.snapshot[(h * 6 + i) * 6 + j];
                assert_true(v == probs[(h * 6 + i) * 6 + j]);
                if (j > i) assert_true(v == 0.0);
                sum += v;
            }
            assert_true(fabs(sum - 1) < 1e-12);
        }
    assert_null(r.sga_alpha);   // not an SGA model: its arrays do not exist
    trace_free(&r);
    activations_free(&a, &m);
    model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_row_entropy_of_uniform_and_one_hot_rows),
        cmocka_unit_test(test_stream_rank_and_token_cosine),
        cmocka_unit_test(test_identical_heads_have_redundancy_one),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
