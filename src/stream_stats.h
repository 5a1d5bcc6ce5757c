// stream_stats.h: statistics of a residual stream H (N,D): the moments of its covariance and the
// participation ratio PR = tr(C)^2 / ||C||_F^2 (docs/design.md section 4), written once for R3SI's L_SD,
// its monitor and the traces.
#pragma once
#include "backend.h"

typedef struct {
    double trace;     // tr(C)
    double frob_sq;   // ||C||_F^2
} StreamMoments;

// PR from the moments: the participation ratio of C's eigenvalues; 0 for C = 0.
static inline double participation_ratio_of(StreamMoments m) { return m.frob_sq > 0 ? m.trace * m.trace / m.frob_sq : 0; }

// cov (D,D) = H^T H / N on the device, and its moments.
StreamMoments stream_covariance(const Backend *be, const void *x, int N, int D, void *cov);

// Participation ratio of the covariance of x (B,T,C), and the mean cosine of adjacent tokens' vectors.
void stream_rank_and_token_cos(const Backend *be, const void *x, int B, int T, int C, double *pr, double *cos_adj);
