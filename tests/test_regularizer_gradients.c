// The R3SI post's baselines and the SGA post's regulariser through whole models against central
// differences (fp64 reference): attention diversity regularisation, stochastic depth (pre- and
// post-norm), entropy regularisation and the attention temperature.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include "gradcheck.h"
#include "model.h"
#include "model_gradcheck.h"

enum { B = 3 };

typedef struct {
    double adr, entropy, sd_p, temperature;
    NormPlacement norm;
} Variant;

// cfg: the model's options (stochastic depth), kept alive with the model.
static void setup(Model *m, Activations *a, const Backend *be, const Variant *v, Config *cfg) {
    config_defaults(cfg);
    if (v->sd_p > 0) snprintf(cfg->drop_mode, sizeof cfg->drop_mode, "stochastic_depth");
    cfg->drop_p = v->sd_p;
    cfg->seed = 5;
    ModelShape s = {.n_layer = 3, .n_head = 3, .d_model = 9, .head_size = 3, .seq_len = 5, .vocab_size = 11,
                    .mlp_hidden = 12, .norm = v->norm, .tie_embeddings = 1, .init_std = 0.4, .scaled_init = 1, .cfg = cfg};
    model_init(m, be, s, 0, s.n_layer, 1, 1, 1);
    model_init_weights(m, 31);
    m->reg.adr_weight = v->adr;
    m->reg.entropy_weight = v->entropy;
    activations_init(a, m, B);
    a->pass = (PassContext){.step = {.training = 1, .step = 3, .loss_scale = 1, .attn_temperature = v->temperature,
                                     .micro_batches = 1},
                            .micro_batch = 0, .first_sequence = 0};
    int32_t tok[B * 5], targets[B * 5];
    for (int i = 0; i < B * 5; i++) {
        tok[i] = (int32_t)(rng_hash3(2, 1, (uint64_t)i) % 11);
        targets[i] = (int32_t)(rng_hash3(2, 2, (uint64_t)i) % 11);
    }
    be->upload_i32(a->tokens, tok, B * 5);
    be->upload_i32(a->targets, targets, B * 5);
}

static double check(const Variant *v, const char *name) {
    Model m32, m64;
    Activations a32, a64;
    Config c32, c64;
    setup(&m32, &a32, backend_cpu_f32(), v, &c32);
    setup(&m64, &a64, backend_cpu_f64(), v, &c64);
    double dloss = 1.0 / 15;
    model_objective(&m32, &a32, dloss);
    model_backward(&m32, &a32, dloss, NULL, NULL);
    double *grads = malloc(m32.num_params * sizeof(double)), *host = malloc(m64.num_params * sizeof(double));
    m32.be->download_f64(grads, m32.grads_mem, m32.num_params);
    m64.be->download_f64(host, m64.params_mem, m64.num_params);
    double worst = model_fd_worst(&m64, &a64, host, grads, dloss, 16, 8, name, 0);
    free(grads); free(host);
    activations_free(&a32, &m32); activations_free(&a64, &m64);
    model_free(&m32); model_free(&m64);
    return worst;
}

static void test_adr_gradients(void **state) {
    (void)state;
    Variant v = {.adr = 0.7, .temperature = 1, .norm = NORM_PRE};
    assert_true(check(&v, "adr") < 1e-3);
}

static void test_stochastic_depth_gradients(void **state) {
    (void)state;
    Variant pre = {.sd_p = 0.4, .temperature = 1, .norm = NORM_PRE}, post = {.sd_p = 0.4, .temperature = 1, .norm = NORM_POST};
    assert_true(check(&pre, "stochastic depth pre") < 1e-3);
    assert_true(check(&post, "stochastic depth post") < 1e-3);
}

static void test_entropy_reg_and_temperature_gradients(void **state) {
    (void)state;
    Variant v = {.entropy = 0.5, .temperature = 1.7, .norm = NORM_PRE};
    assert_true(check(&v, "entropy + temperature") < 1e-3);
}

// Stochastic depth really drops: with p close to 1 a dropped block's parameters get no gradient
// for the sequences that dropped it, and the same step draws the same masks.
static void test_stochastic_depth_drops_branches_per_sequence(void **state) {
    (void)state;
    Variant v = {.sd_p = 0.999, .temperature = 1, .norm = NORM_PRE};
    Model m;
    Activations a;
    Config cfg;
    setup(&m, &a, backend_cpu_f32(), &v, &cfg);
    model_forward(&m, &a);
    model_backward(&m, &a, 1.0, NULL, NULL);
    float g[9 * 9];
    m.be->download(g, model_grad(&m, PARAM_ATTPROJ_W, 1), 81);
    double n = 0;
    for (int i = 0; i < 81; i++) n += fabs(g[i]);
    assert_true(n == 0);   // every sequence dropped block 1 (p = 0.999)
    activations_free(&a, &m);
    model_free(&m);
}

// Attention temperature divides every logit: with temperature t and weights W_q scaled by t the
// model computes the same loss.
static void test_attention_temperature_divides_logits(void **state) {
    (void)state;
    Variant v1 = {.temperature = 1, .norm = NORM_PRE}, v2 = {.temperature = 2.5, .norm = NORM_PRE};
    Model m1, m2;
    Activations a1, a2;
    Config c1, c2;
    setup(&m1, &a1, backend_cpu_f64(), &v1, &c1);
    setup(&m2, &a2, backend_cpu_f64(), &v2, &c2);
    for (int l = 0; l < 3; l++) {
        double *q = malloc(sizeof(double) * 9 * 9 * 3), *bias = malloc(sizeof(double) * 27);
        m2.be->download_f64(q, model_param(&m2, PARAM_QKV_W, l), 243);
        m2.be->download_f64(bias, model_param(&m2, PARAM_QKV_B, l), 27);
        for (int i = 0; i < 81; i++) q[i] *= 2.5;      // the query rows come first
        for (int i = 0; i < 9; i++) bias[i] *= 2.5;
        m2.be->upload_f64(model_param(&m2, PARAM_QKV_W, l), q, 243);
        m2.be->upload_f64(model_param(&m2, PARAM_QKV_B, l), bias, 27);
        free(q); free(bias);
    }
    model_forward(&m1, &a1);
    model_forward(&m2, &a2);
    double l1 = model_loss_sum(&m1, &a1), l2 = model_loss_sum(&m2, &a2);
    assert_true(fabs(l1 - l2) < 1e-10 * fabs(l1));
    a2.pass.step.attn_temperature = 1;
    model_forward(&m2, &a2);
    assert_true(fabs(model_loss_sum(&m2, &a2) - l1) > 1e-3);
    activations_free(&a1, &m1); activations_free(&a2, &m2);
    model_free(&m1); model_free(&m2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adr_gradients),
        cmocka_unit_test(test_stochastic_depth_gradients),
        cmocka_unit_test(test_entropy_reg_and_temperature_gradients),
        cmocka_unit_test(test_stochastic_depth_drops_branches_per_sequence),
        cmocka_unit_test(test_attention_temperature_divides_logits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
