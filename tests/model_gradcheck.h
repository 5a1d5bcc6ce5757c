// model_gradcheck.h: the whole-model finite-difference check shared by the model, regularizer and
// SGA gradient tests (cmocka, included before this). The analytic gradients come from an fp32
// model; the reference is a central difference of the same objective on an fp64 twin holding the
// same parameters.
#pragma once
#include <math.h>
#include <stdio.h>
#include "backend.h"
#include "model.h"
#include "rng.h"

// The tiny decoder of the model-level tests: 2 heads of 4 (d 8), vocabulary 11, MLP x2, a small SGA
// gate (used when a test sets attention.kind = sga); depth, length and init scale per test.
static inline void tiny_model_config(Config *c, int n_layer, int seq_len, double init_std) {
    config_defaults(c);
    c->n_layer = n_layer; c->n_head = 2; c->d_model = 8; c->seq_len = seq_len; c->vocab_size = 11; c->mlp_ratio = 2;
    c->init_std = init_std;
    c->sga_gate_hidden = 5; c->sga_embed_dim = 3;
}

// The objective model_backward differentiates when the loss gradient is dloss per token: the loss
// plus the auxiliary terms (zero unless a regulariser or L_SD is on), at the pass's loss scale.
static inline double model_objective(Model *m, Activations *a, double dloss) {
    model_forward(m, a);
    double objective = model_loss_sum(m, a) * dloss;
    for (int i = 0; i < NUM_AUX; i++)
        objective += model_aux_weight(m, (AuxTerm)i, &a->pass.step) * a->pass.step.loss_scale * a->aux[i];
    return objective;
}

// The global layer of the k-th slice this stage holds of block parameter p.
static inline int model_slice_layer(const Model *m, const ParamInfo *p, size_t k) {
    for (int layer = m->layer_begin; layer < m->layer_end; layer++)
        if (param_in_layer(p, layer) && k-- == 0) return layer;
    return -1;
}

// Worst over the parameter tensors of ||g - g_fd|| / ||g_fd||: g are the analytic gradients
// (`grads`, in m64's arena layout), g_fd central differences (step 1e-5) of model_objective on m64,
// whose current parameters are `host`. Each tensor is sampled at `samples` elements picked by
// `seed` (all of a smaller one). One line per tensor after `label`; with require_gradient, a
// tensor whose finite-difference gradient is zero fails the test.
static inline double model_fd_worst(Model *m64, Activations *a64, double *host, const double *grads, double dloss,
                                    int samples, uint64_t seed, const char *label, int require_gradient) {
    double worst = 0, h = 1e-5;
    for (int id = 0; id < m64->n_params; id++) {
        const ParamInfo *p = &m64->params[id];
        if (!p->present) continue;
        double num = 0, den = 0;
        int n = p->numel < (size_t)samples ? (int)p->numel : samples;
        for (int k = 0; k < n; k++) {
            size_t pick = p->numel <= (size_t)samples ? (size_t)k : rng_hash3(seed, (uint64_t)id, (uint64_t)k) % p->numel;
            int layer = p->role == ROLE_BLOCK ? model_slice_layer(m64, p, pick / p->slice_numel) : 0;
            size_t e = model_param_offset(m64, id, layer) + pick % p->slice_numel;
            void *at = be_offset(m64->be, m64->params_mem, e);
            double saved = host[e], v;
            v = saved + h; m64->be->upload_f64(at, &v, 1);
            double lp = model_objective(m64, a64, dloss);
            v = saved - h; m64->be->upload_f64(at, &v, 1);
            double lm = model_objective(m64, a64, dloss);
            m64->be->upload_f64(at, &saved, 1);
            double fd = (lp - lm) / (2 * h);
            num += (grads[e] - fd) * (grads[e] - fd);
            den += fd * fd;
        }
        double rel = den > 0 ? sqrt(num / den) : sqrt(num);
        printf("# %-22s %-18s rel err %.3e (|g_fd| %.3e)\n", label, p->name, rel, sqrt(den));
        if (require_gradient) assert_true(den > 0);   // every tensor receives gradient
        if (!(rel <= worst)) worst = rel;
    }
    return worst;
}
