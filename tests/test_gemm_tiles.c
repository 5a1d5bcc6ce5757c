// test_gemm_tiles: the fp32 CPU backend's products in tiles (src/cpu/gemm_tiles.inc) give bitwise
// the same numbers on 1 and on 2 threads, and stay within fp32's rounding of one untiled
// single-thread cblas_sgemm call. Not bitwise that call's: OpenBLAS's kernels treat the edge rows
// and columns of a call apart (with 144-column tiles the last 8 columns of each differed in the
// last bit; with 128-row tiles of a 2048-row product, rows too), which is why the tiles are a
// function of the shape alone. Shapes are cut in many tiles both ways, with every transposition,
// beta 0 and 1, a bias seeded by the tiles, and the bias gradient's column sums (bitwise: rows in
// order) run next to the products.
#include <math.h>
#include <omp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#include <cmocka.h>
#include "backend.h"
#include "common.h"

// Deterministic values in [-1, 1) with 24 significant bits spread over the exponent range of a
// trained model's weights, so that rounding differs wherever the order of additions does.
static float *filled(size_t n, uint32_t seed) {
    float *x = xmalloc(sizeof(float) * (n ? n : 1));
    uint32_t s = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = ((float)(s >> 8) / 16777216.0f * 2.0f - 1.0f) * (1.0f + (float)(i % 7) * 0.37f);
    }
    return x;
}

// The reference: the whole product in one call of OpenBLAS's single-thread driver.
static void reference_gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                           int ldb, float beta, float *C, int ldc) {
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B,
                ldb, beta, C, ldc);
    omp_set_num_threads(threads);
}

// |got - want| <= 2 K u (K |a| |b| + |c|) per element, the rounding of a K-term fp32 dot product
// added to c, with the operands' largest magnitudes (every value filled() makes is below 3.3).
static void assert_within_rounding(const float *got, const float *want, size_t n, int K, const char *what) {
    double bound = 2.0 * K * ldexp(1.0, -24) * (K * 3.3 * 3.3 + 3.3);
    for (size_t i = 0; i < n; i++)
        if (fabs((double)got[i] - (double)want[i]) > bound)
            fail_msg("%s: element %zu off by %g (bound %g)", what, i, fabs((double)got[i] - (double)want[i]), bound);
}

// be->gemm on 1 and on 2 threads against each other and against the reference, for one shape and
// transposition.
static void check_gemm(int ta, int tb, int M, int N, int K, float beta) {
    const Backend *be = backend_cpu_f32();
    int lda = ta ? M : K, ldb = tb ? K : N;
    size_t n = (size_t)M * N;
    float *A = filled((size_t)M * K, 1), *B = filled((size_t)K * N, 2), *C0 = filled(n, 3);
    float *want = xmalloc(sizeof(float) * n), *got[2] = {be->alloc(n), be->alloc(n)};
    memcpy(want, C0, sizeof(float) * n);
    reference_gemm(ta, tb, M, N, K, 0.75f, A, lda, B, ldb, beta, want, N);
    for (int threads = 1; threads <= 2; threads++) {
        omp_set_num_threads(threads);
        memcpy(got[threads - 1], C0, sizeof(float) * n);
        be->gemm(ta, tb, M, N, K, 0.75, A, lda, B, ldb, beta, got[threads - 1], N);
    }
    if (memcmp(got[0], got[1], sizeof(float) * n))
        fail_msg("gemm ta=%d tb=%d M=%d N=%d K=%d beta=%g: 1 and 2 threads differ", ta, tb, M, N, K, beta);
    char what[96];
    snprintf(what, sizeof what, "gemm ta=%d tb=%d M=%d N=%d K=%d beta=%g", ta, tb, M, N, K, beta);
    assert_within_rounding(got[0], want, n, K, what);
    be->free(got[0]); be->free(got[1]);
    free(want); free(C0); free(B); free(A);
}

// Tall (cut along rows), wide (cut along columns), and one tile, in every transposition.
static void test_products_in_tiles_match_one_call(void **state) {
    (void)state;
    const int shapes[][3] = {{1040, 96, 200}, {96, 1300, 333}, {130, 70, 50}, {2048, 512, 64}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                check_gemm(ta, tb, shapes[i][0], shapes[i][1], shapes[i][2], 0.0f);
                check_gemm(ta, tb, shapes[i][0], shapes[i][1], shapes[i][2], 1.0f);
            }
}

// matmul_forward (bias seeded per tile) and matmul_backward (two products and the bias's column
// sums in one region) against the reference products (within fp32 rounding, the same on 1 and 2
// threads) and rows summed in order (bitwise).
static void test_matmul_in_tiles_equals_one_call(void **state) {
    (void)state;
    const Backend *be = backend_cpu_f32();
    const int N = 1100, C = 160, OC = 700;
    float *inp = filled((size_t)N * C, 4), *w = filled((size_t)OC * C, 5), *bias = filled(OC, 6), *dout = filled((size_t)N * OC, 7);
    float *dinp0 = filled((size_t)N * C, 8), *dw0 = filled((size_t)OC * C, 9), *db0 = filled(OC, 10);
    // The references: out = bias + inp w^T; dinp += dout w; dw += dout^T inp; db += rows of dout in order.
    float *out_want = xmalloc(sizeof(float) * N * OC), *dinp_want = xmalloc(sizeof(float) * N * C);
    float *dw_want = xmalloc(sizeof(float) * OC * C), *db_want = xmalloc(sizeof(float) * OC);
    for (int i = 0; i < N; i++) memcpy(out_want + (size_t)i * OC, bias, sizeof(float) * OC);
    reference_gemm(0, 1, N, OC, C, 1, inp, C, w, C, 1, out_want, OC);
    memcpy(dinp_want, dinp0, sizeof(float) * N * C);
    reference_gemm(0, 0, N, C, OC, 1, dout, OC, w, C, 1, dinp_want, C);
    memcpy(dw_want, dw0, sizeof(float) * OC * C);
    reference_gemm(1, 0, OC, C, N, 1, dout, OC, inp, C, 1, dw_want, C);
    memcpy(db_want, db0, sizeof(float) * OC);
    for (int i = 0; i < N; i++)
        for (int o = 0; o < OC; o++) db_want[o] += dout[(size_t)i * OC + o];
    float *out[2], *dinp[2], *dw[2], *db[2];
    for (int threads = 1; threads <= 2; threads++) {
        int t = threads - 1;
        omp_set_num_threads(threads);
        out[t] = be->alloc((size_t)N * OC);
        dinp[t] = be->alloc((size_t)N * C);
        dw[t] = be->alloc((size_t)OC * C);
        db[t] = be->alloc(OC);
        be->matmul_forward(out[t], inp, w, bias, N, C, OC);
        memcpy(dinp[t], dinp0, sizeof(float) * N * C);
        memcpy(dw[t], dw0, sizeof(float) * OC * C);
        memcpy(db[t], db0, sizeof(float) * OC);
        be->matmul_backward(dinp[t], GRAD_ACCUMULATE, dw[t], db[t], dout, inp, w, N, C, OC);
    }
    if (memcmp(out[0], out[1], sizeof(float) * N * OC)) fail_msg("matmul_forward: 1 and 2 threads differ");
    if (memcmp(dinp[0], dinp[1], sizeof(float) * N * C)) fail_msg("matmul_backward dinp: 1 and 2 threads differ");
    if (memcmp(dw[0], dw[1], sizeof(float) * OC * C)) fail_msg("matmul_backward dweight: 1 and 2 threads differ");
    if (memcmp(db[0], db_want, sizeof(float) * OC) || memcmp(db[1], db_want, sizeof(float) * OC))
        fail_msg("matmul_backward dbias differs from the rows of dout summed in order");
    // The products' bound as in check_gemm, with |inp|, |w|, |dout| < 3.3 and K the summed length.
    assert_within_rounding(out[0], out_want, (size_t)N * OC, C, "matmul_forward");
    assert_within_rounding(dinp[0], dinp_want, (size_t)N * C, OC, "matmul_backward dinp");
    assert_within_rounding(dw[0], dw_want, (size_t)OC * C, N, "matmul_backward dweight");
    for (int t = 0; t < 2; t++) { be->free(out[t]); be->free(dinp[t]); be->free(dw[t]); be->free(db[t]); }
    free(out_want); free(dinp_want); free(dw_want); free(db_want);
    free(inp); free(w); free(bias); free(dout); free(dinp0); free(dw0); free(db0);
}

// GELU in double, the tanh form GELU's definition uses (the backends use its sigmoid form).
static double gelu_reference(double x) { return 0.5 * x * (1 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }

static double gelu_slope_reference(double x) {
    double u = 0.7978845608028654 * (x + 0.044715 * x * x * x), th = tanh(u);
    return 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * 0.7978845608028654 * (1 + 3 * 0.044715 * x * x);
}

// The GELU epilogues of matmul_gelu_forward and matmul_backward_gelu reach every element of every
// tile, cut along rows (tall) and along columns (wide): with pre the plain matmul's output, act is
// GELU(pre) within 4e-7 relative of double, slope GELU'(pre) and dpre slope times the plain
// backward's dinp within 3e-6 (the slope's 1 - s loses bits where s nears 1); dweight and dbias are
// bitwise the plain backward's; all the same on 1 and 2 threads. The inputs are scaled so that the
// pre-activations span both tails.
static void check_gelu_mlp(int N, int C, int H) {
    const Backend *be = backend_cpu_f32();
    size_t nh = (size_t)N * H;
    float *x = filled((size_t)N * C, 11), *w1 = filled((size_t)H * C, 12), *b1 = filled(H, 13);
    float *w2 = filled((size_t)C * H, 14), *dout = filled((size_t)N * C, 15);
    for (size_t i = 0; i < (size_t)H * C; i++) w1[i] *= 1.5f / sqrtf((float)C);
    float *plain = be->alloc(nh), *dplain = be->alloc(nh), *dw_plain = be->alloc((size_t)C * H), *db_plain = be->alloc(C);
    be->matmul_forward(plain, x, w1, b1, N, C, H);
    be->matmul_backward(dplain, GRAD_ASSIGN, dw_plain, db_plain, dout, plain, w2, N, H, C);
    float *slope[2], *act[2], *dpre[2];
    for (int threads = 1; threads <= 2; threads++) {
        int t = threads - 1;
        omp_set_num_threads(threads);
        slope[t] = be->alloc(nh); act[t] = be->alloc(nh); dpre[t] = be->alloc(nh);
        float *dw = be->alloc((size_t)C * H), *db = be->alloc(C);
        be->matmul_gelu_forward(slope[t], act[t], x, w1, b1, N, C, H);
        // inp = plain here, so that dweight can be compared with the plain backward's.
        be->matmul_backward_gelu(dpre[t], dw, db, dout, plain, w2, slope[t], N, H, C);
        if (memcmp(dw, dw_plain, sizeof(float) * C * H) || memcmp(db, db_plain, sizeof(float) * C))
            fail_msg("matmul_backward_gelu N=%d H=%d: dweight or dbias differs from matmul_backward's", N, H);
        be->free(dw); be->free(db);
    }
    if (memcmp(slope[0], slope[1], sizeof(float) * nh) || memcmp(act[0], act[1], sizeof(float) * nh) ||
        memcmp(dpre[0], dpre[1], sizeof(float) * nh))
        fail_msg("GELU MLP N=%d H=%d: 1 and 2 threads differ", N, H);
    int tails = 0;
    for (size_t i = 0; i < nh; i++) {
        double p = plain[i], act_want = gelu_reference(p), slope_want = gelu_slope_reference(p), dpre_want = slope_want * dplain[i];
        if (fabs(act[0][i] - act_want) > 4e-7 * (1 + fabs(act_want)))
            fail_msg("matmul_gelu_forward N=%d H=%d: act[%zu] = %.9g, gelu(%.9g) = %.9g", N, H, i, act[0][i], p, act_want);
        if (fabs(slope[0][i] - slope_want) > 3e-6 * (1 + fabs(slope_want)))
            fail_msg("matmul_gelu_forward N=%d H=%d: slope[%zu] = %.9g, gelu'(%.9g) = %.9g", N, H, i, slope[0][i], p, slope_want);
        if (fabs(dpre[0][i] - dpre_want) > 3e-6 * (1 + fabs(dpre_want)))
            fail_msg("matmul_backward_gelu N=%d H=%d: dpre[%zu] = %.9g, want %.9g", N, H, i, dpre[0][i], dpre_want);
        tails += fabs(p) > 3;
    }
    assert_true(tails > 0);
    for (int t = 0; t < 2; t++) { be->free(slope[t]); be->free(act[t]); be->free(dpre[t]); }
    be->free(plain); be->free(dplain); be->free(dw_plain); be->free(db_plain);
    free(x); free(w1); free(b1); free(w2); free(dout);
}

static void test_gelu_epilogues_cover_every_tile(void **state) {
    (void)state;
    check_gelu_mlp(1100, 96, 700);   // the products cut along rows
    check_gelu_mlp(96, 64, 1300);    // along columns
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_products_in_tiles_match_one_call),
        cmocka_unit_test(test_matmul_in_tiles_equals_one_call),
        cmocka_unit_test(test_gelu_epilogues_cover_every_tile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
