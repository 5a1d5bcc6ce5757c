// sga.h: Spectral Gated Attention (DESIGN section 4) as a rewrite of one layer's pre-softmax logits.
//
// For every query row i of every head: the causal logits a (zero-padded to the design length T)
// go through an orthonormal DCT-II, four statistics of the power spectrum and a learned
// per-layer embedding feed a small MLP whose sigmoid output gates the spectrum, the inverse DCT
// brings it back, and the row is blended with the original: a' = (1 - alpha) a + alpha z'.
// Everything about row i depends on q_i and k_0..k_i only.
#pragma once
#include "model.h"

// logits (B,NH,T,T) = SGA(scores) for local layer li of the micro-batch in `a`. Keeps what the
// backward pass needs in a's SGA buffers.
void sga_forward(Model *m, Activations *a, int li, const void *scores, void *logits);

// dscores (=) (B,NH,T,T), zero above the diagonal, from dlogits (B,NH,T,T); accumulates the gate's
// parameter gradients of layer li.
void sga_backward(Model *m, Activations *a, int li, const void *dlogits, void *dscores);

// Host copies of local layer li's statistics (R,4) and gate (R,T) of the last forward pass.
void sga_download_layer(const Model *m, const Activations *a, int li, double *stats, double *gate);

// Extra parameters per layer and extra training FLOPs per token of SGA, for `info`.
size_t sga_params_per_layer(const ModelShape *s);
double sga_flops_per_token(const ModelShape *s);
