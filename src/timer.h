// timer.h: wall-clock time for step timings and benchmarks.
#pragma once
#include <stdlib.h>
#include <time.h>

// Seconds on the monotonic clock (unaffected by clock changes during a run).
static inline double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

// qsort comparator for doubles, ascending (medians of timings).
static inline int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// The median of n timings (the upper of the middle two when n is even); sorts them in place.
static inline double median_of(double *x, int n) {
    qsort(x, (size_t)n, sizeof(double), compare_doubles);
    return x[n / 2];
}
