// trace.h: the per-layer traces of metrics.h5 (docs/metrics-schema.md), measured on the first
// micro-batch of a trace step. Each rank fills the layers it owns (replica 0 only, so that a layer
// counts once) into arrays over all layers, and a world sum completes the record on every rank:
// the record is the same whatever the topology.
#pragma once
#include "comm.h"
#include "model.h"

typedef struct {
    int L, B, H, T;
    double *entropy_bh;    // (L, B, H) mean row entropy, nats, per sequence and head
    double *entropy;       // (L, H) its mean over sequences
    double *redundancy;    // (L) mean pairwise cosine of the heads' attention maps
    double *eff_rank;      // (L, H) ||A||_F^4 / ||A A^T||_F^2, mean over sequences
    double *resid_rank;    // (L+1) participation ratio of the stream entering each block, and the final one
    double *token_cos;     // (L+1) mean cosine of adjacent tokens' residual vectors
    double *grad_div;      // (L) variance over head pairs of the cosine of their gradients
    double *sga_alpha;     // (L) clamped alpha_l (SGA)
    double *sga_stats;     // (L, 4) mean over rows of the four spectral statistics (SGA)
    double *sga_band;      // (L, 4) mean gate over DC, low, mid and high thirds (SGA)
} TraceRecord;

void trace_init(TraceRecord *r, const ModelShape *s, int B);
void trace_free(TraceRecord *r);
void trace_clear(TraceRecord *r);

// Forward-side traces of this stage's layers from the micro-batch just run forward.
void trace_forward(TraceRecord *r, const Model *m, Activations *a);

// Gradient diversity of this stage's layers from the step's gradients (collective over dp when
// they are not reduced yet, ZeRO-1), then the world sum that completes the record.
void trace_finish(TraceRecord *r, const Model *m, Comm *comm, int grads_reduced);
