// sga_core_case.h: one layer's SGA attention core (either form, any backend) run on host inputs:
// forward y and backward dq, dk, dv and the SGA parameters' gradients, back on the host in double.
// Shared by tests/test_sga_tiled.c (tiled vs materialised on the fp64 CPU backend) and
// tests/gpu_test_sga_tiled_matches_cpu.c (the tiled form on CUDA vs the CPU backend).
#pragma once
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "rng.h"
#include "sga.h"

// The inputs of a case: q, k, v, dy (B,NH,T,hs) and the parameters in declared order.
typedef struct {
    int B, NH, T, hs;
    double *q, *k, *v, *dy;            // (B,NH,T,hs)
    double *param[MODULE_MAX_PARAMS];  // NULL where the variant declares none (fixed filter)
    size_t param_n[MODULE_MAX_PARAMS];
    int n_params;
} SgaCoreInput;

// The outputs: y (B,NH,T,hs), the input gradients and the parameter gradients.
typedef struct {
    double *y, *dq, *dk, *dv;
    double *grad[MODULE_MAX_PARAMS];
    double *probs;     // (B,NH,T,T) the layer's weights as layer_probs gives them (the traces' reader)
    double trace[9];   // sga_trace_layer: alpha, the four mean statistics, the four band means
} SgaCoreOutput;

// cfg: defaults, then SGA with the given ablation flags, a gate of 8 hidden units and an embedding
// of 5 (test sizes), and tile_heads (0: automatic). Returns the shape (cfg must outlive it).
static inline ModelShape sga_core_shape(Config *cfg, int NH, int T, int hs, int spectral, int fixed_filter, int blend,
                                        int tile_heads) {
    config_defaults(cfg);
    snprintf(cfg->attention_kind, sizeof cfg->attention_kind, "sga");
    cfg->sga_spectral = spectral;
    cfg->sga_fixed_filter = fixed_filter;
    cfg->sga_blend = blend;
    cfg->sga_gate_hidden = 8;
    cfg->sga_embed_dim = 5;
    cfg->attention_tile_heads = tile_heads;
    ModelShape s = {.n_layer = 1, .n_head = NH, .d_model = NH * hs, .head_size = hs, .seq_len = T, .vocab_size = 11,
                    .mlp_hidden = 4 * NH * hs, .norm = NORM_PRE, .tie_embeddings = 1, .init_std = 0.3, .scaled_init = 1,
                    .attention = &ATTENTION_SGA, .cfg = cfg};
    return s;
}

static inline double *sga_core_random(size_t n, uint64_t seed, double scale) {
    double *x = malloc((n ? n : 1) * sizeof(double));
    for (size_t i = 0; i < n; i++) x[i] = scale * rng_normal(seed, 17, i);
    return x;
}

// Random inputs for B sequences of shape s (seed): q, k of scale 1 (logits of order sqrt(hs) x
// scale), the gate's parameters of scale 0.3, alpha_l = 0.4.
static inline SgaCoreInput sga_core_input(const ModelShape *s, int B, uint64_t seed) {
    SgaCoreInput in = {.B = B, .NH = s->n_head, .T = s->seq_len, .hs = s->head_size};
    size_t n = (size_t)B * s->n_head * s->seq_len * s->head_size;
    in.q = sga_core_random(n, seed + 1, 1.0);
    in.k = sga_core_random(n, seed + 2, 1.0);
    in.v = sga_core_random(n, seed + 3, 1.0);
    in.dy = sga_core_random(n, seed + 4, 1.0);
    ParamSpec specs[MODULE_MAX_PARAMS];
    in.n_params = ATTENTION_SGA.declare_params(s, specs);
    for (int i = 0; i < in.n_params; i++) {
        if (!specs[i].name) continue;
        size_t numel = (size_t)specs[i].shape[0] * (specs[i].ndim == 2 ? (size_t)specs[i].shape[1] : 1);
        in.param_n[i] = numel;
        in.param[i] = sga_core_random(numel, seed + 10 + (uint64_t)i, 0.3);
        if (i == SGA_ALPHA) in.param[i][0] = 0.4;
    }
    return in;
}

static inline void sga_core_input_free(SgaCoreInput *in) {
    free(in->q); free(in->k); free(in->v); free(in->dy);
    for (int i = 0; i < in->n_params; i++) free(in->param[i]);
}

static inline void sga_core_output_free(SgaCoreOutput *out) {
    free(out->y); free(out->dq); free(out->dk); free(out->dv); free(out->probs);
    for (int i = 0; i < MODULE_MAX_PARAMS; i++) free(out->grad[i]);
}

static inline double *sga_core_get(const Backend *be, const void *dev, size_t n) {
    double *h = malloc((n ? n : 1) * sizeof(double));
    be->synchronize();
    be->download_f64(h, dev, n);
    return h;
}

static inline void *sga_core_put(const Backend *be, const double *host, size_t n) {
    void *d = be->alloc(n ? n : 1);
    be->upload_f64(d, host, n);
    return d;
}

// Runs variant's core (shape s, whose attention field is ignored) forward and backward on be.
// backward = 0: the forward only (out's gradients stay NULL).
static inline SgaCoreOutput sga_core_run(const Backend *be, const ModelShape *s, const AttentionVariant *variant,
                                         const SgaCoreInput *in, int backward) {
    SgaCoreOutput out = {0};
    size_t n = (size_t)in->B * in->NH * in->T * in->hs;
    void *q = sga_core_put(be, in->q, n), *k = sga_core_put(be, in->k, n), *v = sga_core_put(be, in->v, n);
    void *dy = sga_core_put(be, in->dy, n), *y = be->alloc(n), *dq = be->alloc(n), *dk = be->alloc(n), *dv = be->alloc(n);
    void *param[MODULE_MAX_PARAMS] = {0}, *grad[MODULE_MAX_PARAMS] = {0};
    for (int i = 0; i < in->n_params; i++) {
        if (!in->param[i]) continue;
        param[i] = sga_core_put(be, in->param[i], in->param_n[i]);
        grad[i] = be->alloc(in->param_n[i]);
    }
    ModelShape shape = *s;
    shape.attention = variant;
    size_t elements = 0;
    void *slot = variant->slot_create(be, &shape, 1, in->B, &elements);
    PassContext pass = {.step = {.training = 1, .step = 0, .loss_scale = 1, .attn_temperature = 1, .micro_batches = 1}};
    double aux[NUM_AUX] = {0};
    AttnCall c = {{be, &shape, in->B, in->T, 0, 0, param, grad, &pass, aux}, 1.0 / sqrt((double)in->hs), NULL, 0};
    variant->core_forward(variant, slot, &c, q, k, v, y);
    out.y = sga_core_get(be, y, n);
    // What the traces read after the forward pass: the weights and sga_trace_layer's means.
    out.probs = sga_core_get(be, variant->layer_probs(slot, 0), (size_t)in->B * in->NH * in->T * in->T);
    sga_trace_layer(slot, &c.layer, &out.trace[0], &out.trace[1], &out.trace[5]);
    if (backward) {
        variant->core_backward(variant, slot, &c, q, k, v, dy, dq, dk, dv);
        out.dq = sga_core_get(be, dq, n);
        out.dk = sga_core_get(be, dk, n);
        out.dv = sga_core_get(be, dv, n);
        for (int i = 0; i < in->n_params; i++)
            if (grad[i]) out.grad[i] = sga_core_get(be, grad[i], in->param_n[i]);
    }
    variant->slot_free(be, slot);
    void *all[] = {q, k, v, dy, y, dq, dk, dv};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) be->free(all[i]);
    for (int i = 0; i < in->n_params; i++) {
        if (param[i]) be->free(param[i]);
        if (grad[i]) be->free(grad[i]);
    }
    return out;
}

// max |a - b| and max |b| over n elements; NaN against NaN counts as equal (the traces' empty
// frequency bands at T = 1), NaN against a number as an infinite difference.
static inline void sga_core_diff(const double *a, const double *b, size_t n, double *max_diff, double *max_ref) {
    *max_diff = 0;
    *max_ref = 0;
    for (size_t i = 0; i < n; i++) {
        if (a[i] != a[i] && b[i] != b[i]) continue;
        double d = fabs(a[i] - b[i]);
        if (d != d) d = INFINITY;
        if (d > *max_diff) *max_diff = d;
        if (fabs(b[i]) > *max_ref) *max_ref = fabs(b[i]);
    }
}

static const char *const SGA_PARAM_NAMES[] = {"sga_e", "sga_w1", "sga_b1", "sga_w2", "sga_b2", "sga_alpha"};

// ---- the properties both tiled-form tests check, bitwise ------------------------------------------

// Causality: k and v moved after position `cut` in every head of sequence 0.
static inline void sga_core_move_keys_after(SgaCoreInput *in, int cut) {
    for (int h = 0; h < in->NH; h++)
        for (int t = cut + 1; t < in->T; t++)
            for (int d = 0; d < in->hs; d++) {
                size_t i = ((size_t)h * in->T + t) * in->hs + d;   // sequence 0
                in->k[i] += 0.5;
                in->v[i] -= 0.25;
            }
}

// After sga_core_move_keys_after(cut): rows 0..cut of every head of sequence 0 of y must be bitwise
// those of `before`; returns 1 if they are, and *changed = 1 if row cut + 1 moved in some head
// (the check can fail).
static inline int sga_core_rows_kept_up_to(const SgaCoreInput *in, const double *before, const double *after, int cut,
                                           int *changed) {
    int kept = 1;
    *changed = 0;
    for (int h = 0; h < in->NH; h++) {
        size_t row0 = (size_t)h * in->T * in->hs, next = row0 + (size_t)(cut + 1) * in->hs;
        kept &= memcmp(before + row0, after + row0, (size_t)(cut + 1) * in->hs * sizeof(double)) == 0;
        *changed |= memcmp(before + next, after + next, (size_t)in->hs * sizeof(double)) != 0;
    }
    return kept;
}

// Sequences apart: every input of sequence 1 changed (q negated, k scaled, v shifted, dy scaled).
static inline void sga_core_change_sequence_1(SgaCoreInput *in) {
    size_t seq = (size_t)in->NH * in->T * in->hs;
    for (size_t i = seq; i < 2 * seq; i++) {
        in->q[i] = -in->q[i];
        in->k[i] *= 1.5;
        in->v[i] += 1;
        in->dy[i] *= -2;
    }
}

// After sga_core_change_sequence_1: sequence 0's y, dq, dk, dv must be bitwise those of `before`
// (returns 1 if so) and sequence 1's y must have moved (*changed).
static inline int sga_core_sequence_0_kept(const SgaCoreInput *in, const SgaCoreOutput *before, const SgaCoreOutput *after,
                                           int *changed) {
    size_t seq = (size_t)in->NH * in->T * in->hs, bytes = seq * sizeof(double);
    *changed = memcmp(before->y + seq, after->y + seq, bytes) != 0;
    return !memcmp(before->y, after->y, bytes) && !memcmp(before->dq, after->dq, bytes) && !memcmp(before->dk, after->dk, bytes) &&
           !memcmp(before->dv, after->dv, bytes);
}
