// r3si.h: Residual Rank Restoration via Spectral Injection (docs/design.md section 4), the block hook
// BLOCK_HOOK_R3SI.
//
// At each checkpoint block c: a monitor (every r3si.monitor_every steps, no gradient) measures the
// participation ratio of the residual stream's covariance over the global batch and its top-k
// eigenvectors V_c; alpha_c = max(0, tau - rank_c) / tau. Every forward pass then injects
// delta = alpha_c (u - (u V_c) V_c^T), u = (H W_s^T) W_s, into the block's input, and every training
// step adds L_SD = lambda sum_c max(0, tau - PR(H_c)) on the current micro-batch. The buffers
// (V_c, rank_c, alpha_c, tau) come from earlier steps, so the model stays causal.
#pragma once
#include "block_hook.h"

typedef struct R3si {
    // configuration
    int n_ckpt;                       // checkpoint layers of the whole model
    int layers[CFG_MAX_LIST];         // their block indices, ascending
    int k, ds, D, NH, head_size, monitor_every, adaptive, inject, center;
    double tau0, lsd_lambda;
    uint64_t seed;
    // state: identical on every rank, saved in checkpoints
    double tau, rho_ref, rho;
    int monitors;                     // monitor updates done
    double rank[CFG_MAX_LIST], alpha[CFG_MAX_LIST], inject_ratio[CFG_MAX_LIST];
    void *V[CFG_MAX_LIST];            // (D,k) device, for checkpoint layers on this stage
    // accumulated over the micro-batches of a monitor step
    void *gram[CFG_MAX_LIST];         // (D,D) device: sum of H^T H
    void *colsum[CFG_MAX_LIST];       // (D) device: column sums (r3si.center)
    double injected_sq[CFG_MAX_LIST], input_sq[CFG_MAX_LIST];   // ||delta||^2, ||H||^2 on the first micro-batch
} R3si;

// Index of `layer` among the checkpoint layers, or -1.
int r3si_index(const R3si *r, int layer);

// Whether `step` is a monitor step.
int r3si_monitors_at(const R3si *r, long step);

// The weight of the summed hinges (AUX_LSD) in the reported loss of a step.
double r3si_lsd_weight(const R3si *r, const StepContext *ctx);

// The monitor update after the step's gradients are reduced (collective over all ranks): rank_c,
// V_c, rho, tau, alpha_c. `grads_reduced` says whether the head gradients are dp-summed already
// (else they are summed here). tokens: tokens in the global batch.
void r3si_monitor_update(R3si *r, const Backend *be, Comm *comm, long step, double tokens, int grads_reduced,
                         HeadGradientsFn head_gradients, const void *model);
