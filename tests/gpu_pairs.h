// gpu_pairs.h: one tensor held on both backends of an op test, the GPU backend and its CPU twin,
// and the per-op tolerance tables the comparisons use. Shared by the
// tests/gpu_test_*_ops_match_cpu.c programs (cmocka, included before this); each sets `gpu` and
// `cpu` in its group setup (gpu_backend_or_skip and backend_cpu_f32).
#pragma once
#include <string.h>
#include "gpu_compare.h"

static const Backend *gpu, *cpu;

typedef struct {
    void *g, *c;   // the GPU copy and the CPU copy
    size_t n;
} Pair;

// host_gpu on the GPU, host_cpu on the CPU (the same array for ordinary inputs)
static inline Pair pair_put2(const float *host_gpu, const float *host_cpu, size_t n) {
    Pair p = {gpu_put(gpu, host_gpu, n), gpu_put(cpu, host_cpu, n), n};
    return p;
}

static inline Pair pair_from(const float *host, size_t n) { return pair_put2(host, host, n); }

// The same normal(0, scale) values on both backends.
static inline Pair pair_random(size_t n, uint64_t seed, double scale) {
    float *h = gpu_random(n, seed, scale);
    Pair p = pair_from(h, n);
    free(h);
    return p;
}

// An output the op overwrites (=): different large garbage on each backend, so that an element
// the GPU forgets, or accumulates into, shows up as an error.
static inline Pair pair_garbage(size_t n, uint64_t seed) {
    float *hg = gpu_random(n, seed, 1e3), *hc = gpu_random(n, seed ^ 0x9e3779b97f4a7c15ull, 1e3);
    Pair p = pair_put2(hg, hc, n);
    free(hg);
    free(hc);
    return p;
}

static inline void pair_free(Pair p) {
    gpu->free(p.g);
    cpu->free(p.c);
}

// Scale-relative error of the GPU copy against the CPU copy (infinite on a NaN; gpu_compare.h).
static inline double pair_error(Pair p) { return gpu_error(gpu, p.g, cpu, p.c, p.n); }

// How many entries above the diagonal of the GPU copy of p are not exactly zero (ops that promise
// exact zeros there, whatever the output held before). p is a stack of blocks of Q rows of length
// T, row r of a block being query q0 + r % Q (backend.h's causal row ops); (0, T): (T,T) matrices.
static inline size_t pair_gpu_nonzero_above_diagonal(Pair p, int T, int q0, int Q) {
    float *g = gpu_get(gpu, p.g, p.n);
    size_t nonzero = 0;
    for (size_t idx = 0; idx < p.n; idx++) nonzero += idx % T > q0 + (idx / T) % Q && g[idx] != 0.0f;
    free(g);
    return nonzero;
}

// ---- tolerances -------------------------------------------------------------------------------
// A test program's table of the scale-relative error allowed per op name.
typedef struct {
    const char *op;
    double tol;
} OpTolerance;

// The tolerance of `op` in table (n entries); an op missing from the table fails the test.
static inline double op_tolerance(const OpTolerance *table, size_t n, const char *op) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(table[i].op, op) == 0) return table[i].tol;
    fail_msg("no tolerance for op %s", op);
    return 0;
}

// Asserts the GPU copy of p is within tol of the CPU copy, and prints the error either way.
static inline void expect_pair_close(const char *op, const char *what, Pair p, double tol) {
    double err = pair_error(p);
    printf("# %-26s %-28s error %.3g (tolerance %.3g)\n", op, what, err, tol);
    if (!(err <= tol)) fail_msg("%s: %s differs from the CPU: error %.3g > %.3g", op, what, err, tol);
}
