// gpu_compare.h: running one op on the CUDA backend and on its CPU twin (the fp32 CPU backend)
// from the same host inputs, and comparing the outputs. Shared by the tests/gpu_test_*.c programs,
// which `make test` compiles (CI has no GPU) and `make test-gpu` runs.
//
// The error of an output is max_i |gpu_i - cpu_i| / (max_i |cpu_i| + floor): relative to the
// tensor's scale, so that near-zero elements do not dominate. Each test keeps a tolerance table
// per op; the bf16 GEMM precision needs ~1e-2, fp32 kernels ~1e-5.
#pragma once
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "backend.h"
#include "rng.h"
#include "../cuda/backend_cuda.h"

// Random host tensor, normal(0, scale), deterministic in seed.
static inline float *gpu_random(size_t n, uint64_t seed, double scale) {
    float *x = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (float)(scale * rng_normal(seed, 91, i));
    return x;
}

// A device copy of host data on backend be.
static inline void *gpu_put(const Backend *be, const float *host, size_t n) {
    void *d = be->alloc(n);
    be->upload(d, host, n);
    return d;
}

// Host copy of a device tensor (caller frees).
static inline float *gpu_get(const Backend *be, const void *dev, size_t n) {
    float *h = malloc((n ? n : 1) * sizeof(float));
    be->synchronize();
    be->download(h, dev, n);
    return h;
}

// Scale-relative max error of `gpu` against `cpu` (both on their own backends, n elements).
static inline double gpu_error(const Backend *gpu_be, const void *gpu, const Backend *cpu_be, const void *cpu, size_t n) {
    float *g = gpu_get(gpu_be, gpu, n), *c = gpu_get(cpu_be, cpu, n);
    double max_diff = 0, max_ref = 0;
    int saw_nan = 0;   // a NaN anywhere in either output fails the comparison outright
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)g[i] - (double)c[i]);
        if (d != d) saw_nan = 1;
        else if (d > max_diff) max_diff = d;
        if (fabs((double)c[i]) > max_ref) max_ref = fabs((double)c[i]);
    }
    free(g); free(c);
    return saw_nan ? INFINITY : max_diff / (max_ref + 1e-12);
}

// The CUDA backend in the given GEMM precision on device 0; exits 77 (skip) when there is no GPU.
static inline const Backend *gpu_backend_or_skip(CudaGemmPrecision precision) {
    char why[256] = "";
    if (cuda_device_count(why, sizeof why) == 0) {
        // A GPU machine whose driver is too old must fail the run, not skip it.
        if (cuda_driver_too_old(why, sizeof why)) {
            fprintf(stderr, "cannot test the CUDA backend: %s\n", why);
            exit(1);
        }
        printf("# SKIP: no CUDA device (%s)\n", why);
        exit(77);
    }
    const Backend *be = backend_cuda_create(0, precision, why, sizeof why);
    if (!be) { fprintf(stderr, "cannot create the CUDA backend: %s\n", why); exit(1); }
    return be;
}
