// r3si.h: Residual Rank Restoration via Spectral Injection (DESIGN section 5).
//
// At each checkpoint block c: a monitor (every r3si.monitor_every steps, no gradient) measures the
// participation ratio of the residual stream's covariance over the global batch and its top-k
// eigenvectors V_c; alpha_c = max(0, tau - rank_c) / tau. Every forward pass then injects
// delta = alpha_c (u - (u V_c) V_c^T), u = (H W_s^T) W_s, into the block's input, and every training
// step adds L_SD = lambda sum_c max(0, tau - PR(H_c)) on the current micro-batch. The buffers
// (V_c, rank_c, alpha_c, tau) come from earlier steps, so the model stays causal.
#pragma once
#include "comm.h"
#include "config.h"
#include "model.h"

typedef struct R3si {
    // configuration
    int n_ckpt;                       // checkpoint layers of the whole model
    int layers[CFG_MAX_LIST];         // their block indices, ascending
    int k, ds, D, monitor_every, adaptive, inject, center;
    double tau0;
    uint64_t seed;
    // state: identical on every rank, saved in checkpoints
    double tau, rho_ref, rho;
    int monitors;                     // monitor updates done
    double rank[CFG_MAX_LIST], alpha[CFG_MAX_LIST], inject_ratio[CFG_MAX_LIST];
    void *V[CFG_MAX_LIST];            // (D,k) device, for checkpoint layers on this stage
    // per step, set by the trainer
    int monitor_step;                 // accumulate the covariance this step
    double lsd_scale;                 // lambda / micro-batches per global batch; 0: no L_SD
    int measure_injection;            // record ||delta|| / ||H|| in this forward pass
    void *gram[CFG_MAX_LIST];         // (D,D) device: sum of H^T H over this step's micro-batches
    void *colsum[CFG_MAX_LIST];       // (D) device: column sums (r3si.center)
    double injected_sq[CFG_MAX_LIST], input_sq[CFG_MAX_LIST];
} R3si;

// Builds the state for `m`'s stage (m->r3si is set). Returns -1 with err naming the key if the
// layers or sizes do not fit the model.
int r3si_init(Model *m, const Config *cfg, Error *err);
void r3si_free(Model *m);

// Index of `layer` among the checkpoint layers, or -1.
int r3si_index(const R3si *r, int layer);

// Forward hook before block li (local index), x (B,T,C) its input: monitor accumulation, L_SD,
// injection. Returns the input the block must read (x itself, or the injected copy).
const void *r3si_block_forward(Model *m, Activations *a, int li, const void *x);

// Backward hook after block li: a->dresidual holds the gradient of the block's (injected) input
// on entry and of x on exit.
void r3si_block_backward(Model *m, Activations *a, int li, const void *x);

// The monitor update after the step's gradients are reduced (collective over all ranks): rank_c,
// V_c, rho, tau, alpha_c. `grads_reduced` says whether m->grads_mem holds dp-summed gradients
// (else the head slices are summed here). tokens: tokens in the global batch.
void r3si_monitor_update(Model *m, Comm *comm, long step, double tokens, int grads_reduced);
