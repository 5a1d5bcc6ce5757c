// The whole model's backward pass (fp32) against central differences of its loss computed by the
// same model code on the fp64 CPU backend, for every parameter tensor, pre- and post-norm, tied
// and untied LM head.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include "gradcheck.h"
#include "model.h"
#include "model_gradcheck.h"

static ModelShape tiny_shape(NormPlacement norm, int tied) {
    ModelShape s = {.n_layer = 2, .n_head = 2, .d_model = 8, .head_size = 4, .seq_len = 5, .vocab_size = 11,
                    .mlp_hidden = 16, .norm = norm, .tie_embeddings = tied, .init_std = 0.3, .scaled_init = 1};
    return s;
}

enum { B = 2 };

static void load_batch(const Model *m, Activations *a) {
    int T = m->shape.seq_len, V = m->shape.vocab_size;
    int32_t tokens[B * 5], targets[B * 5];
    for (int i = 0; i < B * T; i++) {
        tokens[i] = (int32_t)(rng_hash3(5, 1, (uint64_t)i) % (uint64_t)V);
        targets[i] = i % 4 == 1 ? -1 : (int32_t)(rng_hash3(5, 2, (uint64_t)i) % (uint64_t)V);  // some positions unscored
    }
    m->be->upload_i32(a->tokens, tokens, (size_t)B * T);
    m->be->upload_i32(a->targets, targets, (size_t)B * T);
}

static double check_model(NormPlacement norm, int tied) {
    ModelShape s = tiny_shape(norm, tied);
    Model m32, m64;
    Activations a32, a64;
    model_init(&m32, backend_cpu_f32(), s, 0, s.n_layer, 1, 1, 1);
    model_init(&m64, backend_cpu_f64(), s, 0, s.n_layer, 1, 1, 1);
    model_init_weights(&m32, 42);
    model_init_weights(&m64, 42);
    // Non-trivial LayerNorm and bias values, so that their gradients are exercised too.
    double *host = malloc(m64.num_params * sizeof(double));
    m64.be->download_f64(host, m64.params_mem, m64.num_params);
    for (size_t i = 0; i < m64.num_params; i++) host[i] += (double)(float)(0.1 * rng_normal(6, 0, i));
    m64.be->upload_f64(m64.params_mem, host, m64.num_params);
    m32.be->upload_f64(m32.params_mem, host, m32.num_params);
    activations_init(&a32, &m32, B);
    activations_init(&a64, &m64, B);
    load_batch(&m32, &a32);
    load_batch(&m64, &a64);
    double dloss = 1.0 / 7.0;

    model_forward(&m32, &a32);
    model_backward(&m32, &a32, dloss, NULL, NULL);
    double *grads = malloc(m32.num_params * sizeof(double));
    m32.be->download_f64(grads, m32.grads_mem, m32.num_params);

    char label[32];
    snprintf(label, sizeof label, "%s %s", norm == NORM_PRE ? "pre" : "post", tied ? "tied" : "untied");
    double worst = model_fd_worst(&m64, &a64, host, grads, dloss, 24, 7, label, 1);
    free(host); free(grads);
    activations_free(&a32, &m32); activations_free(&a64, &m64);
    model_free(&m32); model_free(&m64);
    return worst;
}

static void test_prenorm_tied_model_gradients_match_finite_differences(void **state) {
    (void)state;
    assert_true(check_model(NORM_PRE, 1) < 1e-3);
}

static void test_postnorm_untied_model_gradients_match_finite_differences(void **state) {
    (void)state;
    assert_true(check_model(NORM_POST, 0) < 1e-3);
}

// Changing a future token must not change the loss at earlier positions (causal mask).
static void test_model_is_causal(void **state) {
    (void)state;
    ModelShape s = tiny_shape(NORM_PRE, 1);
    Model m;
    Activations a;
    model_init(&m, backend_cpu_f32(), s, 0, s.n_layer, 1, 1, 1);
    model_init_weights(&m, 3);
    activations_init(&a, &m, 1);
    int32_t tokens[5] = {1, 2, 3, 4, 5}, targets[5] = {2, 3, 4, 5, 6};
    float before[5], after[5];
    m.be->upload_i32(a.tokens, tokens, 5);
    m.be->upload_i32(a.targets, targets, 5);
    model_forward(&m, &a);
    m.be->download(before, a.losses, 5);
    tokens[3] = 9;
    m.be->upload_i32(a.tokens, tokens, 5);
    model_forward(&m, &a);
    m.be->download(after, a.losses, 5);
    for (int t = 0; t < 3; t++) assert_true(memcmp(&before[t], &after[t], sizeof(float)) == 0);
    assert_true(before[3] != after[3]);
    activations_free(&a, &m);
    model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prenorm_tied_model_gradients_match_finite_differences),
        cmocka_unit_test(test_postnorm_untied_model_gradients_match_finite_differences),
        cmocka_unit_test(test_model_is_causal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
