// sga.h: Spectral Gated Attention (docs/design.md section 3), the attention variant "sga".
//
// For every query row i of every head: the causal logits a (zero-padded to the design length T)
// go through an orthonormal DCT-II, four statistics of the power spectrum and a learned
// per-layer embedding feed a small MLP whose sigmoid output gates the spectrum, the inverse DCT
// brings it back, and the row is blended with the original: a' = (1 - alpha) a + alpha z'.
// Everything about row i depends on q_i and k_0..k_i only.
#pragma once
#include "attention_variant.h"

// The tiled form (attention.fused = true; sga_tiled.c): the same parameters and numbers, computed
// in tiles of (sequence, head) pairs that are recomputed in backward instead of kept.
extern const AttentionVariant ATTENTION_SGA_TILED;

// 1 for either form of SGA (the materialised ATTENTION_SGA or its tiled form): the same model, the
// same checkpoint attributes and traces.
static inline int attention_is_sga(const AttentionVariant *v) { return v == &ATTENTION_SGA || v == &ATTENTION_SGA_TILED; }

// The SGA parameters of one layer, in declared order (LayerCall.param indices).
enum { SGA_E, SGA_W1, SGA_B1, SGA_W2, SGA_B2, SGA_ALPHA };

// For the traces, from local layer li of the last forward pass in `slot`: alpha_l clamped to
// [0, 1] (1 without the blend), the mean over rows of the four statistics, and the mean gate over
// DC and the low, middle and high thirds of the remaining frequencies. Either form: the tiled one
// recomputes the layer's rows tile by tile (trace steps only).
void sga_trace_layer(const void *slot, const LayerCall *c, double *alpha, double stats[4], double band[4]);
