// stream_stats.c: see stream_stats.h.
#include "stream_stats.h"
#include <math.h>
#include "common.h"

StreamMoments stream_covariance(const Backend *be, const void *x, int N, int D, void *cov) {
    be->gemm(1, 0, D, D, N, 1.0 / N, x, D, x, D, 0, cov, D);   // (D,N)(N,D)
    StreamMoments m = {be->diag_sum(cov, D), be->sum_squares(cov, (size_t)D * D)};
    return m;
}

void stream_rank_and_token_cos(const Backend *be, const void *x, int B, int T, int C, double *pr, double *cos_adj) {
    int N = B * T;
    void *cov = be->alloc((size_t)C * C);
    *pr = participation_ratio_of(stream_covariance(be, x, N, C, cov));
    be->free(cov);
    double *h = xmalloc(sizeof(double) * N * C), sum = 0;
    be->download_f64(h, x, (size_t)N * C);
    for (int b = 0; b < B; b++)
        for (int t = 0; t + 1 < T; t++) {
            const double *u = h + ((size_t)b * T + t) * C, *v = u + C;
            double uv = 0, uu = 0, vv = 0;
            for (int c = 0; c < C; c++) { uv += u[c] * v[c]; uu += u[c] * u[c]; vv += v[c] * v[c]; }
            sum += uu > 0 && vv > 0 ? uv / sqrt(uu * vv) : 0;
        }
    *cos_adj = T > 1 ? sum / ((double)B * (T - 1)) : 0;
    free(h);
}
