// gradcheck.h: finite-difference checking shared by the gradient tests.
//
// An op under test is described by an objective L(inputs) = sum(W * op(inputs)) with fixed random
// weights W, evaluated on any backend, and by its analytic gradient from the op's backward pass.
// The reference is a central difference of L computed on the fp64 CPU backend; the analytic
// gradient comes from the fp32 backend, the one that trains. The error of a tensor is
// ||g_analytic - g_fd|| / ||g_fd|| over the sampled elements.
#pragma once
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "backend.h"
#include "rng.h"

#define GC_MAX_INPUTS 6

typedef struct {
    int n_inputs;
    double *inputs[GC_MAX_INPUTS];   // host values, doubles rounded to float so both backends see the same numbers
    size_t sizes[GC_MAX_INPUTS];
    const char *names[GC_MAX_INPUTS];
    int differentiable[GC_MAX_INPUTS];
    void *ctx;
    // L(inputs) on backend be
    double (*objective)(const Backend *be, double **inputs, void *ctx);
    // analytic dL/dinput for every differentiable input, on backend be
    void (*gradient)(const Backend *be, double **inputs, double **grads, void *ctx);
} GradCheck;

static inline double *gc_random(size_t n, uint64_t seed, double scale) {
    double *x = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) x[i] = (double)(float)(scale * rng_normal(seed, 77, i));
    return x;
}

// Device copies for ops: upload a host double array to a fresh device tensor.
static inline void *gc_upload(const Backend *be, const double *host, size_t n) {
    void *d = be->alloc(n);
    be->upload_f64(d, host, n);
    return d;
}

// A device tensor of NaN, for an op's output that it must overwrite: an element it leaves alone or
// accumulates into stays NaN and fails the check.
static inline void *gc_alloc_stale(const Backend *be, size_t n) {
    double *nan_host = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) nan_host[i] = NAN;
    void *d = gc_upload(be, nan_host, n);
    free(nan_host);
    return d;
}

static inline double *gc_download(const Backend *be, const void *dev, size_t n) {
    double *h = malloc(n * sizeof(double));
    be->download_f64(h, dev, n);
    return h;
}

// Returns the largest relative error over the differentiable inputs, printing each.
// `samples` elements per input (all if the input is smaller); h is the difference step.
static inline double gradcheck_run(GradCheck *gc, int samples, double h) {
    const Backend *f32 = backend_cpu_f32(), *f64 = backend_cpu_f64();
    double *grads[GC_MAX_INPUTS] = {0};
    for (int i = 0; i < gc->n_inputs; i++) grads[i] = calloc(gc->sizes[i], sizeof(double));
    gc->gradient(f32, gc->inputs, grads, gc->ctx);
    double worst = 0;
    for (int i = 0; i < gc->n_inputs; i++) {
        if (!gc->differentiable[i]) continue;
        size_t n = gc->sizes[i];
        int count = (size_t)samples < n ? samples : (int)n;
        double num = 0, den = 0;
        for (int s = 0; s < count; s++) {
            size_t e = (size_t)samples < n ? (size_t)(rng_hash3(99, (uint64_t)i, (uint64_t)s) % n) : (size_t)s;
            double saved = gc->inputs[i][e];
            gc->inputs[i][e] = saved + h;
            double lp = gc->objective(f64, gc->inputs, gc->ctx);
            gc->inputs[i][e] = saved - h;
            double lm = gc->objective(f64, gc->inputs, gc->ctx);
            gc->inputs[i][e] = saved;
            double fd = (lp - lm) / (2 * h);
            num += (grads[i][e] - fd) * (grads[i][e] - fd);
            den += fd * fd;
        }
        double rel = den > 0 ? sqrt(num / den) : sqrt(num);
        printf("# %-18s rel err %.3e (|g_fd| %.3e, %d samples)\n", gc->names[i], rel, sqrt(den), count);
        if (rel > worst || isnan(rel)) worst = isnan(rel) ? INFINITY : rel;
    }
    for (int i = 0; i < gc->n_inputs; i++) free(grads[i]);
    return worst;
}
