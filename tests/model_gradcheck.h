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

// The objective model_backward differentiates when the loss gradient is dloss per token: the loss
// plus the regularisers' terms (both zero unless ADR or entropy regularisation is on).
static inline double model_objective(Model *m, Activations *a, double dloss) {
    model_forward(m, a);
    return model_loss_sum(m, a) * dloss + m->adr_weight * a->adr_sum - m->entropy_reg_weight * a->entropy_reg_sum;
}

// Worst over the parameter tensors of ||g - g_fd|| / ||g_fd||: g are the analytic gradients
// (`grads`, in m64's arena layout), g_fd central differences (step 1e-5) of model_objective on m64,
// whose current parameters are `host`. Each tensor is sampled at `samples` elements picked by
// `seed` (all of a smaller one). One line per tensor after `label`; with require_gradient, a
// tensor whose finite-difference gradient is zero fails the test.
static inline double model_fd_worst(Model *m64, Activations *a64, double *host, const double *grads, double dloss,
                                    int samples, uint64_t seed, const char *label, int require_gradient) {
    double worst = 0, h = 1e-5;
    for (int id = 0; id < NUM_PARAMS; id++) {
        const ParamInfo *p = &m64->params[id];
        if (!p->present) continue;
        double num = 0, den = 0;
        int n = p->numel < (size_t)samples ? (int)p->numel : samples;
        for (int k = 0; k < n; k++) {
            size_t pick = p->numel <= (size_t)samples ? (size_t)k : rng_hash3(seed, (uint64_t)id, (uint64_t)k) % p->numel;
            int layer = (int)(pick / p->slice_numel);   // block tensors: which layer's slice
            size_t e = model_param_offset(m64, (ParamId)id, layer) + pick % p->slice_numel;
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
