// step_context.h: what a forward or backward pass needs to know about the step it belongs to.
// The trainer fills it; the model hands it to the attention variant and the block hooks, which
// keep no trainer switches of their own.
#pragma once
#include <stdint.h>

typedef struct {
    int training;              // 1: a training step (stochastic depth, LayerDrop, L_SD, monitor); 0: evaluation
    long step;                 // the optimizer step (0-based)
    double loss_scale;         // the objective is multiplied by it (temperature.mode = "loss"); 1 = off
    double attn_temperature;   // every attention logit is divided by it (temperature.mode = "attention"); 1 = off
    int micro_batches;         // micro-batches in the global batch (all replicas): terms that are means over them
} StepContext;

// One micro-batch's pass: its step and where its sequences sit in the global batch.
typedef struct {
    StepContext step;
    int micro_batch;           // index on this rank (0 = the first of the step)
    int first_sequence;        // global index of the micro-batch's first sequence
} PassContext;

// Auxiliary loss terms: each pass accumulates unweighted sums; the model knows their weights.
typedef enum {
    AUX_ENTROPY_REG,   // sum over rows i >= 1 of H_i / ln(i+1) (entropy regularisation)
    AUX_LSD,           // sum over checkpoint layers of max(0, tau - PR(H_c)) (R3SI)
    AUX_ADR,           // sum over layers, sequences and head pairs of cos(A_h, A_h') (diversity regularisation)
    NUM_AUX
} AuxTerm;
