// bench_stats.h: the statistics the benchmarks report (median of repeated timings), shared so that
// every benchmark summarises its samples the same way.
#pragma once
#include <stdlib.h>

static int bench_compare_doubles(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

// The median of n samples (the upper one of the middle two when n is even); sorts them in place.
static inline double bench_median(double *samples, int n) {
    qsort(samples, (size_t)n, sizeof(double), bench_compare_doubles);
    return samples[n / 2];
}
