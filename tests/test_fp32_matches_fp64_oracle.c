// test_fp32_matches_fp64_oracle: the fp32 results of whatever OpenBLAS kernels this process runs
// against fp64 oracles (issue 21: every kernel selection must give the same results within fp32's
// tolerance). The process starts as entrank does (thread_policy_apply: the kernels entrank would
// choose, or the environment's OPENBLAS_CORETYPE when the CPU supports it) and prints the kernels'
// line, so that tests/test_blas_kernels.py can run it under every core type this CPU supports
// (`--core-types` prints the table it takes them from).
//  - cblas_sgemm in every transposition and layout, odd sizes, alpha and beta, against a
//    double-precision triple loop: |error| within 2 K u (|alpha| |A||B| + |beta| |C|), u = 2^-24
//    (the classic bound of a K-term fp32 dot product, any summation order).
//  - One forward and backward pass of a small decoder (GEMMs large enough for OpenBLAS's blocked
//    kernels) on the fp32 backend against the same model, same parameters, on the fp64 backend:
//    loss within relative 1e-6, every parameter tensor's gradient within relative L2 error 1e-5.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#include <cmocka.h>
#include "backend.h"
#include "blas_kernels.h"
#include "cpu_kernels.h"
#include "model.h"
#include "rng.h"
#include "thread_policy.h"

#define LOSS_TOL 1e-6
#define GRAD_TOL 1e-5

static float uniform(uint64_t stream, uint64_t i) {
    return (float)((double)(rng_hash3(17, stream, i) >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

// Element (i, j) of a matrix stored with leading dimension ld in `layout`.
static size_t at(CBLAS_ORDER layout, size_t i, size_t j, size_t ld) {
    return layout == CblasRowMajor ? i * ld + j : j * ld + i;
}

// C = alpha op(A) op(B) + beta C for one shape, every layout and transposition; returns the worst
// ratio of the error to its bound.
static double sgemm_worst(int M, int N, int K) {
    const CBLAS_ORDER layouts[] = {CblasRowMajor, CblasColMajor};
    const CBLAS_TRANSPOSE trans[] = {CblasNoTrans, CblasTrans};
    const float alpha = 0.75f, beta = -0.5f;
    double worst = 0;
    for (int l = 0; l < 2; l++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                CBLAS_ORDER o = layouts[l];
                // op(A) is M x K: stored as M x K, or K x M when transposed; leading dimensions with padding.
                int ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
                size_t lda = (size_t)(o == CblasRowMajor ? ac : ar) + 3, ldb = (size_t)(o == CblasRowMajor ? bc : br) + 1,
                       ldc = (size_t)(o == CblasRowMajor ? N : M) + 2;
                size_t na = lda * (size_t)(o == CblasRowMajor ? ar : ac), nb = ldb * (size_t)(o == CblasRowMajor ? br : bc),
                       nc = ldc * (size_t)(o == CblasRowMajor ? M : N);
                float *a = malloc(na * sizeof(float)), *b = malloc(nb * sizeof(float)), *c = malloc(nc * sizeof(float));
                float *c0 = malloc(nc * sizeof(float));
                assert_non_null(a); assert_non_null(b); assert_non_null(c); assert_non_null(c0);
                for (size_t i = 0; i < na; i++) a[i] = uniform(1, i);
                for (size_t i = 0; i < nb; i++) b[i] = uniform(2, i);
                for (size_t i = 0; i < nc; i++) c[i] = c0[i] = uniform(3, i);
                cblas_sgemm(o, trans[ta], trans[tb], M, N, K, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++) {
                        double exact = 0, magnitude = 0;
                        for (int k = 0; k < K; k++) {
                            double x = a[ta ? at(o, k, i, lda) : at(o, i, k, lda)], y = b[tb ? at(o, j, k, ldb) : at(o, k, j, ldb)];
                            exact += x * y;
                            magnitude += fabs(x * y);
                        }
                        double cij = c0[at(o, i, j, ldc)];
                        exact = alpha * exact + beta * cij;
                        double bound = 2.0 * (K + 2) * 0x1p-24 * (fabs(alpha) * magnitude + fabs(beta) * fabs(cij)) + 1e-30;
                        double ratio = fabs(c[at(o, i, j, ldc)] - exact) / bound;
                        if (!(ratio <= worst)) worst = ratio;   // a NaN result counts as the worst
                    }
                // Outside the matrix (the padding of ldc) nothing may be written.
                for (int j = 0; j < (o == CblasRowMajor ? M : N); j++)
                    for (size_t p = (size_t)(o == CblasRowMajor ? N : M); p < ldc; p++)
                        assert_true(c[(size_t)j * ldc + p] == c0[(size_t)j * ldc + p]);
                free(a); free(b); free(c); free(c0);
            }
    return worst;
}

static void test_sgemm_within_fp32_bound_of_fp64(void **state) {
    (void)state;
    const int shapes[][3] = {{1, 1, 1}, {7, 5, 3}, {16, 16, 16}, {33, 17, 65}, {64, 96, 128}, {129, 67, 257}, {250, 190, 300}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        double worst = sgemm_worst(shapes[s][0], shapes[s][1], shapes[s][2]);
        printf("# sgemm %4d x %4d x %4d: worst error %.3f of the bound\n", shapes[s][0], shapes[s][1], shapes[s][2], worst);
        assert_true(worst <= 1.0);
    }
}

enum { BATCH = 4 };

static ModelShape oracle_shape(NormPlacement norm, int tied) {
    ModelShape s = {.n_layer = 2, .n_head = 4, .d_model = 64, .head_size = 16, .seq_len = 32, .vocab_size = 97,
                    .mlp_hidden = 256, .norm = norm, .tie_embeddings = tied, .init_std = 0.05, .scaled_init = 1};
    return s;
}

static void load_batch(const Model *m, Activations *a) {
    int T = m->shape.seq_len, V = m->shape.vocab_size;
    int32_t *tokens = malloc(sizeof(int32_t) * BATCH * T), *targets = malloc(sizeof(int32_t) * BATCH * T);
    assert_non_null(tokens); assert_non_null(targets);
    for (int i = 0; i < BATCH * T; i++) {
        tokens[i] = (int32_t)(rng_hash3(21, 1, (uint64_t)i) % (uint64_t)V);
        targets[i] = (int32_t)(rng_hash3(21, 2, (uint64_t)i) % (uint64_t)V);
    }
    m->be->upload_i32(a->tokens, tokens, (size_t)BATCH * T);
    m->be->upload_i32(a->targets, targets, (size_t)BATCH * T);
    free(tokens); free(targets);
}

// One forward and backward pass; the loss, and the gradients in fp64 (host memory, arena layout).
static double pass(Model *m, double *grads) {
    Activations a;
    activations_init(&a, m, BATCH);
    load_batch(m, &a);
    double dloss = 1.0 / (BATCH * m->shape.seq_len);
    model_forward(m, &a);
    double loss = model_loss_sum(m, &a) * dloss;
    model_backward(m, &a, dloss, NULL, NULL);
    m->be->download_f64(grads, m->grads_mem, m->num_params);
    activations_free(&a, m);
    return loss;
}

static void check_model(NormPlacement norm, int tied) {
    ModelShape s = oracle_shape(norm, tied);
    Model m32, m64;
    model_init(&m32, backend_cpu_f32(), s, 0, s.n_layer, 1, 1, 1);
    model_init(&m64, backend_cpu_f64(), s, 0, s.n_layer, 1, 1, 1);
    model_init_weights(&m64, 5);
    // The same parameters in both, exactly representable in fp32.
    double *params = malloc(m64.num_params * sizeof(double));
    assert_non_null(params);
    m64.be->download_f64(params, m64.params_mem, m64.num_params);
    for (size_t i = 0; i < m64.num_params; i++) params[i] = (double)(float)(params[i] + 0.02 * rng_normal(22, 0, i));
    m64.be->upload_f64(m64.params_mem, params, m64.num_params);
    m32.be->upload_f64(m32.params_mem, params, m32.num_params);
    double *g32 = malloc(m32.num_params * sizeof(double)), *g64 = malloc(m64.num_params * sizeof(double));
    assert_non_null(g32); assert_non_null(g64);
    double loss32 = pass(&m32, g32), loss64 = pass(&m64, g64);
    double loss_rel = fabs(loss32 - loss64) / fabs(loss64);
    const char *label = norm == NORM_PRE ? (tied ? "pre tied" : "pre untied") : (tied ? "post tied" : "post untied");
    printf("# %-11s loss fp32 %.9f fp64 %.9f: relative error %.2e (tolerance %.0e)\n", label, loss32, loss64, loss_rel, LOSS_TOL);
    assert_true(loss_rel <= LOSS_TOL);
    double worst = 0;
    for (int id = 0; id < m64.n_params; id++) {
        const ParamInfo *p = &m64.params[id];
        if (!p->present) continue;
        double num = 0, den = 0;
        for (int layer = 0; layer < (p->role == ROLE_BLOCK ? s.n_layer : 1); layer++) {
            size_t off = model_param_offset(&m64, id, layer);
            assert_int_equal(off, model_param_offset(&m32, id, layer));
            for (size_t k = 0; k < p->slice_numel; k++) {
                double d = g32[off + k] - g64[off + k];
                num += d * d;
                den += g64[off + k] * g64[off + k];
            }
        }
        double rel = den > 0 ? sqrt(num / den) : sqrt(num);
        if (!(rel <= worst)) worst = rel;
        if (!(rel <= GRAD_TOL)) printf("# %-11s %-18s gradient relative error %.2e\n", label, p->name, rel);
    }
    printf("# %-11s worst gradient tensor: relative L2 error %.2e (tolerance %.0e)\n", label, worst, GRAD_TOL);
    assert_true(worst <= GRAD_TOL);
    free(params); free(g32); free(g64);
    model_free(&m32); model_free(&m64);
}

static void test_prenorm_tied_model_fp32_matches_fp64(void **state) {
    (void)state;
    check_model(NORM_PRE, 1);
}

static void test_postnorm_untied_model_fp32_matches_fp64(void **state) {
    (void)state;
    check_model(NORM_POST, 0);
}

// For tests/test_blas_kernels.py: src/cpu_kernels.c's table, one "core-type NAME: FEATURES" line
// per type, and this CPU's usable features, so that the Python tests use the one table.
static int print_core_types(void) {
    size_t n;
    const CoreType *t = core_types(&n);
    char names[256];
    for (size_t i = 0; i < n; i++) {
        cpu_features_format(t[i].requires, names, sizeof names);
        printf("core-type %s: %s\n", t[i].name, names);
    }
    CpuView cpu;
    Error err = {{0}};
    if (cpu_view_read(&cpu, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 2;
    }
    cpu_features_format(cpu.usable, names, sizeof names);
    printf("cpu: %s\n", names);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && !strcmp(argv[1], "--core-types")) return print_core_types();
    // The kernels entrank runs: the same execution at start as the trainer's.
    thread_policy_apply(argv);
    char line[2048];
    blas_kernels_describe(line, sizeof line);
    printf("# %s\n# OpenBLAS kernels: %s\n", line, blas_kernels_running());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sgemm_within_fp32_bound_of_fp64),
        cmocka_unit_test(test_prenorm_tied_model_fp32_matches_fp64),
        cmocka_unit_test(test_postnorm_untied_model_fp32_matches_fp64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
