#include "peak.h"
#include <cblas.h>
#include <stdlib.h>
#include <time.h>
#include "common.h"
#include "timer.h"

double measure_sgemm_gflops(void) {
    enum { n = 2048, runs = 5 };
    float *a = xmalloc(sizeof(float) * n * n), *b = xmalloc(sizeof(float) * n * n), *c = xmalloc(sizeof(float) * n * n);
    for (size_t i = 0; i < (size_t)n * n; i++) { a[i] = (float)(i % 7) * 0.1f; b[i] = (float)(i % 5) * 0.1f; }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);   // warm-up
    double gflops[runs];
    for (int r = 0; r < runs; r++) {
        double t0 = now_seconds();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        gflops[r] = 2.0 * n * n * n / (now_seconds() - t0) / 1e9;
    }
    // The ceiling is the best run: a slower one measured a disturbance (another process, a page
    // fault), not the machine.
    qsort(gflops, runs, sizeof(double), compare_doubles);
    free(a); free(b); free(c);
    return gflops[runs - 1];
}
