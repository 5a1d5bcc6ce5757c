// The head_scale attention variant (src/attn_head_scale.c), the interface's smallest example: a
// learned scale per head on the logits. Its whole model against central differences (fp64
// reference), causality and batch independence, and scale 1 equals SDPA.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <string.h>
#include "gradcheck.h"
#include "model.h"
#include "model_gradcheck.h"

enum { B = 2, T = 6, V = 11 };

static ModelShape head_scale_shape(const AttentionVariant *variant) {
    ModelShape s = {.n_layer = 2, .n_head = 3, .d_model = 9, .head_size = 3, .seq_len = T, .vocab_size = V,
                    .mlp_hidden = 12, .norm = NORM_PRE, .tie_embeddings = 1, .init_std = 0.4, .scaled_init = 1,
                    .attention = variant};
    return s;
}

static void load_batch(const Model *m, Activations *a, const int32_t *tokens) {
    int32_t tok[B * T], targets[B * T];
    for (int i = 0; i < B * T; i++) {
        tok[i] = tokens ? tokens[i] : (int32_t)(rng_hash3(5, 1, (uint64_t)i) % V);
        targets[i] = (int32_t)(rng_hash3(5, 2, (uint64_t)i) % V);
    }
    m->be->upload_i32(a->tokens, tok, B * T);
    m->be->upload_i32(a->targets, targets, B * T);
}

// Scales away from 1, different per head and layer, so that their gradients are exercised.
static void spread_scales(Model *m) {
    int id = model_find_param(m, "blocks.head_scale");
    assert_true(id >= 0);
    for (int l = 0; l < m->shape.n_layer; l++) {
        double scale[3] = {0.5 + 0.3 * l, 1.4, 2.0 - 0.2 * l};
        m->be->upload_f64(model_param(m, id, l), scale, 3);
    }
}

static void test_variant_is_in_the_table(void **state) {
    (void)state;
    assert_ptr_equal(attention_variant_find("head_scale"), &ATTENTION_HEAD_SCALE);
    int found = 0;
    for (const char *const *name = attention_variant_names(); *name; name++) found += !strcmp(*name, "head_scale");
    assert_int_equal(found, 1);
    ModelShape s = head_scale_shape(&ATTENTION_HEAD_SCALE);
    assert_int_equal(model_count_params(&s).attention_variant, 2 * 3);   // one scale per head and layer
}

static void test_head_scale_gradients_match_finite_differences(void **state) {
    (void)state;
    ModelShape s = head_scale_shape(&ATTENTION_HEAD_SCALE);
    Model m32, m64;
    Activations a32, a64;
    model_init(&m32, backend_cpu_f32(), s, 0, s.n_layer, 1, 1, 1);
    model_init(&m64, backend_cpu_f64(), s, 0, s.n_layer, 1, 1, 1);
    model_init_weights(&m64, 17);
    spread_scales(&m64);
    double *host = malloc(m64.num_params * sizeof(double));
    m64.be->download_f64(host, m64.params_mem, m64.num_params);
    m32.be->upload_f64(m32.params_mem, host, m32.num_params);
    activations_init(&a32, &m32, B);
    activations_init(&a64, &m64, B);
    load_batch(&m32, &a32, NULL);
    load_batch(&m64, &a64, NULL);
    double dloss = 1.0 / 12;
    model_forward(&m32, &a32);
    model_backward(&m32, &a32, dloss, NULL, NULL);
    double *grads = malloc(m32.num_params * sizeof(double));
    m32.be->download_f64(grads, m32.grads_mem, m32.num_params);
    double worst = model_fd_worst(&m64, &a64, host, grads, dloss, 16, 7, "head_scale", 1);
    assert_true(worst < 1e-3);
    free(host); free(grads);
    activations_free(&a32, &m32); activations_free(&a64, &m64);
    model_free(&m32); model_free(&m64);
}

static void forward_logits(Model *m, Activations *a, const int32_t *tokens, float *out) {
    load_batch(m, a, tokens);
    model_forward(m, a);
    m->be->download(out, a->logits, (size_t)B * T * V);
}

// Positions <= cut of sequence 0 do not change when later tokens or the other sequence change.
static void test_head_scale_is_causal_and_batch_independent(void **state) {
    (void)state;
    ModelShape s = head_scale_shape(&ATTENTION_HEAD_SCALE);
    Model m;
    Activations a;
    model_init(&m, backend_cpu_f32(), s, 0, s.n_layer, 1, 1, 1);
    model_init_weights(&m, 4);
    spread_scales(&m);
    activations_init(&a, &m, B);
    int32_t tokens[B * T];
    for (int i = 0; i < B * T; i++) tokens[i] = (int32_t)(rng_hash3(3, 3, (uint64_t)i) % V);
    float before[B * T * V], after[B * T * V];
    forward_logits(&m, &a, tokens, before);
    int cut = 3;
    tokens[cut + 1] = (tokens[cut + 1] + 1) % V;
    for (int t = 0; t < T; t++) tokens[T + t] = (tokens[T + t] + 5) % V;
    forward_logits(&m, &a, tokens, after);
    assert_memory_equal(before, after, (size_t)(cut + 1) * V * sizeof(float));
    assert_true(memcmp(before + (cut + 1) * V, after + (cut + 1) * V, V * sizeof(float)) != 0);
    activations_free(&a, &m);
    model_free(&m);
}

// With every scale 1 (the initialisation) the loss is SDPA's on the same weights; other scales
// change it.
static void test_unit_scales_are_sdpa(void **state) {
    (void)state;
    ModelShape sh = head_scale_shape(&ATTENTION_HEAD_SCALE), sp = head_scale_shape(&ATTENTION_SDPA);
    Model mh, mp;
    Activations ah, ap;
    model_init(&mh, backend_cpu_f64(), sh, 0, sh.n_layer, 1, 1, 1);
    model_init(&mp, backend_cpu_f64(), sp, 0, sp.n_layer, 1, 1, 1);
    model_init_weights(&mh, 11);
    model_init_weights(&mp, 11);   // the shared parameters draw the same streams
    activations_init(&ah, &mh, B);
    activations_init(&ap, &mp, B);
    load_batch(&mh, &ah, NULL);
    load_batch(&mp, &ap, NULL);
    model_forward(&mh, &ah);
    model_forward(&mp, &ap);
    double lh = model_loss_sum(&mh, &ah), lp = model_loss_sum(&mp, &ap);
    assert_true(fabs(lh - lp) < 1e-12 * fabs(lp));
    spread_scales(&mh);
    model_forward(&mh, &ah);
    assert_true(fabs(model_loss_sum(&mh, &ah) - lp) > 1e-4);
    activations_free(&ah, &mh); activations_free(&ap, &mp);
    model_free(&mh); model_free(&mp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_variant_is_in_the_table),
        cmocka_unit_test(test_head_scale_gradients_match_finite_differences),
        cmocka_unit_test(test_head_scale_is_causal_and_batch_independent),
        cmocka_unit_test(test_unit_scales_are_sdpa),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
