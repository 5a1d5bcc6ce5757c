// train.recompute: with "attention" and "block" the loss, the auxiliary sums, every parameter
// gradient, the stage input's gradient and what the traces read after the forward pass (the
// attention weights, SGA's statistics and gate, R3SI's monitor sums) are bitwise those of "none",
// on the fp32 and fp64 CPU backends, for the baseline (pre- and post-norm), SGA and its ablations,
// head_scale, the regularisers, stochastic depth, R3SI and SDPA's fused form, on one stage and
// split over two.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "config.h"
#include "model_gradcheck.h"
#include "model.h"
#include "r3si.h"
#include "rng.h"
#include "sga.h"

enum { B = 2, T = 6, L = 3 };

typedef void (*Setup)(Config *c);

static void tiny(Config *c) { tiny_model_config(c, L, T, 0.3); }

// What one run leaves that must not depend on the recompute mode, flattened to doubles.
typedef struct {
    double *v;
    size_t n, cap;
} Record;

static void put(Record *r, const double *x, size_t n) {
    if (r->n + n > r->cap) {
        r->cap = 2 * (r->n + n);
        r->v = realloc(r->v, r->cap * sizeof(double));
    }
    memcpy(r->v + r->n, x, n * sizeof(double));
    r->n += n;
}

static void put_device(Record *r, const Backend *be, const void *x, size_t n) {
    double *h = malloc(n * sizeof(double));
    be->download_f64(h, x, n);
    put(r, h, n);
    free(h);
}

// R3SI as a monitor step leaves it: an orthonormal V (the first k unit vectors), alpha > 0.
static void r3si_after_monitor(Model *m) {
    R3si *r = model_hook_state(m, &BLOCK_HOOK_R3SI);
    if (!r) return;
    int D = m->shape.d_model;
    double *V = calloc((size_t)D * r->k, sizeof(double));
    for (int j = 0; j < r->k; j++) V[(size_t)j * r->k + j] = 1;   // (D,k) columns e_j
    for (int i = 0; i < r->n_ckpt; i++) {
        if (r->V[i]) m->be->upload_f64(r->V[i], V, (size_t)D * r->k);
        r->alpha[i] = 0.3 + 0.2 * i;
    }
    r->tau = D;   // the L_SD hinge is active
    free(V);
}

// One forward and backward pass of a B-sequence micro-batch over stages split at `cut` (0: one
// stage), at a training step that monitors (step 0), recorded into *out.
static void run(Setup setup, RecomputeMode mode, const Backend *be, int cut, Record *out) {
    Config cfg;
    setup(&cfg);
    cfg.recompute = mode;
    ModelShape s = model_shape_from_config(&cfg);
    int n_stages = cut > 0 ? 2 : 1, bounds[3] = {0, cut > 0 ? cut : L, L};
    Model m[2];
    Activations a[2];
    for (int st = 0; st < n_stages; st++) {
        model_init(&m[st], be, s, bounds[st], bounds[st + 1], st == 0, st == n_stages - 1, 1);
        model_init_weights(&m[st], 17);
        r3si_after_monitor(&m[st]);
        activations_init(&a[st], &m[st], B);
        a[st].pass.step = (StepContext){.training = 1, .step = 0, .loss_scale = 0.5, .attn_temperature = 1.3, .micro_batches = 2};
        a[st].pass.first_sequence = 4;
        model_begin_step(&m[st], &a[st].pass.step);
    }
    int32_t tokens[B * T], targets[B * T];
    for (int i = 0; i < B * T; i++) {
        tokens[i] = (int32_t)(rng_hash3(3, 1, (uint64_t)i) % 11);
        targets[i] = i % 5 == 2 ? -1 : (int32_t)(rng_hash3(3, 2, (uint64_t)i) % 11);
    }
    size_t io = (size_t)B * T * s.d_model;
    for (int st = 0; st < n_stages; st++) {
        be->upload_i32(a[st].tokens, tokens, B * T);
        be->upload_i32(a[st].targets, targets, B * T);
        if (st > 0) be->copy(a[st].input, model_stage_output(&m[st - 1], &a[st - 1]), io);
        model_forward(&m[st], &a[st]);
        put(out, a[st].aux, NUM_AUX);
        // What the traces read after the forward pass.
        for (int li = 0; li < a[st].n_local; li++) {
            put_device(out, be, model_layer_probs(&m[st], &a[st], li), (size_t)B * s.n_head * T * T);
            if (!strcmp(cfg.attention_kind, "sga")) {
                ModuleCall mc;
                double alpha, stats[4], band[4];
                model_variant_call(&m[st], &a[st], li, &mc);
                sga_trace_layer(a[st].attn_slot, &mc.call, &alpha, stats, band);
                put(out, &alpha, 1); put(out, stats, 4); put(out, band, 4);
            }
            put_device(out, be, model_block_input(&m[st], &a[st], li), io);
        }
        double *ent = malloc(sizeof(double) * a[st].n_local * B * s.n_head);
        model_head_entropies(&m[st], &a[st], ent);
        put(out, ent, (size_t)a[st].n_local * B * s.n_head);
        free(ent);
    }
    double loss = model_loss_sum(&m[n_stages - 1], &a[n_stages - 1]);
    put(out, &loss, 1);
    for (int st = n_stages - 1; st >= 0; st--) {
        if (st < n_stages - 1) be->copy(a[st].dresidual, a[st + 1].dresidual, io);
        model_backward(&m[st], &a[st], 1.0 / 9, NULL, NULL);
    }
    for (int st = 0; st < n_stages; st++) {
        put_device(out, be, m[st].grads_mem, m[st].num_params);
        R3si *r = model_hook_state(&m[st], &BLOCK_HOOK_R3SI);
        for (int i = 0; r && i < r->n_ckpt; i++)
            if (r->gram[i]) put_device(out, be, r->gram[i], (size_t)s.d_model * s.d_model);
    }
    put_device(out, be, a[0].dresidual, io);   // the gradient of the first stage's input
    for (int st = 0; st < n_stages; st++) {
        activations_free(&a[st], &m[st]);
        model_free(&m[st]);
    }
}

// Every mode against "none", on both CPU backends, on one stage and over two.
static void check(Setup setup, const char *label) {
    const Backend *backends[2] = {backend_cpu_f32(), backend_cpu_f64()};
    for (int bi = 0; bi < 2; bi++)
        for (int cut = 0; cut <= 2; cut += 2) {
            Record ref = {0};
            run(setup, RECOMPUTE_NONE, backends[bi], cut, &ref);
            // The record is not degenerate: the gradients and the loss are there and not all zero.
            double mass = 0;
            for (size_t i = 0; i < ref.n; i++) mass += ref.v[i] * ref.v[i];
            assert_true(ref.n > 100 && mass > 0);
            for (RecomputeMode mode = RECOMPUTE_ATTENTION; mode <= RECOMPUTE_BLOCK; mode++) {
                Record got = {0};
                run(setup, mode, backends[bi], cut, &got);
                size_t differ = 0;
                assert_int_equal(got.n, ref.n);
                for (size_t i = 0; i < ref.n; i++) differ += memcmp(&got.v[i], &ref.v[i], sizeof(double)) != 0;
                printf("# %-24s fp%d %s %-9s %zu values, %zu differ\n", label, bi ? 64 : 32, cut ? "pp2" : "pp1",
                       mode == RECOMPUTE_ATTENTION ? "attention" : "block", ref.n, differ);
                assert_int_equal(differ, 0);
                free(got.v);
            }
            free(ref.v);
        }
}

static void sdpa_pre(Config *c) { tiny(c); }
static void sdpa_post(Config *c) { tiny(c); c->norm = NORM_POST; c->tie_embeddings = 0; }
static void sdpa_regularised(Config *c) { tiny(c); c->reg_entropy_coef = 0.05; c->reg_adr_coef = 0.1; }
static void sdpa_stochastic_depth(Config *c) { tiny(c); strcpy(c->drop_mode, "stochastic_depth"); c->drop_p = 0.5; }
static void head_scale(Config *c) { tiny(c); strcpy(c->attention_kind, "head_scale"); }
static void sga(Config *c) { tiny(c); strcpy(c->attention_kind, "sga"); }
static void sga_post(Config *c) { sga(c); c->norm = NORM_POST; }
static void sga_no_spectral(Config *c) { sga(c); c->sga_spectral = 0; }
static void sga_fixed_filter(Config *c) { sga(c); c->sga_fixed_filter = 1; }
static void sga_no_blend(Config *c) { sga(c); c->sga_blend = 0; }
static void r3si(Config *c) {
    tiny(c);
    c->r3si_enabled = 1; c->r3si_n_layers = 2; c->r3si_layers[0] = 1; c->r3si_layers[1] = 2;
    c->r3si_k = 3; c->r3si_ds = 4; c->r3si_inject = 1; c->r3si_lsd_lambda = 0.2;
}
static void r3si_sga(Config *c) { r3si(c); strcpy(c->attention_kind, "sga"); }
// attention.fused: the rebuild recomputes lse, the entropies and y into the slot; the trace maps
// are materialised from the q and k of the layer's last core_forward.
static void sdpa_fused(Config *c) { tiny(c); c->attention_fused = 1; }
static void sdpa_fused_post(Config *c) { sdpa_fused(c); c->norm = NORM_POST; c->tie_embeddings = 0; }

static void test_sdpa_pre(void **state) { (void)state; check(sdpa_pre, "sdpa pre-norm"); }
static void test_sdpa_post(void **state) { (void)state; check(sdpa_post, "sdpa post-norm untied"); }
static void test_sdpa_regularised(void **state) { (void)state; check(sdpa_regularised, "sdpa entropy+adr reg"); }
static void test_sdpa_stochastic_depth(void **state) { (void)state; check(sdpa_stochastic_depth, "sdpa stochastic depth"); }
static void test_head_scale(void **state) { (void)state; check(head_scale, "head_scale"); }
static void test_sga(void **state) { (void)state; check(sga, "sga"); }
static void test_sga_post(void **state) { (void)state; check(sga_post, "sga post-norm"); }
static void test_sga_no_spectral(void **state) { (void)state; check(sga_no_spectral, "sga spectral=false"); }
static void test_sga_fixed_filter(void **state) { (void)state; check(sga_fixed_filter, "sga fixed_filter=true"); }
static void test_sga_no_blend(void **state) { (void)state; check(sga_no_blend, "sga blend=false"); }
static void test_r3si(void **state) { (void)state; check(r3si, "r3si inject+L_SD"); }
static void test_r3si_sga(void **state) { (void)state; check(r3si_sga, "r3si+sga"); }
static void test_sdpa_fused(void **state) { (void)state; check(sdpa_fused, "sdpa fused"); }
static void test_sdpa_fused_post(void **state) { (void)state; check(sdpa_fused_post, "sdpa fused post-norm"); }

// The memory does drop: the (B,NH,T,T) tensors are kept for one layer, "block" keeps one layer
// of the block tensors.
static void test_activation_bytes(void **state) {
    (void)state;
    size_t bytes[3];
    for (int mode = 0; mode < 3; mode++) {
        Config cfg;
        sga(&cfg);
        cfg.recompute = (RecomputeMode)mode;
        ModelShape s = model_shape_from_config(&cfg);
        Model m;
        Activations a;
        model_init(&m, backend_cpu_f32(), s, 0, L, 1, 1, 1);
        activations_init(&a, &m, B);
        bytes[mode] = a.bytes;
        activations_free(&a, &m);
        model_free(&m);
    }
    printf("# sga activation bytes: none %zu, attention %zu, block %zu\n", bytes[0], bytes[1], bytes[2]);
    assert_true(bytes[1] < bytes[0]);
    assert_true(bytes[2] < bytes[1]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sdpa_pre),         cmocka_unit_test(test_sdpa_post),
        cmocka_unit_test(test_sdpa_regularised), cmocka_unit_test(test_sdpa_stochastic_depth),
        cmocka_unit_test(test_head_scale),       cmocka_unit_test(test_sga),
        cmocka_unit_test(test_sga_post),         cmocka_unit_test(test_sga_no_spectral),
        cmocka_unit_test(test_sga_fixed_filter), cmocka_unit_test(test_sga_no_blend),
        cmocka_unit_test(test_r3si),             cmocka_unit_test(test_r3si_sga),
        cmocka_unit_test(test_sdpa_fused),       cmocka_unit_test(test_sdpa_fused_post),
        cmocka_unit_test(test_activation_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
