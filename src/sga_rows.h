// sga_rows.h: the row chain of Spectral Gated Attention as backend ops on query rows [q0, q0 + Q)
// of `nh` heads (whole heads: 0, T), each row of length T, shared by the materialised form (sga.c,
// slices of whole heads of a layer's (B,NH,T,T) tensors) and the tiled form (sga_tiled.c,
// tile-sized scratch recomputed in backward). One op sequence for both, so the two forms compute
// the same numbers by construction. Private to those two files.
#pragma once
#include "sga.h"

typedef struct {
    int spectral, fixed_filter, blend, hidden, embed;
    double alpha_init;
} SgaOptions;

SgaOptions sga_options(const Config *cfg);

// The SGA parameters of one layer (sga.h's enum order); both forms declare the same.
int sga_declare_params(const ModelShape *s, ParamSpec *out);
double sga_extra_flops_per_token(const ModelShape *s);

// What the forward chain writes and the backward chain reads, for R = nh Q rows of length T.
typedef struct {
    void *raw;        // (nh,Q,T) the raw logits a on the causal triangle, zero above it (the DCT's input; the blend reads the triangle)
    void *spec;       // (nh,Q,T) s, the spectrum of each zero-padded causal row
    void *stats;      // (R,4) the row statistics
    void *U;          // (R,De+4) gate input [e_l; stats]
    void *hslope, *h;   // (R,Hg) gate hidden: GELU's slope at its pre-activation, and after GELU
    void *gate;       // (nh,Q,T) g
    void *zp;         // (nh,Q,T) z' = IDCT(g s)
} SgaRows;

// Scratch of the chain for the same R rows (contents dead between calls).
typedef struct {
    void *z, *y, *dspec, *dgate;   // (nh,Q,T)
    void *dU;                      // (R,De+4)
    void *dhpre;                   // (R,Hg)
    void *dstats;                  // (R,4)
} SgaScratch;

// probs (nh,Q,T), the causal softmax of SGA's logits, from scores (nh,Q,T), writing l; c gives the
// backend, T and the layer's parameters. gate_inputs_kept: l->stats, l->hslope and l->h already hold
// what this chain computed for these rows before (a rebuild for backward), and are not computed again.
void sga_rows_forward(const SgaOptions *o, const LayerCall *c, int nh, int q0, int Q, const SgaRows *l, const SgaScratch *w,
                      const void *scores, void *probs, int gate_inputs_kept);
// dscores (=) (nh,Q,T), zero above the diagonal, from dlogits (nh,Q,T); the parameters' gradients
// (c->grad) accumulate (+=) over the rows of this call, so calls over consecutive slices in a
// fixed order sum them deterministically.
void sga_rows_backward(const SgaOptions *o, const LayerCall *c, int nh, int q0, int Q, const SgaRows *l, const SgaScratch *w,
                       const void *dlogits, void *dscores);

// The trace sums of sga_trace_layer over some rows: stats (rows,4) and gate (rows,T) on the host,
// each row's statistics divided by R_total (the layer's rows) into stats_sum, the gates into the
// four bands (DC, low, middle, high thirds) of band_sum and band_count.
void sga_trace_rows(const double *stats, const double *gate, size_t rows, int T, size_t R_total, double stats_sum[4],
                    double band_sum[4], double band_count[4]);
// alpha_l as the traces report it: clamped to [0, 1], 1 without the blend.
double sga_trace_alpha(const SgaOptions *o, const LayerCall *c);

// sga_tiled.c: sga_trace_layer of the tiled form (recomputes the layer's rows tile by tile).
void sga_tiled_trace_layer(const void *slot, const LayerCall *c, double *alpha, double stats[4], double band[4]);
