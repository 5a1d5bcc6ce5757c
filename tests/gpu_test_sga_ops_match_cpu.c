// gpu_test_sga_ops_match_cpu.c: the Spectral Gated Attention kernel family of the CUDA backend
// (cuda/sga.cu, cuda/dct.cu) against its CPU twins (src/cpu/sga.inc on the fp32 CPU backend).
//
// Each test uploads the same random host inputs to both backends, runs the op on both and asserts
// that the scale-relative max error (gpu_compare.h) of every output is below the op's tolerance
// from the table below. Outputs an op accumulates into (+=) are pre-filled with the same random
// values on both backends, so accumulation is checked; outputs it overwrites (=) are pre-filled
// with different garbage on each, so an element the GPU forgets or accumulates into shows up.
// Sizes are odd on purpose: BH = 3 x 4 heads of T = 37 (R = 444 rows), rows longer than a block
// (T = 300) and, for the DCT, T = 64, 18, 2048 and the degenerate 1, 2, 3. Both DCT methods are
// checked (forward, inverse, round trip, in place). The causal row ops also run on blocks of query
// rows of each head (q0 > 0, Q < T).
//
// The CUDA backend is created once (group setup) in the fp32 GEMM precision, so the GEMM DCT runs
// in plain fp32 (it uses TF32 only in the bf16 training precision). Without a GPU the program
// exits 77 (skip).
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_pairs.h"
#include "../cuda/sga_dct.h"

// ---- tolerances: scale-relative max error allowed per op --------------------------------------
// Copies and single products/sums are the same IEEE operations on both sides, up to the GPU's
// FMA contraction: 1e-6. The DCT: both sides are fp32 FFTs (cuFFT, FFTW) with different
// factorisations, or an fp32 GEMM against the FFT (rounding ~ eps sqrt(T) log T): 1e-5; TF32 (not
// run here) would need ~2e-3. The statistics sum T terms and logs in a different order (block
// tree vs sequential), 1e-5; their gradient adds cancelling terms of up to ~1e2 (the flatness
// term near P = 0): 1e-4. sigmoid: CUDA's expf against the CPU's Cephes polynomial, ~1 ulp each.
// de and dalpha: sums over rows in a different order (dalpha in double on both sides).
static const OpTolerance TOLERANCES[] = {
    {"dct_rows_fft", 1e-5},
    {"dct_rows_gemm", 1e-5},
    {"causal_lower_copy", 1e-6},
    {"causal_lower_accumulate", 1e-6},
    {"sga_stats_forward", 1e-5},
    {"sga_stats_backward", 1e-4},
    {"sga_gate_input", 1e-6},
    {"sga_gate_input_backward", 1e-5},
    {"sga_fixed_gate", 1e-6},
    {"sga_gate_apply", 1e-6},
    {"sga_gate_backward", 1e-6},
    {"sga_blend_softmax_forward", 1e-5},
    {"sga_blend_backward", 1e-6},
    {"sga_blend_backward_dalpha", 1e-5},
};

static double tolerance(const char *op) { return op_tolerance(TOLERANCES, sizeof TOLERANCES / sizeof TOLERANCES[0], op); }

// ---- sizes ----------------------------------------------------------------------------------------
enum { BH = 3 * 4, T = 37, R = BH * T, DE = 32 };

static uint64_t next_seed = 1000;   // every random tensor of the program draws a fresh stream


// Asserts the GPU copy of p is within the op's tolerance of the CPU copy.
static void expect_close(const char *op, const char *what, Pair p) { expect_pair_close(op, what, p, tolerance(op)); }

// Host copy of rows (rows, n) zero above the causal diagonal (row r is query r % n): the statistics
// of the non-spectral ablation see such rows, with exact zeros (p = 0 in the entropy).
static float *causal_rows(size_t rows, int n, double scale) {
    float *h = gpu_random(rows * n, next_seed++, scale);
    for (size_t r = 0; r < rows; r++)
        for (int j = (int)(r % n) + 1; j < n; j++) h[r * n + j] = 0.0f;
    return h;
}

// ---- fixture -------------------------------------------------------------------------------
static int setup(void **state) {
    (void)state;
    gpu = gpu_backend_or_skip(CUDA_GEMM_FP32);
    cpu = backend_cpu_f32();
    return 0;
}

static int teardown(void **state) {
    (void)state;
    cuda_set_dct_method(CUDA_DCT_FFT);
    backend_cuda_destroy();
    return 0;
}

// ---- DCT ----------------------------------------------------------------------------------------
// Forward and inverse of random rows against the CPU, the GPU round trip against the input, and the
// transform in place. Repeated (T, R) pairs and several R per T exercise the plan cache.
static void check_dct(CudaDctMethod method, const char *op) {
    static const struct { int rows, n; } cases[] = {
        {R, T}, {R, 64}, {R, 18}, {5, T}, {R, T}, {7, 1}, {7, 2}, {7, 3}, {3, 2048}, {9, 300},
    };
    cuda_set_dct_method(method);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int rows = cases[c].rows, n = cases[c].n;
        size_t len = (size_t)rows * n;
        char what[64];
        float *hx = gpu_random(len, next_seed++, 1.0);
        Pair x = pair_from(hx, len), y = pair_random(len, next_seed++, 1.0);
        Pair s = pair_garbage(len, next_seed++), z = pair_garbage(len, next_seed++), back = pair_garbage(len, next_seed++);
        gpu->dct_rows(s.g, x.g, rows, n, 0);
        cpu->dct_rows(s.c, x.c, rows, n, 0);
        snprintf(what, sizeof what, "forward R=%d T=%d", rows, n);
        expect_close(op, what, s);
        gpu->dct_rows(z.g, y.g, rows, n, 1);
        cpu->dct_rows(z.c, y.c, rows, n, 1);
        snprintf(what, sizeof what, "inverse R=%d T=%d", rows, n);
        expect_close(op, what, z);
        // Round trip: IDCT(DCT(x)) on the GPU against x itself (held by the CPU copy).
        gpu->dct_rows(back.g, s.g, rows, n, 1);
        double err = gpu_error(gpu, back.g, cpu, x.c, len), tol = tolerance(op);
        printf("# %-26s round trip R=%d T=%-14d error %.3g (tolerance %.3g)\n", op, rows, n, err, tol);
        if (!(err <= tol)) fail_msg("%s: round trip R=%d T=%d error %.3g > %.3g", op, rows, n, err, tol);
        // In place (out == in), both directions.
        void *inplace = gpu_put(gpu, hx, len);
        gpu->dct_rows(inplace, inplace, rows, n, 0);
        err = gpu_error(gpu, inplace, cpu, s.c, len);
        printf("# %-26s in place R=%d T=%-16d error %.3g (tolerance %.3g)\n", op, rows, n, err, tol);
        if (!(err <= tol)) fail_msg("%s: in place R=%d T=%d error %.3g > %.3g", op, rows, n, err, tol);
        gpu->dct_rows(inplace, inplace, rows, n, 1);
        err = gpu_error(gpu, inplace, cpu, x.c, len);
        if (!(err <= tol)) fail_msg("%s: in-place round trip R=%d T=%d error %.3g > %.3g", op, rows, n, err, tol);
        gpu->free(inplace);
        free(hx);
        pair_free(x); pair_free(y); pair_free(s); pair_free(z); pair_free(back);
    }
    cuda_set_dct_method(CUDA_DCT_FFT);
}

static void test_dct_rows_fft(void **state) {
    (void)state;
    check_dct(CUDA_DCT_FFT, "dct_rows_fft");
}

static void test_dct_rows_gemm(void **state) {
    (void)state;
    check_dct(CUDA_DCT_GEMM, "dct_rows_gemm");
}

// ---- causal rows ----------------------------------------------------------------------------------
// (BH, T) shapes: the test's odd one and rows longer than a thread block.
static const struct { int bh, n; } ROW_SHAPES[] = {{BH, T}, {2, 300}, {5, 1}};

// Blocks of Q query rows of each head from q0 (the causal row ops' (BH,Q,T) tensors, row r of a
// block is query q0 + r % Q): inside the odd shape, its last row alone, and inside rows longer
// than a thread block.
static const struct { int bh, n, q0, Q; } ROW_BLOCKS[] = {{BH, T, 5, 20}, {BH, T, T - 1, 1}, {2, 300, 100, 200}, {2, 300, 2, 3}};

// "BH=12 T=37", and the rows of a block when it is not the whole square
static void rows_label(char *what, size_t size, const char *prefix, int bh, int n, int q0, int Q) {
    if (q0 == 0 && Q == n) snprintf(what, size, "%sBH=%d T=%d", prefix, bh, n);
    else snprintf(what, size, "%sBH=%d T=%d rows %d..%d", prefix, bh, n, q0, q0 + Q - 1);
}

// causal_lower_copy (out (=), from garbage) or causal_lower_accumulate (out (+=), from random values).
static void check_causal_lower(int accumulate, int bh, int n, int q0, int Q) {
    size_t len = (size_t)bh * Q * n;
    Pair in = pair_random(len, next_seed++, 1.0);
    Pair out = accumulate ? pair_random(len, next_seed++, 1.0) : pair_garbage(len, next_seed++);
    (accumulate ? gpu->causal_lower_accumulate : gpu->causal_lower_copy)(out.g, in.g, bh, n, q0, Q);
    (accumulate ? cpu->causal_lower_accumulate : cpu->causal_lower_copy)(out.c, in.c, bh, n, q0, Q);
    char what[64];
    rows_label(what, sizeof what, accumulate ? "out (+=) " : "out ", bh, n, q0, Q);
    expect_close(accumulate ? "causal_lower_accumulate" : "causal_lower_copy", what, out);
    pair_free(in); pair_free(out);
}

// The whole squares of ROW_SHAPES, then the blocks of ROW_BLOCKS.
static void causal_lower_cases(int accumulate) {
    for (size_t c = 0; c < sizeof ROW_SHAPES / sizeof ROW_SHAPES[0]; c++)
        check_causal_lower(accumulate, ROW_SHAPES[c].bh, ROW_SHAPES[c].n, 0, ROW_SHAPES[c].n);
    for (size_t c = 0; c < sizeof ROW_BLOCKS / sizeof ROW_BLOCKS[0]; c++)
        check_causal_lower(accumulate, ROW_BLOCKS[c].bh, ROW_BLOCKS[c].n, ROW_BLOCKS[c].q0, ROW_BLOCKS[c].Q);
}

static void test_causal_lower_copy(void **state) { (void)state; causal_lower_cases(0); }
static void test_causal_lower_accumulate(void **state) { (void)state; causal_lower_cases(1); }

// ---- statistics -----------------------------------------------------------------------------------
// (R, T) shapes with dense random spectra and with zero-padded causal rows (exact zeros).
static const struct { int rows, n; } STAT_SHAPES[] = {{R, T}, {20, 300}, {30, 18}};

static float *stats_input(int c, int causal, size_t *len) {
    int rows = STAT_SHAPES[c].rows, n = STAT_SHAPES[c].n;
    *len = (size_t)rows * n;
    return causal ? causal_rows((size_t)rows, n, 1.0) : gpu_random(*len, next_seed++, 1.0);
}

static void test_sga_stats_forward(void **state) {
    (void)state;
    for (size_t c = 0; c < sizeof STAT_SHAPES / sizeof STAT_SHAPES[0]; c++)
        for (int causal = 0; causal < 2; causal++) {
            int rows = STAT_SHAPES[c].rows, n = STAT_SHAPES[c].n;
            size_t len;
            float *h = stats_input((int)c, causal, &len);
            Pair spec = pair_from(h, len), stats = pair_garbage((size_t)rows * 4, next_seed++);
            gpu->sga_stats_forward(stats.g, spec.g, rows, n);
            cpu->sga_stats_forward(stats.c, spec.c, rows, n);
            char what[64];
            snprintf(what, sizeof what, "stats R=%d T=%d%s", rows, n, causal ? " causal" : "");
            expect_close("sga_stats_forward", what, stats);
            free(h);
            pair_free(spec); pair_free(stats);
        }
}

static void test_sga_stats_backward(void **state) {
    (void)state;
    for (size_t c = 0; c < sizeof STAT_SHAPES / sizeof STAT_SHAPES[0]; c++)
        for (int causal = 0; causal < 2; causal++) {
            int rows = STAT_SHAPES[c].rows, n = STAT_SHAPES[c].n;
            size_t len;
            float *h = stats_input((int)c, causal, &len);
            Pair spec = pair_from(h, len), dstats = pair_random((size_t)rows * 4, next_seed++, 1.0), dspec = pair_random(len, next_seed++, 1.0);
            Pair stats = pair_garbage((size_t)rows * 4, next_seed++);   // each side's own forward statistics
            gpu->sga_stats_forward(stats.g, spec.g, rows, n);
            cpu->sga_stats_forward(stats.c, spec.c, rows, n);
            gpu->sga_stats_backward(dspec.g, dstats.g, spec.g, stats.g, rows, n);
            cpu->sga_stats_backward(dspec.c, dstats.c, spec.c, stats.c, rows, n);
            char what[64];
            snprintf(what, sizeof what, "dspec (+=) R=%d T=%d%s", rows, n, causal ? " causal" : "");
            expect_close("sga_stats_backward", what, dspec);
            free(h);
            pair_free(spec); pair_free(dstats); pair_free(dspec); pair_free(stats);
        }
}

// ---- the gate -----------------------------------------------------------------------------------
// De = 32 and 33 (a second column tile); fewer rows than the 64 reduction chunks too.
static const struct { int rows, de; } GATE_SHAPES[] = {{R, DE}, {R, DE + 1}, {50, 5}};

static void test_sga_gate_input(void **state) {
    (void)state;
    for (size_t c = 0; c < sizeof GATE_SHAPES / sizeof GATE_SHAPES[0]; c++) {
        int rows = GATE_SHAPES[c].rows, de = GATE_SHAPES[c].de;
        Pair e = pair_random((size_t)de, next_seed++, 1.0), stats = pair_random((size_t)rows * 4, next_seed++, 1.0);
        Pair U = pair_garbage((size_t)rows * (de + 4), next_seed++);
        gpu->sga_gate_input(U.g, e.g, stats.g, rows, de);
        cpu->sga_gate_input(U.c, e.c, stats.c, rows, de);
        char what[64];
        snprintf(what, sizeof what, "U R=%d De=%d", rows, de);
        expect_close("sga_gate_input", what, U);
        pair_free(e); pair_free(stats); pair_free(U);
    }
}

static void test_sga_gate_input_backward(void **state) {
    (void)state;
    for (size_t c = 0; c < sizeof GATE_SHAPES / sizeof GATE_SHAPES[0]; c++) {
        int rows = GATE_SHAPES[c].rows, de = GATE_SHAPES[c].de;
        Pair dU = pair_random((size_t)rows * (de + 4), next_seed++, 1.0), de_ = pair_random((size_t)de, next_seed++, 1.0);
        Pair dstats = pair_garbage((size_t)rows * 4, next_seed++);
        gpu->sga_gate_input_backward(de_.g, dstats.g, dU.g, rows, de);
        cpu->sga_gate_input_backward(de_.c, dstats.c, dU.c, rows, de);
        char what[64];
        snprintf(what, sizeof what, "de (+=) R=%d De=%d", rows, de);
        expect_close("sga_gate_input_backward", what, de_);
        snprintf(what, sizeof what, "dstats R=%d De=%d", rows, de);
        expect_close("sga_gate_input_backward", what, dstats);
        pair_free(dU); pair_free(de_); pair_free(dstats);
    }
}

static void test_sga_fixed_gate(void **state) {
    (void)state;
    static const int lengths[] = {T, 18, 300, 1, 2, 3};
    for (size_t c = 0; c < sizeof lengths / sizeof lengths[0]; c++) {
        int n = lengths[c], rows = 7;
        Pair G = pair_garbage((size_t)rows * n, next_seed++);
        gpu->sga_fixed_gate(G.g, rows, n);
        cpu->sga_fixed_gate(G.c, rows, n);
        char what[64];
        snprintf(what, sizeof what, "G R=%d T=%d", rows, n);
        expect_close("sga_fixed_gate", what, G);
        pair_free(G);
    }
}

// ---- elementwise ----------------------------------------------------------------------------------
// The gate as the forward pass runs it: MLP logits (reaching the saturated tails) turned into
// g = sigmoid(l) in place and y = g s; and fixed gains, left as they are.
static void test_sga_gate_apply(void **state) {
    (void)state;
    size_t n = (size_t)R * T;
    for (int logits = 0; logits < 2; logits++) {
        Pair gate = pair_random(n, next_seed++, 4.0), spec = pair_random(n, next_seed++, 1.0), y = pair_garbage(n, next_seed++);
        gpu->sga_gate_apply(y.g, gate.g, spec.g, n, logits);
        cpu->sga_gate_apply(y.c, gate.c, spec.c, n, logits);
        expect_close("sga_gate_apply", logits ? "g = sigmoid(l)" : "g (fixed gains, untouched)", gate);
        expect_close("sga_gate_apply", logits ? "y = g s (logits)" : "y = g s (fixed gains)", y);
        pair_free(gate); pair_free(spec); pair_free(y);
    }
}

static void test_sga_gate_backward(void **state) {
    (void)state;
    size_t n = (size_t)R * T;
    float *h = gpu_random(n, next_seed++, 3.0);
    for (size_t i = 0; i < n; i++) h[i] = 1.0f / (1.0f + expf(-h[i]));   // a sigmoid's output, in (0, 1)
    for (int with_dgate = 1; with_dgate >= 0; with_dgate--) {   // the MLP's gate; fixed gains (no dgate)
        Pair gate = pair_from(h, n), spec = pair_random(n, next_seed++, 1.0), dy = pair_random(n, next_seed++, 1.0);
        Pair dgate = pair_garbage(n, next_seed++), dspec = pair_garbage(n, next_seed++);
        gpu->sga_gate_backward(with_dgate ? dgate.g : NULL, dspec.g, dy.g, gate.g, spec.g, n);
        cpu->sga_gate_backward(with_dgate ? dgate.c : NULL, dspec.c, dy.c, gate.c, spec.c, n);
        const char *name = with_dgate ? "gate MLP" : "fixed gains, no dgate";
        char label[64];
        snprintf(label, sizeof label, "dspec (=) %s", name);
        expect_close("sga_gate_backward", label, dspec);
        if (with_dgate) {
            snprintf(label, sizeof label, "dgate (=) %s", name);
            expect_close("sga_gate_backward", label, dgate);
        }
        pair_free(gate); pair_free(spec); pair_free(dy); pair_free(dgate); pair_free(dspec);
    }
    free(h);
}

// ---- the blend ----------------------------------------------------------------------------------
// alpha_raw inside [0, 1], clamped from above and below (no gradient then), and no blend parameter.
static const struct { int has_alpha; float raw; } ALPHAS[] = {{1, 0.3f}, {1, 1.7f}, {1, -0.5f}, {1, 0.0f}, {0, 1.0f}};

// Probabilities of the blended rows. probs starts as garbage: the CPU twin blends each row into it and
// its softmax's last, masked chunk reads past the diagonal there, which must not reach the result.
static void check_sga_blend_softmax_forward(size_t c, int bh, int n, int q0, int Q) {
    size_t len = (size_t)bh * Q * n;
    Pair a = pair_random(len, next_seed++, 1.0), zp = pair_random(len, next_seed++, 1.0), out = pair_garbage(len, next_seed++);
    Pair alpha = pair_from(&ALPHAS[c].raw, 1);
    const void *ag = ALPHAS[c].has_alpha ? alpha.g : NULL, *ac = ALPHAS[c].has_alpha ? alpha.c : NULL;
    gpu->sga_blend_softmax_forward(out.g, a.g, zp.g, ag, bh, n, q0, Q);
    cpu->sga_blend_softmax_forward(out.c, a.c, zp.c, ac, bh, n, q0, Q);
    char prefix[32], what[64];
    if (ALPHAS[c].has_alpha) snprintf(prefix, sizeof prefix, "probs alpha_raw=%g ", ALPHAS[c].raw);
    else snprintf(prefix, sizeof prefix, "probs no alpha ");
    rows_label(what, sizeof what, prefix, bh, n, q0, Q);
    expect_close("sga_blend_softmax_forward", what, out);
    assert_int_equal(pair_gpu_nonzero_above_diagonal(out, n, q0, Q), 0);   // exact zeros, as the plain softmax's
    pair_free(a); pair_free(zp); pair_free(out); pair_free(alpha);
}

static void test_sga_blend_softmax_forward(void **state) {
    (void)state;
    for (size_t c = 0; c < sizeof ALPHAS / sizeof ALPHAS[0]; c++) {
        for (size_t s = 0; s < 2; s++) check_sga_blend_softmax_forward(c, ROW_SHAPES[s].bh, ROW_SHAPES[s].n, 0, ROW_SHAPES[s].n);
        for (size_t s = 0; s < sizeof ROW_BLOCKS / sizeof ROW_BLOCKS[0]; s++)
            check_sga_blend_softmax_forward(c, ROW_BLOCKS[s].bh, ROW_BLOCKS[s].n, ROW_BLOCKS[s].q0, ROW_BLOCKS[s].Q);
    }
}

static void check_sga_blend_backward(size_t c, int with_dalpha, int bh, int n, int q0, int Q) {
    size_t len = (size_t)bh * Q * n;
    Pair a = pair_random(len, next_seed++, 1.0), zp = pair_random(len, next_seed++, 1.0), dout = pair_random(len, next_seed++, 1.0);
    Pair da = pair_garbage(len, next_seed++), dzp = pair_garbage(len, next_seed++), dalpha = pair_random(1, next_seed++, 10.0);
    Pair alpha = pair_from(&ALPHAS[c].raw, 1);
    const void *ag = ALPHAS[c].has_alpha ? alpha.g : NULL, *ac = ALPHAS[c].has_alpha ? alpha.c : NULL;
    gpu->sga_blend_backward(da.g, dzp.g, with_dalpha ? dalpha.g : NULL, dout.g, a.g, zp.g, ag, bh, n, q0, Q);
    cpu->sga_blend_backward(da.c, dzp.c, with_dalpha ? dalpha.c : NULL, dout.c, a.c, zp.c, ac, bh, n, q0, Q);
    char prefix[32], what[64];
    if (ALPHAS[c].has_alpha) snprintf(prefix, sizeof prefix, "alpha_raw=%g ", ALPHAS[c].raw);
    else snprintf(prefix, sizeof prefix, "no alpha ");
    rows_label(what, sizeof what, prefix, bh, n, q0, Q);
    char label[96];
    snprintf(label, sizeof label, "da (=) %s", what);
    expect_close("sga_blend_backward", label, da);
    // da is a dscores of attn_scores_backward: exact zeros above the diagonal over the garbage
    assert_int_equal(pair_gpu_nonzero_above_diagonal(da, n, q0, Q), 0);
    snprintf(label, sizeof label, "dz' %s", what);
    expect_close("sga_blend_backward", label, dzp);
    if (with_dalpha) {
        snprintf(label, sizeof label, "dalpha (+=) %s", what);
        expect_close("sga_blend_backward_dalpha", label, dalpha);
    }
    pair_free(a); pair_free(zp); pair_free(dout); pair_free(da); pair_free(dzp); pair_free(dalpha); pair_free(alpha);
}

static void test_sga_blend_backward(void **state) {
    (void)state;
    for (size_t c = 0; c < sizeof ALPHAS / sizeof ALPHAS[0]; c++)
        for (int with_dalpha = 0; with_dalpha < 2; with_dalpha++) {
            for (size_t s = 0; s < 2; s++)
                check_sga_blend_backward(c, with_dalpha, ROW_SHAPES[s].bh, ROW_SHAPES[s].n, 0, ROW_SHAPES[s].n);
            for (size_t s = 0; s < sizeof ROW_BLOCKS / sizeof ROW_BLOCKS[0]; s++)
                check_sga_blend_backward(c, with_dalpha, ROW_BLOCKS[s].bh, ROW_BLOCKS[s].n, ROW_BLOCKS[s].q0, ROW_BLOCKS[s].Q);
        }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dct_rows_fft),
        cmocka_unit_test(test_dct_rows_gemm),
        cmocka_unit_test(test_causal_lower_copy),
        cmocka_unit_test(test_causal_lower_accumulate),
        cmocka_unit_test(test_sga_stats_forward),
        cmocka_unit_test(test_sga_stats_backward),
        cmocka_unit_test(test_sga_gate_input),
        cmocka_unit_test(test_sga_gate_input_backward),
        cmocka_unit_test(test_sga_fixed_gate),
        cmocka_unit_test(test_sga_gate_apply),
        cmocka_unit_test(test_sga_gate_backward),
        cmocka_unit_test(test_sga_blend_softmax_forward),
        cmocka_unit_test(test_sga_blend_backward),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
