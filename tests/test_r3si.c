// R3SI: the participation ratio against LAPACK's eigenvalues, randomized subspace iteration against
// the exact top-k subspace, gradient diversity and the threshold, finite-difference checks of the
// injection and L_SD through whole models, and causality with the injection on.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <cblas.h>
#include "gradcheck.h"
#include "lapack.h"
#include "model.h"
#include "r3si.h"
#include "r3si_math.h"

// C = Q diag(lambda) Q^T with a random orthogonal Q (D,D).
static double *psd_with_spectrum(int D, const double *lambda, uint64_t seed) {
    double *Q = malloc(sizeof(double) * D * D), *C = calloc((size_t)D * D, sizeof(double));
    for (int i = 0; i < D * D; i++) Q[i] = rng_normal(seed, 1, (uint64_t)i);
    // Gram-Schmidt on the columns
    for (int j = 0; j < D; j++) {
        for (int p = 0; p < j; p++) {
            double d = 0;
            for (int i = 0; i < D; i++) d += Q[i * D + j] * Q[i * D + p];
            for (int i = 0; i < D; i++) Q[i * D + j] -= d * Q[i * D + p];
        }
        double n = 0;
        for (int i = 0; i < D; i++) n += Q[i * D + j] * Q[i * D + j];
        for (int i = 0; i < D; i++) Q[i * D + j] /= sqrt(n);
    }
    for (int i = 0; i < D; i++)
        for (int j = 0; j < D; j++) {
            double acc = 0;
            for (int t = 0; t < D; t++) acc += Q[i * D + t] * lambda[t] * Q[j * D + t];
            C[i * D + j] = acc;
        }
    free(Q);
    return C;
}

static void eigen_full(const double *C, int D, double *w, double *vectors) {
    memcpy(vectors, C, sizeof(double) * D * D);
    int info, lwork = -1;
    double q;
    dsyev_("V", "U", &D, vectors, &D, w, &q, &lwork, &info, 1, 1);
    lwork = (int)q;
    double *work = malloc(sizeof(double) * lwork);
    dsyev_("V", "U", &D, vectors, &D, w, work, &lwork, &info, 1, 1);
    assert_int_equal(info, 0);
    free(work);
}

static void test_participation_ratio_matches_eigenvalues(void **state) {
    (void)state;
    int D = 40;
    double lambda[40];
    for (int i = 0; i < D; i++) lambda[i] = exp(-0.2 * i) + 0.01 * i;
    double *C = psd_with_spectrum(D, lambda, 3), *w = malloc(sizeof(double) * D), *vec = malloc(sizeof(double) * D * D);
    eigen_full(C, D, w, vec);
    double s = 0, s2 = 0;
    for (int i = 0; i < D; i++) { s += w[i]; s2 += w[i] * w[i]; }
    double pr = participation_ratio(C, D), ref = s * s / s2;
    printf("# PR %.12f, from eigenvalues %.12f\n", pr, ref);
    assert_true(fabs(pr - ref) <= 1e-6 * ref);
    // isotropic data has PR = D
    double iso[40];
    for (int i = 0; i < D; i++) iso[i] = 2.5;
    double *isotropic = psd_with_spectrum(D, iso, 4);
    assert_true(fabs(participation_ratio(isotropic, D) - D) < 1e-9 * D);
    free(C); free(w); free(vec); free(isotropic);
}

static void test_randomized_subspace_finds_top_k(void **state) {
    (void)state;
    int D = 96, k = 8;
    double lambda[96];
    for (int i = 0; i < D; i++) lambda[i] = i < k ? 100.0 - 5 * i : 1.0 / (1 + i);   // a gap after k
    double *C = psd_with_spectrum(D, lambda, 5);
    double *V = malloc(sizeof(double) * D * k), *ev = malloc(sizeof(double) * k);
    top_eigenvectors(C, D, k, 8, 2, 42, 7, V, ev);
    double *w = malloc(sizeof(double) * D), *vec = malloc(sizeof(double) * D * D);
    eigen_full(C, D, w, vec);   // column-major eigenvectors: vector j at vec + j D, ascending
    // M = V^T U_k (k,k); its singular values are the cosines of the principal angles.
    double M[64], MtM[64], s[8];
    for (int a = 0; a < k; a++)
        for (int b = 0; b < k; b++) {
            const double *u = vec + (size_t)(D - 1 - b) * D;
            double acc = 0;
            for (int i = 0; i < D; i++) acc += V[i * k + a] * u[i];
            M[a * k + b] = acc;
        }
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, k, k, 1, M, k, M, k, 0, MtM, k);
    double work[64];
    int info, lwork = 64;
    dsyev_("N", "U", &k, MtM, &k, s, work, &lwork, &info, 1, 1);
    double smallest_cos = sqrt(fmax(0, s[0]));
    double angle = acos(fmin(1.0, smallest_cos));
    printf("# largest principal angle %.3e rad; top eigenvalue %.6f (exact %.6f)\n", angle, ev[0], w[D - 1]);
    assert_true(angle < 1e-3);
    assert_true(fabs(ev[0] - w[D - 1]) < 1e-6 * w[D - 1]);
    // Same seed and stream: the same bits; another stream: another draw of the same subspace.
    double *V2 = malloc(sizeof(double) * D * k);
    top_eigenvectors(C, D, k, 8, 2, 42, 7, V2, NULL);
    assert_memory_equal(V, V2, sizeof(double) * D * k);
    free(C); free(V); free(V2); free(ev); free(w); free(vec);
}

static void test_threshold_follows_gradient_diversity(void **state) {
    (void)state;
    // Three heads: two identical, one orthogonal: cosines {1, 0, 0}, variance 2/9.
    double G[3 * 4] = {1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0};
    assert_true(fabs(head_gradient_diversity(G, 3, 4) - 2.0 / 9) < 1e-12);
    // Identical heads: every cosine 1, variance 0.
    double same[3 * 2] = {1, 2, 1, 2, 2, 4};
    assert_true(fabs(head_gradient_diversity(same, 3, 2)) < 1e-12);
    int D = 1000;
    double tau0 = 0.4 * D, ref = 2.0 / 9;
    assert_true(fabs(adaptive_tau(tau0, ref, ref, D) - tau0) < 1e-9);                 // at the reference: tau0
    assert_true(fabs(adaptive_tau(tau0, ref, ref / 1.21, D) - 0.44 * D) < 1e-9);       // less diversity: higher tau
    assert_true(fabs(adaptive_tau(tau0, ref, 4 * ref, D) - 0.25 * D) < 1e-9);          // more diversity: clamped low
    assert_true(fabs(adaptive_tau(tau0, ref, ref / 100, D) - 0.6 * D) < 1e-9);         // clamped high
}

// ---- whole models with R3SI ---------------------------------------------------------------------

enum { B = 2 };

typedef struct {
    Model m;
    Activations a;
    Config cfg;
} R3siModel;

static void build(R3siModel *x, const Backend *be, int inject, double lsd) {
    config_defaults(&x->cfg);
    Config *c = &x->cfg;
    c->n_layer = 3; c->n_head = 2; c->d_model = 8; c->seq_len = 5; c->vocab_size = 11; c->mlp_ratio = 2;
    c->init_std = 0.3; c->r3si_enabled = 1; c->r3si_n_layers = 2; c->r3si_layers[0] = 1; c->r3si_layers[1] = 2;
    c->r3si_k = 3; c->r3si_ds = 4; c->r3si_inject = inject; c->r3si_lsd_lambda = lsd;
    ModelShape s = model_shape_from_config(c);
    model_init(&x->m, be, s, 0, s.n_layer, 1, 1, 1);
    model_init_weights(&x->m, 21);
    R3si *r = model_hook_state(&x->m, &BLOCK_HOOK_R3SI);
    // Buffers as a monitor step would leave them: an orthonormal V, alpha > 0, tau above the rank.
    double lambda[8] = {9, 7, 5, 1, 0.5, 0.3, 0.2, 0.1};
    double *C = psd_with_spectrum(8, lambda, 6), *V = malloc(sizeof(double) * 8 * 3);
    top_eigenvectors(C, 8, 3, 5, 2, 1, 1, V, NULL);
    for (int i = 0; i < r->n_ckpt; i++) {
        be->upload_f64(r->V[i], V, 24);
        r->alpha[i] = 0.4 + 0.2 * i;
    }
    r->tau = 8;   // above any PR of an 8-wide stream: the hinge is active
    free(C); free(V);
    activations_init(&x->a, &x->m, B);
    // A training pass of one micro-batch at a step without monitoring: L_SD's scale is lambda.
    x->a.pass.step = (StepContext){.training = 1, .step = 1, .loss_scale = 1, .attn_temperature = 1, .micro_batches = 1};
}

static void load(R3siModel *x, const int32_t *tokens) {
    int32_t tok[B * 5], targets[B * 5];
    for (int i = 0; i < B * 5; i++) {
        tok[i] = tokens ? tokens[i] : (int32_t)(rng_hash3(5, 1, (uint64_t)i) % 11);
        targets[i] = (int32_t)(rng_hash3(5, 2, (uint64_t)i) % 11);
    }
    x->m.be->upload_i32(x->a.tokens, tok, B * 5);
    x->m.be->upload_i32(x->a.targets, targets, B * 5);
}

static double total_loss(R3siModel *x, double dloss) {
    model_forward(&x->m, &x->a);
    return model_loss_sum(&x->m, &x->a) * dloss + model_aux_weight(&x->m, AUX_LSD, &x->a.pass.step) * x->a.aux[AUX_LSD];
}

static double check(int inject, double lsd) {
    R3siModel x32, x64;
    build(&x32, backend_cpu_f32(), inject, lsd);
    build(&x64, backend_cpu_f64(), inject, lsd);
    load(&x32, NULL);
    load(&x64, NULL);
    double dloss = 1.0 / 10, worst = 0, h = 1e-5;
    total_loss(&x32, dloss);
    model_backward(&x32.m, &x32.a, dloss, NULL, NULL);
    double *grads = malloc(x32.m.num_params * sizeof(double)), *host = malloc(x64.m.num_params * sizeof(double));
    x32.m.be->download_f64(grads, x32.m.grads_mem, x32.m.num_params);
    x64.m.be->download_f64(host, x64.m.params_mem, x64.m.num_params);
    for (int id = 0; id < x64.m.n_params; id++) {
        const ParamInfo *p = &x64.m.params[id];
        if (!p->present) continue;
        double num = 0, den = 0;
        int samples = p->numel < 20 ? (int)p->numel : 20;
        for (int k = 0; k < samples; k++) {
            size_t pick = p->numel <= 20 ? (size_t)k : rng_hash3(7, (uint64_t)id, (uint64_t)k) % p->numel;
            // Block tensors: the layer of the slice (W_s has slices at the checkpoint layers only).
            int layer = 0;
            for (size_t slice = pick / p->slice_numel, l = 0; p->role == ROLE_BLOCK && l < (size_t)x64.m.shape.n_layer; l++)
                if (param_in_layer(p, (int)l) && slice-- == 0) { layer = (int)l; break; }
            size_t e = model_param_offset(&x64.m, id, layer) + pick % p->slice_numel;
            double saved = host[e], v;
            v = saved + h; x64.m.be->upload_f64(be_offset(x64.m.be, x64.m.params_mem, e), &v, 1);
            double lp = total_loss(&x64, dloss);
            v = saved - h; x64.m.be->upload_f64(be_offset(x64.m.be, x64.m.params_mem, e), &v, 1);
            double lm = total_loss(&x64, dloss);
            x64.m.be->upload_f64(be_offset(x64.m.be, x64.m.params_mem, e), &saved, 1);
            double fd = (lp - lm) / (2 * h);
            num += (grads[e] - fd) * (grads[e] - fd);
            den += fd * fd;
        }
        double rel = den > 0 ? sqrt(num / den) : sqrt(num);
        printf("# inject %d lsd %.2f %-18s rel err %.3e (|g_fd| %.3e)\n", inject, lsd, p->name, rel, sqrt(den));
        assert_true(den > 0);
        if (!(rel <= worst)) worst = rel;
    }
    free(grads); free(host);
    activations_free(&x32.a, &x32.m); activations_free(&x64.a, &x64.m);
    model_free(&x32.m); model_free(&x64.m);
    return worst;
}

static void test_injection_gradients(void **state) { (void)state; assert_true(check(1, 0) < 1e-3); }
static void test_lsd_gradients(void **state) { (void)state; assert_true(check(0, 0.3) < 1e-3); }
static void test_injection_and_lsd_gradients(void **state) { (void)state; assert_true(check(1, 0.3) < 1e-3); }

static void test_injection_is_causal(void **state) {
    (void)state;
    R3siModel x;
    build(&x, backend_cpu_f32(), 1, 0);
    int32_t tokens[B * 5];
    for (int i = 0; i < B * 5; i++) tokens[i] = (int32_t)(rng_hash3(9, 9, (uint64_t)i) % 11);
    size_t n = (size_t)B * 5 * 11;
    float *before = malloc(n * sizeof(float)), *after = malloc(n * sizeof(float));
    load(&x, tokens);
    model_forward(&x.m, &x.a);
    x.m.be->download(before, x.a.logits, n);
    tokens[3] = (tokens[3] + 1) % 11;
    load(&x, tokens);
    model_forward(&x.m, &x.a);
    x.m.be->download(after, x.a.logits, n);
    assert_memory_equal(before, after, 3 * 11 * sizeof(float));
    assert_true(memcmp(before + 33, after + 33, 11 * sizeof(float)) != 0);
    free(before); free(after);
    activations_free(&x.a, &x.m);
    model_free(&x.m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_participation_ratio_matches_eigenvalues),
        cmocka_unit_test(test_randomized_subspace_finds_top_k),
        cmocka_unit_test(test_threshold_follows_gradient_diversity),
        cmocka_unit_test(test_injection_gradients),
        cmocka_unit_test(test_lsd_gradients),
        cmocka_unit_test(test_injection_and_lsd_gradients),
        cmocka_unit_test(test_injection_is_causal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
