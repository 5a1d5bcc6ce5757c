// trace.h: the per-layer traces of metrics.h5 (docs/metrics-schema.md), measured on the first
// micro-batch of a trace step. Each rank fills the layers it owns (replica 0 only, so that a layer
// counts once) into arrays over all layers, and a world sum completes the record on every rank:
// the record is the same whatever the topology.
#pragma once
#include "comm.h"
#include "metrics.h"
#include "model.h"

// Attention snapshots keep the first this many heads of each listed layer: enough to see heads
// differ, while a row stays n_layers x 4 x T x T (float16 in the file: 8 MiB per layer at T = 1024).
#define TRACE_SNAPSHOT_HEADS 4

typedef struct {
    int L, B, H, T;
    int sga;               // attention.kind = "sga": the /sga arrays exist
    int n_snap, snap_heads;
    int *snap_layers;      // trace.snapshot_layers (n_snap blocks)
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
    double *snapshot;      // (n_snap, snap_heads, T, T) attention weights of sequence 0
} TraceRecord;

// Arrays a run does not have (SGA's without SGA, snapshots without listed layers) stay NULL.
void trace_init(TraceRecord *r, const ModelShape *s, int B, const int *snapshot_layers, int n_snapshot);
void trace_free(TraceRecord *r);
void trace_clear(TraceRecord *r);

// Forward-side traces of this stage's layers from the micro-batch just run forward.
void trace_forward(TraceRecord *r, const Model *m, Activations *a);
// Elements of the largest device temporary a traced step takes (one at a time, freed at once):
// the estimate's transient part (memory_estimate.c). Keep it next to the allocations below.
size_t trace_scratch_numel(const ModelShape *s, int B);

// Gradient diversity of this stage's layers from the step's gradients (collective over dp when
// they are not reduced yet, ZeRO-1), then the world sum that completes the record.
void trace_finish(TraceRecord *r, const Model *m, Comm *comm, int grads_reduced);

// The record's datasets in metrics.h5 (rank 0), from the same table as the arrays: a step axis per
// group (/trace, /sga, /snapshot), named layer/head axes, snapshots stored as float16.
void trace_declare_metrics(MetricsFile *mf, TraceRecord *r);
// Appends the record as the rows of trace step `step`.
void trace_append_metrics(MetricsFile *mf, TraceRecord *r, long step);
