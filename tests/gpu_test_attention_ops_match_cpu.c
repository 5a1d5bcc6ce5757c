// The attention, entropy and linear-algebra ops of the CUDA backend against their CPU twins (the fp32
// CPU backend): same host inputs on both, scale-relative max error of every output below the op's
// tolerance. Outputs that accumulate (+=) start from the same random values on both backends; inputs
// whose upper (acausal) triangle the op must not read hold garbage there (NaN and 1e30), and every
// GPU output is also checked to be finite, which a read of the garbage would break.
// Exits 77 (skip) where there is no CUDA device.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <string.h>
#include "gpu_pairs.h"

// ---- tolerances (scale-relative max error; see gpu_compare.h) -----------------------------------
#define TOL_COPY          1e-7   // reshapes, masks, one add or multiply: the same roundings on both sides
#define TOL_AXPY          1e-6   // the GPU fuses a x + y into one FMA, the CPU may not: one rounding apart
#define TOL_GEMM_FP32     1e-5   // fp32 products of length <= 41, summed in another order
#define TOL_GEMM_BF16     2e-2   // operands rounded to bf16 (8-bit mantissa) inside cuBLAS
#define TOL_SOFTMAX       1e-5   // expf on the GPU vs the CPU's Cephes expf_fast (about 1 ulp), fp32 sums
#define TOL_ENTROPY       1e-5   // fp32 logf and fp32 sums in another order
#define TOL_REDUCE_DOUBLE 1e-8   // relative: both sides accumulate in double from the same fp32 inputs
#define TOL_SUM_CHUNKED   1e-6   // fp32 sums of a few hundred terms grouped in chunks of 256 rows vs one pass

// Realistic odd sizes: nothing is a multiple of a warp or a tile.
enum { B = 3, NH = 4, T = 37, HS = 24, BH = B * NH, C = NH * HS };

static int group_setup(void **state) {
    (void)state;
    gpu = gpu_backend_or_skip(CUDA_GEMM_FP32);
    cpu = backend_cpu_f32();
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    backend_cuda_destroy();
    return 0;
}

static void check(const char *what, double err, double tol) {
    printf("# %-40s error %.3g (tolerance %.3g)\n", what, err, tol);
    assert_true(err < tol);
}

// What an acausal entry holds when the op must not read it: NaN or 1e30, alternately.
static float garbage(size_t idx) { return idx % 2 ? NAN : 1e30f; }

// A (bh,T,T) tensor of random values on the causal triangle; above it, garbage or zero.
static float *causal_random(int bh, int t, uint64_t seed, double scale, int garbage_above) {
    float *x = gpu_random((size_t)bh * t * t, seed, scale);
    for (size_t idx = 0; idx < (size_t)bh * t * t; idx++) {
        size_t j = idx % t, i = (idx / t) % t;
        if (j > i) x[idx] = garbage_above ? garbage(idx) : 0.0f;
    }
    return x;
}

// Attention rows (BH,T,T): positive on j <= i and summing to 1, with exact zeros at every 5th causal
// entry of rows i >= 2 (0 log 0 = 0 must hold); above the diagonal garbage or exact zeros.
static float *causal_probs(uint64_t seed, int garbage_above) {
    float *p = gpu_random((size_t)BH * T * T, seed, 1.0);
    for (size_t r = 0; r < (size_t)BH * T; r++) {
        int i = (int)(r % T);
        float *row = p + r * T;
        double sum = 0;
        for (int j = 0; j <= i; j++) {
            row[j] = (i >= 2 && j % 5 == 1) ? 0.0f : (float)exp(1.5 * row[j]);
            sum += row[j];
        }
        for (int j = 0; j <= i; j++) row[j] = (float)(row[j] / sum);
        for (int j = i + 1; j < T; j++) row[j] = garbage_above ? garbage(r * T + j) : 0.0f;
    }
    return p;
}

// ---- head reshapes ---------------------------------------------------------------------------------

static void test_heads_split(void **state) {
    (void)state;
    size_t nh = (size_t)BH * T * HS;
    Pair qkv = pair_random(3 * nh, 1, 1.0), q = pair_random(nh, 2, 1.0), k = pair_random(nh, 3, 1.0), v = pair_random(nh, 4, 1.0);
    gpu->heads_split(q.g, k.g, v.g, qkv.g, B, T, NH, HS);
    cpu->heads_split(q.c, k.c, v.c, qkv.c, B, T, NH, HS);
    check("heads_split q", pair_error(q), TOL_COPY);
    check("heads_split k", pair_error(k), TOL_COPY);
    check("heads_split v", pair_error(v), TOL_COPY);
    pair_free(qkv); pair_free(q); pair_free(k); pair_free(v);
}

static void test_heads_split_backward(void **state) {
    (void)state;
    size_t nh = (size_t)BH * T * HS;
    Pair dqkv = pair_random(3 * nh, 5, 1.0);   // (=): random values that both overwrite
    Pair dq = pair_random(nh, 6, 1.0), dk = pair_random(nh, 7, 1.0), dv = pair_random(nh, 8, 1.0);
    gpu->heads_split_backward(dqkv.g, dq.g, dk.g, dv.g, B, T, NH, HS);
    cpu->heads_split_backward(dqkv.c, dq.c, dk.c, dv.c, B, T, NH, HS);
    check("heads_split_backward dqkv (=)", pair_error(dqkv), TOL_COPY);
    pair_free(dqkv); pair_free(dq); pair_free(dk); pair_free(dv);
}

static void test_heads_merge(void **state) {
    (void)state;
    size_t nh = (size_t)BH * T * HS;
    Pair y = pair_random(nh, 9, 1.0), out = pair_random(nh, 10, 1.0);
    gpu->heads_merge(out.g, y.g, B, T, NH, HS);
    cpu->heads_merge(out.c, y.c, B, T, NH, HS);
    check("heads_merge out", pair_error(out), TOL_COPY);
    pair_free(y); pair_free(out);
}

static void test_heads_merge_backward(void **state) {
    (void)state;
    size_t nh = (size_t)BH * T * HS;
    Pair dout = pair_random(nh, 11, 1.0), dy = pair_random(nh, 12, 1.0);   // (=): random start must vanish
    gpu->heads_merge_backward(dy.g, dout.g, B, T, NH, HS);
    cpu->heads_merge_backward(dy.c, dout.c, B, T, NH, HS);
    check("heads_merge_backward dy (=)", pair_error(dy), TOL_COPY);
    pair_free(dout); pair_free(dy);
}

// ---- batched products ------------------------------------------------------------------------------

// The causal triangle of a (BH,Q,T) row tensor of rows q0.. on both sides, zeros above it: for
// outputs whose entries above the diagonal the op leaves unspecified (backend.h; the CPU skips them
// in causal pieces, src/cpu/attention.inc).
static Pair causal_part(Pair p, int q0, int Q) {
    Pair m = pair_garbage(p.n, 990);
    gpu->causal_lower_copy(m.g, p.g, BH, T, q0, Q);
    cpu->causal_lower_copy(m.c, p.c, BH, T, q0, Q);
    return m;
}

static void run_attn_scores(const char *what, double tol) {
    size_t nh = (size_t)BH * T * HS, ns = (size_t)BH * T * T;
    Pair q = pair_random(nh, 13, 1.0), k = pair_random(nh, 14, 1.0), s = pair_random(ns, 15, 1.0);
    double scale = 1.0 / sqrt((double)HS);
    gpu->attn_scores(s.g, q.g, k.g, scale, BH, T, HS, 0, T);
    cpu->attn_scores(s.c, q.c, k.c, scale, BH, T, HS, 0, T);
    Pair triangle = causal_part(s, 0, T);
    check(what, pair_error(triangle), tol);
    pair_free(q); pair_free(k); pair_free(s); pair_free(triangle);
}

static void test_attn_scores(void **state) {
    (void)state;
    run_attn_scores("attn_scores scores", TOL_GEMM_FP32);
}

// dscores holds zeros above the diagonal on both backends: the op contract (backend.h), which both
// producers of dscores keep (test_softmax_causal_backward checks the GPU's; test_sga_ops_match_cpu
// the blend's); the GPU's GEMMs read the whole square, the CPU's causal pieces read past the diagonal.
static void test_attn_scores_backward(void **state) {
    (void)state;
    size_t nh = (size_t)BH * T * HS;
    float *d = causal_random(BH, T, 16, 1.0, 0);
    Pair ds = pair_from(d, (size_t)BH * T * T);
    free(d);
    Pair q = pair_random(nh, 17, 1.0), k = pair_random(nh, 18, 1.0);
    Pair dq = pair_random(nh, 19, 1.0), dk = pair_random(nh, 20, 1.0);   // (+=)
    double scale = 1.0 / sqrt((double)HS);
    gpu->attn_scores_backward(dq.g, dk.g, ds.g, q.g, k.g, scale, BH, T, HS, 0, T);
    cpu->attn_scores_backward(dq.c, dk.c, ds.c, q.c, k.c, scale, BH, T, HS, 0, T);
    check("attn_scores_backward dq (+=)", pair_error(dq), TOL_GEMM_FP32);
    check("attn_scores_backward dk (+=)", pair_error(dk), TOL_GEMM_FP32);
    pair_free(ds); pair_free(q); pair_free(k); pair_free(dq); pair_free(dk);
}

static void run_attn_values(const char *what, double tol) {
    size_t nh = (size_t)BH * T * HS;
    float *p = causal_probs(18, 0);
    Pair probs = pair_from(p, (size_t)BH * T * T);
    free(p);
    Pair v = pair_random(nh, 19, 1.0), y = pair_random(nh, 20, 1.0);
    gpu->attn_values(y.g, probs.g, v.g, BH, T, HS, 0, T);
    cpu->attn_values(y.c, probs.c, v.c, BH, T, HS, 0, T);
    check(what, pair_error(y), tol);
    pair_free(probs); pair_free(v); pair_free(y);
}

static void test_attn_values(void **state) {
    (void)state;
    run_attn_values("attn_values y", TOL_GEMM_FP32);
}

static void test_attn_values_backward(void **state) {
    (void)state;
    size_t nh = (size_t)BH * T * HS, ns = (size_t)BH * T * T;
    float *p = causal_probs(21, 0);
    Pair probs = pair_from(p, ns);
    free(p);
    Pair v = pair_random(nh, 22, 1.0), dy = pair_random(nh, 23, 1.0);
    Pair dprobs = pair_random(ns, 24, 1.0), dv = pair_random(nh, 25, 1.0);   // dprobs (=), dv (+=)
    gpu->attn_values_backward(dprobs.g, dv.g, dy.g, probs.g, v.g, BH, T, HS, 0, T);
    cpu->attn_values_backward(dprobs.c, dv.c, dy.c, probs.c, v.c, BH, T, HS, 0, T);
    Pair triangle = causal_part(dprobs, 0, T);   // above it unspecified
    check("attn_values_backward dprobs (=)", pair_error(triangle), TOL_GEMM_FP32);
    check("attn_values_backward dv (+=)", pair_error(dv), TOL_GEMM_FP32);
    pair_free(probs); pair_free(v); pair_free(dy); pair_free(dprobs); pair_free(dv); pair_free(triangle);
}

// ---- causal softmax --------------------------------------------------------------------------------

static void test_softmax_causal_forward(void **state) {
    (void)state;
    size_t ns = (size_t)BH * T * T;
    float *s = causal_random(BH, T, 26, 3.0, 1);
    Pair scores = pair_from(s, ns), probs = pair_random(ns, 27, 1.0);
    free(s);
    gpu->softmax_causal_forward(probs.g, scores.g, BH, T, 0, T);
    cpu->softmax_causal_forward(probs.c, scores.c, BH, T, 0, T);
    check("softmax_causal_forward probs", pair_error(probs), TOL_SOFTMAX);
    // Exact zeros above the diagonal, not merely small values.
    assert_int_equal(pair_gpu_nonzero_above_diagonal(probs, T, 0, T), 0);
    pair_free(scores); pair_free(probs);
}

static void test_softmax_causal_backward(void **state) {
    (void)state;
    size_t ns = (size_t)BH * T * T;
    float *p = causal_probs(28, 1), *dp = causal_random(BH, T, 29, 1.0, 1);
    Pair probs = pair_from(p, ns), dprobs = pair_from(dp, ns), dscores = pair_random(ns, 30, 1.0);   // (=)
    free(p); free(dp);
    gpu->softmax_causal_backward(dscores.g, dprobs.g, probs.g, BH, T, 0, T);
    cpu->softmax_causal_backward(dscores.c, dprobs.c, probs.c, BH, T, 0, T);
    check("softmax_causal_backward dscores (=)", pair_error(dscores), TOL_SOFTMAX);
    // Exact zeros above the diagonal over the random start: attn_scores_backward reads them.
    assert_int_equal(pair_gpu_nonzero_above_diagonal(dscores, T, 0, T), 0);
    pair_free(probs); pair_free(dprobs); pair_free(dscores);
}

// Blocks of Q query rows of each head from q0 (backend.h's causal row ops: tensors (BH,Q,T), row r
// of a block is query q0 + r % Q): short and long blocks inside, and the last row alone.
static const struct { int q0, Q; } ROW_BLOCKS[] = {{2, 3}, {5, 20}, {T - 1, 1}};

// Host copy (BH,Q,T) of rows q0..q0+Q-1 of each head of square (BH,T,T): the block sees the same
// values, garbage above its diagonal included.
static float *block_rows(const float *square, int q0, int Q) {
    float *rows = malloc((size_t)BH * Q * T * sizeof(float));
    for (int bh = 0; bh < BH; bh++)
        memcpy(rows + (size_t)bh * Q * T, square + ((size_t)bh * T + q0) * T, (size_t)Q * T * sizeof(float));
    return rows;
}

static void test_softmax_causal_forward_row_blocks(void **state) {
    (void)state;
    for (size_t c = 0; c < sizeof ROW_BLOCKS / sizeof ROW_BLOCKS[0]; c++) {
        int q0 = ROW_BLOCKS[c].q0, Q = ROW_BLOCKS[c].Q;
        size_t nb = (size_t)BH * Q * T;
        float *s = causal_random(BH, T, 80 + c, 3.0, 1), *sb = block_rows(s, q0, Q);
        Pair scores = pair_from(sb, nb), probs = pair_random(nb, 90 + c, 1.0);   // (=)
        free(s); free(sb);
        gpu->softmax_causal_forward(probs.g, scores.g, BH, T, q0, Q);
        cpu->softmax_causal_forward(probs.c, scores.c, BH, T, q0, Q);
        char what[64];
        snprintf(what, sizeof what, "softmax_causal_forward probs rows %d..%d", q0, q0 + Q - 1);
        check(what, pair_error(probs), TOL_SOFTMAX);
        assert_int_equal(pair_gpu_nonzero_above_diagonal(probs, T, q0, Q), 0);
        pair_free(scores); pair_free(probs);
    }
}

static void test_softmax_causal_backward_row_blocks(void **state) {
    (void)state;
    for (size_t c = 0; c < sizeof ROW_BLOCKS / sizeof ROW_BLOCKS[0]; c++) {
        int q0 = ROW_BLOCKS[c].q0, Q = ROW_BLOCKS[c].Q;
        size_t nb = (size_t)BH * Q * T;
        float *p = causal_probs(100 + c, 1), *dp = causal_random(BH, T, 110 + c, 1.0, 1);
        float *pb = block_rows(p, q0, Q), *dpb = block_rows(dp, q0, Q);
        Pair probs = pair_from(pb, nb), dprobs = pair_from(dpb, nb), dscores = pair_random(nb, 120 + c, 1.0);   // (=)
        free(p); free(dp); free(pb); free(dpb);
        gpu->softmax_causal_backward(dscores.g, dprobs.g, probs.g, BH, T, q0, Q);
        cpu->softmax_causal_backward(dscores.c, dprobs.c, probs.c, BH, T, q0, Q);
        char what[64];
        snprintf(what, sizeof what, "softmax_causal_backward dscores rows %d..%d", q0, q0 + Q - 1);
        check(what, pair_error(dscores), TOL_SOFTMAX);
        assert_int_equal(pair_gpu_nonzero_above_diagonal(dscores, T, q0, Q), 0);
        pair_free(probs); pair_free(dprobs); pair_free(dscores);
    }
}

// The four products on the same blocks (the tiled SGA's query tiles): scores, dprobs (BH,Q,T) and the
// rows q0..q0+Q-1 of y and dq, and dk, dv (+=) from them, against the CPU. The products are linear in
// every operand, so random values serve as probs and dscores, with zeros above the diagonal as their
// producers leave them; scores and dprobs are compared on the triangle.
static void test_attention_products_row_blocks(void **state) {
    (void)state;
    size_t nh = (size_t)BH * T * HS;
    double scale = 1.0 / sqrt((double)HS);
    for (size_t c = 0; c < sizeof ROW_BLOCKS / sizeof ROW_BLOCKS[0]; c++) {
        int q0 = ROW_BLOCKS[c].q0, Q = ROW_BLOCKS[c].Q;
        size_t nb = (size_t)BH * Q * T;
        Pair q = pair_random(nh, 130 + c, 1.0), k = pair_random(nh, 131 + c, 1.0), v = pair_random(nh, 132 + c, 1.0);
        float *p_square = causal_random(BH, T, 134 + c, 1.0, 0), *ds_square = causal_random(BH, T, 135 + c, 1.0, 0);
        float *p_rows = block_rows(p_square, q0, Q), *ds_rows = block_rows(ds_square, q0, Q);
        Pair dy = pair_random(nh, 133 + c, 1.0), probs = pair_from(p_rows, nb), dscores = pair_from(ds_rows, nb);
        free(p_square); free(ds_square); free(p_rows); free(ds_rows);
        Pair scores = pair_random(nb, 136 + c, 1.0), dprobs = pair_random(nb, 137 + c, 1.0);   // (=)
        Pair y = pair_random(nh, 138 + c, 1.0), dq = pair_random(nh, 139 + c, 1.0);             // rows q0.. (=), (+=); others kept
        Pair dk = pair_random(nh, 140 + c, 1.0), dv = pair_random(nh, 141 + c, 1.0);            // (+=)
        gpu->attn_scores(scores.g, q.g, k.g, scale, BH, T, HS, q0, Q);
        cpu->attn_scores(scores.c, q.c, k.c, scale, BH, T, HS, q0, Q);
        gpu->attn_values(y.g, probs.g, v.g, BH, T, HS, q0, Q);
        cpu->attn_values(y.c, probs.c, v.c, BH, T, HS, q0, Q);
        gpu->attn_values_backward(dprobs.g, dv.g, dy.g, probs.g, v.g, BH, T, HS, q0, Q);
        cpu->attn_values_backward(dprobs.c, dv.c, dy.c, probs.c, v.c, BH, T, HS, q0, Q);
        gpu->attn_scores_backward(dq.g, dk.g, dscores.g, q.g, k.g, scale, BH, T, HS, q0, Q);
        cpu->attn_scores_backward(dq.c, dk.c, dscores.c, q.c, k.c, scale, BH, T, HS, q0, Q);
        Pair scores_triangle = causal_part(scores, q0, Q), dprobs_triangle = causal_part(dprobs, q0, Q);
        const struct { const char *name; Pair p; } outs[] = {{"attn_scores scores", scores_triangle}, {"attn_values y", y},
            {"attn_values_backward dprobs", dprobs_triangle}, {"attn_values_backward dv", dv}, {"attn_scores_backward dq", dq},
            {"attn_scores_backward dk", dk}};
        for (size_t o = 0; o < sizeof outs / sizeof outs[0]; o++) {
            char what[96];
            snprintf(what, sizeof what, "%s rows %d..%d", outs[o].name, q0, q0 + Q - 1);
            check(what, pair_error(outs[o].p), TOL_GEMM_FP32);
        }
        Pair all[] = {q, k, v, dy, probs, dscores, scores, dprobs, y, dq, dk, dv, scores_triangle, dprobs_triangle};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) pair_free(all[i]);
    }
}

// ---- entropy ---------------------------------------------------------------------------------------

static void test_attn_row_entropy(void **state) {
    (void)state;
    float *p = causal_probs(31, 1);
    Pair probs = pair_from(p, (size_t)BH * T * T), ent = pair_random((size_t)BH * T, 32, 1.0);
    free(p);
    gpu->attn_row_entropy(ent.g, probs.g, BH, T);
    cpu->attn_row_entropy(ent.c, probs.c, BH, T);
    check("attn_row_entropy ent", pair_error(ent), TOL_ENTROPY);
    pair_free(probs); pair_free(ent);
}

static void test_attn_entropy_reg_sum(void **state) {
    (void)state;
    float *p = causal_probs(33, 1);
    Pair probs = pair_from(p, (size_t)BH * T * T);
    free(p);
    double g = gpu->attn_entropy_reg_sum(probs.g, BH, T), c = cpu->attn_entropy_reg_sum(probs.c, BH, T);
    printf("# attn_entropy_reg_sum gpu %.17g cpu %.17g\n", g, c);
    check("attn_entropy_reg_sum (relative)", isfinite(g) ? fabs(g - c) / fabs(c) : INFINITY, TOL_REDUCE_DOUBLE);
    // Deterministic: the same value again, bit for bit.
    double again = gpu->attn_entropy_reg_sum(probs.g, BH, T);
    assert_memory_equal(&g, &again, sizeof g);
    pair_free(probs);
}

static void test_attn_entropy_reg_backward(void **state) {
    (void)state;
    size_t ns = (size_t)BH * T * T;
    float *p = causal_probs(34, 1);
    Pair probs = pair_from(p, ns), dprobs = pair_random(ns, 35, 1.0);   // (+=), the triangle above untouched
    free(p);
    gpu->attn_entropy_reg_backward(dprobs.g, probs.g, -0.37, BH, T);
    cpu->attn_entropy_reg_backward(dprobs.c, probs.c, -0.37, BH, T);
    check("attn_entropy_reg_backward dprobs (+=)", pair_error(dprobs), TOL_ENTROPY);
    pair_free(probs); pair_free(dprobs);
}

static void test_head_mask_apply(void **state) {
    (void)state;
    size_t nh = (size_t)BH * T * HS;
    const float m[NH] = {1.0f, 0.0f, 0.5f, 1.25f};
    Pair mask = pair_from(m, NH), y = pair_random(nh, 36, 1.0);
    gpu->head_mask_apply(y.g, mask.g, B, NH, T, HS);
    cpu->head_mask_apply(y.c, mask.c, B, NH, T, HS);
    check("head_mask_apply y", pair_error(y), TOL_COPY);
    pair_free(mask); pair_free(y);
}

// ---- linear algebra --------------------------------------------------------------------------------

// All four transpose combinations, leading dimensions beyond the minimum (the padding of C must
// survive untouched), beta = 0 in the first combination.
static void run_gemm(const char *what, double tol) {
    const int M = 29, N = 33, K = 41;
    for (int combo = 0; combo < 4; combo++) {
        int ta = combo & 1, tb = combo >> 1;
        int rows_a = ta ? K : M, lda = (ta ? M : K) + 3, rows_b = tb ? N : K, ldb = (tb ? K : N) + 5, ldc = N + 2;
        Pair a = pair_random((size_t)rows_a * lda, 40 + combo, 1.0), b = pair_random((size_t)rows_b * ldb, 50 + combo, 1.0);
        Pair c = pair_random((size_t)M * ldc, 60 + combo, 1.0);
        double alpha = 0.7, beta = combo == 0 ? 0.0 : -0.3;
        gpu->gemm(ta, tb, M, N, K, alpha, a.g, lda, b.g, ldb, beta, c.g, ldc);
        cpu->gemm(ta, tb, M, N, K, alpha, a.c, lda, b.c, ldb, beta, c.c, ldc);
        char name[96];
        snprintf(name, sizeof name, "%s transA=%d transB=%d beta=%g", what, ta, tb, beta);
        check(name, pair_error(c), tol);
        pair_free(a); pair_free(b); pair_free(c);
    }
}

static void test_gemm(void **state) {
    (void)state;
    run_gemm("gemm", TOL_GEMM_FP32);
}

static void test_axpy(void **state) {
    (void)state;
    size_t n = 12345;
    Pair y = pair_random(n, 70, 1.0), x = pair_random(n, 71, 1.0);
    gpu->axpy(y.g, -1.3, x.g, n);
    cpu->axpy(y.c, -1.3, x.c, n);
    check("axpy y (+=)", pair_error(y), TOL_AXPY);
    pair_free(y); pair_free(x);
}

static void test_diag_sum(void **state) {
    (void)state;
    const int D = 301;   // more than one element per thread of the reduction
    Pair m = pair_random((size_t)D * D, 72, 1.0);
    double g = gpu->diag_sum(m.g, D), c = cpu->diag_sum(m.c, D);
    printf("# diag_sum gpu %.17g cpu %.17g\n", g, c);
    check("diag_sum (relative)", isfinite(g) ? fabs(g - c) / fabs(c) : INFINITY, TOL_REDUCE_DOUBLE);
    pair_free(m);
}

static void test_column_sums(void **state) {
    (void)state;
    const int N = 601, D = 77;   // three row chunks of the GPU's, the last one partial
    Pair x = pair_random((size_t)N * D, 73, 1.0), sums = pair_random(D, 74, 1.0);   // (+=)
    gpu->column_sums(sums.g, x.g, N, D);
    cpu->column_sums(sums.c, x.c, N, D);
    check("column_sums sums (+=)", pair_error(sums), TOL_SUM_CHUNKED);
    pair_free(x); pair_free(sums);
}

// ---- bf16 tensor-core GEMMs ------------------------------------------------------------------------

// The backend re-created in bf16: the attention products get the loose tolerance, while gemm (R3SI's
// Gram matrices) must stay plain fp32 regardless. Everything is allocated and freed in between.
static void test_bf16_attention_gemms(void **state) {
    (void)state;
    char why[256] = "";
    backend_cuda_destroy();
    gpu = backend_cuda_create(0, CUDA_GEMM_BF16, why, sizeof why);
    if (!gpu) fail_msg("cannot create the bf16 CUDA backend: %s", why);
    run_attn_scores("attn_scores scores (bf16)", TOL_GEMM_BF16);
    run_attn_values("attn_values y (bf16)", TOL_GEMM_BF16);
    run_gemm("gemm under the bf16 backend", TOL_GEMM_FP32);
    backend_cuda_destroy();
    gpu = backend_cuda_create(0, CUDA_GEMM_FP32, why, sizeof why);
    if (!gpu) fail_msg("cannot re-create the fp32 CUDA backend: %s", why);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_heads_split),
        cmocka_unit_test(test_heads_split_backward),
        cmocka_unit_test(test_heads_merge),
        cmocka_unit_test(test_heads_merge_backward),
        cmocka_unit_test(test_attn_scores),
        cmocka_unit_test(test_attn_scores_backward),
        cmocka_unit_test(test_softmax_causal_forward),
        cmocka_unit_test(test_softmax_causal_backward),
        cmocka_unit_test(test_softmax_causal_forward_row_blocks),
        cmocka_unit_test(test_softmax_causal_backward_row_blocks),
        cmocka_unit_test(test_attention_products_row_blocks),
        cmocka_unit_test(test_attn_values),
        cmocka_unit_test(test_attn_values_backward),
        cmocka_unit_test(test_attn_row_entropy),
        cmocka_unit_test(test_attn_entropy_reg_sum),
        cmocka_unit_test(test_attn_entropy_reg_backward),
        cmocka_unit_test(test_head_mask_apply),
        cmocka_unit_test(test_gemm),
        cmocka_unit_test(test_axpy),
        cmocka_unit_test(test_diag_sum),
        cmocka_unit_test(test_column_sums),
        cmocka_unit_test(test_bf16_attention_gemms),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
