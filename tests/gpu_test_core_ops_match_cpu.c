// gpu_test_core_ops_match_cpu.c: the core kernel families of the CUDA backend (memory, bf16
// storage, encoder, layernorm, matmul, GELU MLP layers, elementwise, cross-entropy, reductions and AdamW) against
// their CPU twins.
//
// Each test builds random host inputs of realistic, deliberately odd sizes, uploads the same data
// to the CUDA backend and to the fp32 CPU backend, runs the op on both and asserts the
// scale-relative max error (gpu_compare.h) of every output is below the op's tolerance from the
// table below. Outputs an op accumulates into (+=) are pre-filled with the same random values on
// both backends, so accumulation is checked; outputs it overwrites (=) are pre-filled with random
// garbage, so a kernel that forgets an element or accumulates instead shows up.
//
// The CUDA backend is created once (group setup) in the fp32 GEMM precision; the bf16 matmul test
// re-creates it in bf16 and restores fp32 afterwards. Without a GPU the program exits 77 (skip).
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_pairs.h"

// ---- tolerances: scale-relative max error allowed per op --------------------------------------
// fp32 elementwise kernels differ from the CPU only by FMA contraction and the GPU's expf against
// the CPU's polynomial exp (~1 ulp): 1e-5. Row reductions (LayerNorm, softmax sums, column sums)
// add in a different order: 1e-4. fp32 cuBLAS GEMMs differ by summation order only: 1e-5. bf16
// GEMMs round both operands to 8 bits of mantissa (relative 2^-9 each), so a K-term dot product
// lands within ~1e-2 of the fp32 result relative to the output's scale: 2e-2. The double
// reductions are compared relative to sum |x| and only differ by double rounding: 1e-11.
static const OpTolerance TOLERANCES[] = {
    {"memory", 0.0},                 // transfers, zero and copy move bits
    {"encoder_forward", 1e-6},       // one fp32 add per element, same on both
    {"encoder_backward", 1e-5},      // same adds in the same order as the CPU
    {"layernorm_forward", 1e-4},
    {"layernorm_backward", 1e-4},
    {"matmul_fp32", 1e-5},
    {"matmul_bf16", 2e-2},
    {"matmul_gelu", 1e-5},           // fp32 GEMM, then GELU or its slope with expf against the polynomial
    {"add", 1e-6},
    {"accumulate", 1e-6},
    {"scale", 1e-6},
    {"scale_rows", 1e-6},
    {"crossentropy_forward", 1e-4},
    {"crossentropy_backward", 1e-4},
    {"sum", 1e-11},
    {"adamw_update", 1e-5},
};

static double tolerance(const char *op) { return op_tolerance(TOLERANCES, sizeof TOLERANCES / sizeof TOLERANCES[0], op); }

// ---- sizes: odd on purpose (no multiple of a warp or a block) ---------------------------------
enum { N = 37, C = 96, OC = 200, V = 1031, B = 3, T = 13, VOCAB = 61 };

// ---- int32 tensors on both backends (tokens, targets, predictions) ---------------------------
typedef struct {
    int32_t *g, *c;
    size_t n;
} PairI32;

static PairI32 pair_i32(const int32_t *host, size_t n) {
    PairI32 p = {gpu->alloc_i32(n), cpu->alloc_i32(n), n};
    gpu->upload_i32(p.g, host, n);
    cpu->upload_i32(p.c, host, n);
    return p;
}

static void pair_i32_free(PairI32 p) {
    gpu->free(p.g);
    cpu->free(p.c);
}

// Asserts the GPU copy of p is within the op's tolerance of the CPU copy.
static void expect_close(const char *op, const char *what, Pair p) { expect_pair_close(op, what, p, tolerance(op)); }

// Random ids in [0, bound), deterministic in seed (caller frees).
static int32_t *random_ids(size_t n, uint64_t seed, int bound) {
    int32_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = (int32_t)(rng_hash3(seed, 17, i) % (uint64_t)bound);
    return ids;
}

// ---- fixture -------------------------------------------------------------------------------
static int setup(void **state) {
    (void)state;
    gpu = gpu_backend_or_skip(CUDA_GEMM_FP32);
    cpu = backend_cpu_f32();
    return 0;
}

static int teardown(void **state) {
    (void)state;
    backend_cuda_destroy();
    return 0;
}

// ---- memory ------------------------------------------------------------------------------------
static void test_memory(void **state) {
    (void)state;
    const size_t n = 1031;
    float *host = gpu_random(n, 1, 1.0);

    // alloc is zeroed, alloc(0) still gives a pointer
    void *d = gpu->alloc(n);
    float *back = gpu_get(gpu, d, n);
    for (size_t i = 0; i < n; i++) assert_true(back[i] == 0.0f);
    free(back);
    void *empty = gpu->alloc(0);
    assert_non_null(empty);
    gpu->free(empty);

    // upload / download round trip is exact
    gpu->upload(d, host, n);
    back = gpu_get(gpu, d, n);
    assert_memory_equal(back, host, n * sizeof(float));
    free(back);

    // fp64 in and out: rounded to fp32 as the CPU does
    double *h64 = malloc(n * sizeof *h64), *b64 = malloc(n * sizeof *b64);
    for (size_t i = 0; i < n; i++) h64[i] = (double)host[i] * 1.0000001;
    gpu->upload_f64(d, h64, n);
    gpu->synchronize();
    gpu->download_f64(b64, d, n);
    for (size_t i = 0; i < n; i++) assert_true(b64[i] == (double)(float)h64[i]);
    free(h64);
    free(b64);

    // int32 round trip
    int32_t *ids = random_ids(n, 2, 1 << 30), *ids_back = malloc(n * sizeof *ids_back);
    int32_t *di = gpu->alloc_i32(n);
    int32_t *zeros = calloc(n, sizeof *zeros);
    gpu->download_i32(ids_back, di, n);
    assert_memory_equal(ids_back, zeros, n * sizeof(int32_t));
    gpu->upload_i32(di, ids, n);
    gpu->download_i32(ids_back, di, n);
    assert_memory_equal(ids_back, ids, n * sizeof(int32_t));
    gpu->free(di);
    free(ids);
    free(ids_back);
    free(zeros);
    gpu->free(d);

    // zero a middle range, copy disjoint, copy overlapping both ways (memmove semantics)
    Pair p = pair_from(host, n), q = pair_random(n, 3, 1.0);
    gpu->zero(be_offset(gpu, p.g, 100), 300);
    cpu->zero(be_offset(cpu, p.c, 100), 300);
    expect_close("memory", "zero", p);
    gpu->copy(q.g, p.g, 500);
    cpu->copy(q.c, p.c, 500);
    expect_close("memory", "copy", q);
    gpu->copy(be_offset(gpu, p.g, 7), p.g, 900);        // dst after src
    cpu->copy(be_offset(cpu, p.c, 7), p.c, 900);
    expect_close("memory", "copy>", p);
    gpu->copy(p.g, be_offset(gpu, p.g, 11), 1000);      // dst before src
    cpu->copy(p.c, be_offset(cpu, p.c, 11), 1000);
    expect_close("memory", "copy<", p);
    pair_free(p);
    pair_free(q);
    free(host);
}

// ---- encoder -----------------------------------------------------------------------------------
static void test_encoder_forward(void **state) {
    (void)state;
    int32_t *tok = random_ids((size_t)B * T, 10, VOCAB);
    PairI32 tokens = pair_i32(tok, (size_t)B * T);
    Pair wte = pair_random((size_t)VOCAB * C, 11, 0.5), wpe = pair_random((size_t)T * C, 12, 0.5);
    Pair out = pair_random((size_t)B * T * C, 13, 9.0);   // garbage: (=)
    gpu->encoder_forward(out.g, tokens.g, wte.g, wpe.g, B, T, C);
    cpu->encoder_forward(out.c, tokens.c, wte.c, wpe.c, B, T, C);
    expect_close("encoder_forward", "out", out);
    pair_free(out); pair_free(wte); pair_free(wpe); pair_i32_free(tokens);
    free(tok);
}

static void test_encoder_backward(void **state) {
    (void)state;
    // Few distinct ids among B*T positions: most tokens repeat, some of the vocabulary is unused.
    int32_t *tok = random_ids((size_t)B * T, 14, 9);
    tok[0] = VOCAB - 1;   // the largest id
    PairI32 tokens = pair_i32(tok, (size_t)B * T);
    Pair dwte = pair_random((size_t)VOCAB * C, 15, 1.0), dwpe = pair_random((size_t)T * C, 16, 1.0);   // (+=)
    Pair dout = pair_random((size_t)B * T * C, 17, 1.0);
    gpu->encoder_backward(dwte.g, dwpe.g, dout.g, tokens.g, B, T, C, VOCAB);
    cpu->encoder_backward(dwte.c, dwpe.c, dout.c, tokens.c, B, T, C, VOCAB);
    expect_close("encoder_backward", "dwte", dwte);
    expect_close("encoder_backward", "dwpe", dwpe);
    pair_free(dwte); pair_free(dwpe); pair_free(dout); pair_i32_free(tokens);
    free(tok);
}

// ---- layernorm ---------------------------------------------------------------------------------
// Inputs with a nonzero mean per row, so the centring matters.
static Pair layernorm_input(int rows, uint64_t seed) {
    float *h = gpu_random((size_t)rows * C, seed, 2.0);
    for (int i = 0; i < rows; i++)
        for (int c = 0; c < C; c++) h[(size_t)i * C + c] += 0.1f * (float)(i % 7) - 0.3f;
    Pair p = pair_from(h, (size_t)rows * C);
    free(h);
    return p;
}

static void test_layernorm_forward(void **state) {
    (void)state;
    Pair inp = layernorm_input(N, 20), weight = pair_random(C, 21, 1.0), bias = pair_random(C, 22, 1.0);
    Pair out = pair_random((size_t)N * C, 23, 9.0), mean = pair_random(N, 24, 9.0), rstd = pair_random(N, 25, 9.0);
    gpu->layernorm_forward(out.g, mean.g, rstd.g, inp.g, weight.g, bias.g, N, C);
    cpu->layernorm_forward(out.c, mean.c, rstd.c, inp.c, weight.c, bias.c, N, C);
    expect_close("layernorm_forward", "out", out);
    expect_close("layernorm_forward", "mean", mean);
    expect_close("layernorm_forward", "rstd", rstd);
    pair_free(inp); pair_free(weight); pair_free(bias); pair_free(out); pair_free(mean); pair_free(rstd);
}

static void test_layernorm_backward(void **state) {
    (void)state;
    // 37 rows (fewer than the 64 row chunks of dweight/dbias) and 150 (several rows per chunk).
    const int sizes[2] = {N, 150};
    for (int k = 0; k < 2; k++) {
        int rows = sizes[k];
        Pair inp = layernorm_input(rows, 30 + k), weight = pair_random(C, 32, 1.0), bias = pair_random(C, 33, 1.0);
        Pair out = pair_random((size_t)rows * C, 34, 1.0), mean = pair_random(rows, 35, 1.0), rstd = pair_random(rows, 36, 1.0);
        // mean and rstd from the CPU forward, shared by both backward passes
        cpu->layernorm_forward(out.c, mean.c, rstd.c, inp.c, weight.c, bias.c, rows, C);
        float *hm = gpu_get(cpu, mean.c, rows), *hr = gpu_get(cpu, rstd.c, rows);
        gpu->upload(mean.g, hm, rows);
        gpu->upload(rstd.g, hr, rows);
        free(hm);
        free(hr);
        Pair dout = pair_random((size_t)rows * C, 37, 1.0);
        // dinp accumulated onto the same values, or assigned over different garbage on each side
        for (GradWrite write = GRAD_ASSIGN; write <= GRAD_ACCUMULATE; write++) {
            Pair dinp = write == GRAD_ASSIGN ? pair_garbage((size_t)rows * C, 38) : pair_random((size_t)rows * C, 38, 1.0);
            Pair dweight = pair_random(C, 39, 1.0), dbias = pair_random(C, 40, 1.0);
            gpu->layernorm_backward(dinp.g, write, dweight.g, dbias.g, dout.g, inp.g, weight.g, mean.g, rstd.g, rows, C);
            cpu->layernorm_backward(dinp.c, write, dweight.c, dbias.c, dout.c, inp.c, weight.c, mean.c, rstd.c, rows, C);
            expect_close("layernorm_backward", write == GRAD_ASSIGN ? "dinp (=)" : "dinp (+=)", dinp);
            expect_close("layernorm_backward", "dweight", dweight);
            expect_close("layernorm_backward", "dbias", dbias);
            pair_free(dinp); pair_free(dweight); pair_free(dbias);
        }
        pair_free(inp); pair_free(weight); pair_free(bias); pair_free(out); pair_free(mean); pair_free(rstd);
        pair_free(dout);
    }
}

// ---- matmul ------------------------------------------------------------------------------------
// Forward and backward at (N, C, OC) with or without bias / dinp, dinp assigned (from different
// garbage on the two sides) or accumulated; errors (out, dinp, dweight, dbias).
static void matmul_errors(int with_bias, int with_dinp, GradWrite dinp_write, double err[4]) {
    Pair inp = pair_random((size_t)N * C, 50, 1.0), weight = pair_random((size_t)OC * C, 51, 0.2);
    Pair bias = pair_random(OC, 52, 1.0), out = pair_random((size_t)N * OC, 53, 9.0);
    gpu->matmul_forward(out.g, inp.g, weight.g, with_bias ? bias.g : NULL, N, C, OC);
    cpu->matmul_forward(out.c, inp.c, weight.c, with_bias ? bias.c : NULL, N, C, OC);
    err[0] = gpu_error(gpu, out.g, cpu, out.c, out.n);

    Pair dout = pair_random((size_t)N * OC, 54, 1.0);
    Pair dinp = with_dinp && dinp_write == GRAD_ASSIGN ? pair_garbage((size_t)N * C, 55) : pair_random((size_t)N * C, 55, 1.0);
    Pair dweight = pair_random((size_t)OC * C, 56, 1.0), dbias = pair_random(OC, 57, 1.0);
    gpu->matmul_backward(with_dinp ? dinp.g : NULL, dinp_write, dweight.g, with_bias ? dbias.g : NULL, dout.g, inp.g, weight.g,
                         N, C, OC);
    cpu->matmul_backward(with_dinp ? dinp.c : NULL, dinp_write, dweight.c, with_bias ? dbias.c : NULL, dout.c, inp.c, weight.c,
                         N, C, OC);
    err[1] = gpu_error(gpu, dinp.g, cpu, dinp.c, dinp.n);    // untouched on both when with_dinp = 0
    err[2] = gpu_error(gpu, dweight.g, cpu, dweight.c, dweight.n);
    err[3] = gpu_error(gpu, dbias.g, cpu, dbias.c, dbias.n);
    pair_free(inp); pair_free(weight); pair_free(bias); pair_free(out);
    pair_free(dout); pair_free(dinp); pair_free(dweight); pair_free(dbias);
}

static void expect_matmul(const char *op, int with_bias, int with_dinp, GradWrite dinp_write, const double err[4]) {
    static const char *names[4] = {"out", "dinp", "dweight", "dbias"};
    double tol = tolerance(op);
    for (int i = 0; i < 4; i++) {
        printf("# %-22s %-10s bias=%d dinp=%s error %.3g (tolerance %.3g)\n", op, names[i], with_bias,
               !with_dinp ? "none" : dinp_write == GRAD_ASSIGN ? "assigned" : "accumulated", err[i], tol);
        if (!(err[i] <= tol)) fail_msg("%s: %s differs from the CPU: error %.3g > %.3g", op, names[i], err[i], tol);
    }
}

static void test_matmul_forward_backward_fp32(void **state) {
    (void)state;
    double err[4];
    for (int with_bias = 0; with_bias < 2; with_bias++)
        for (int with_dinp = 0; with_dinp < 2; with_dinp++)
            for (GradWrite write = GRAD_ASSIGN; write <= (with_dinp ? GRAD_ACCUMULATE : GRAD_ASSIGN); write++) {
                matmul_errors(with_bias, with_dinp, write, err);
                expect_matmul("matmul_fp32", with_bias, with_dinp, write, err);
            }
}

// The same through bf16 tensor cores: the backend is re-created in bf16 for this test only, and
// fp32 is restored before any assertion can leave the test.
static void test_matmul_forward_backward_bf16(void **state) {
    (void)state;
    backend_cuda_destroy();
    gpu = gpu_backend_or_skip(CUDA_GEMM_BF16);
    double err[4];
    matmul_errors(1, 1, GRAD_ASSIGN, err);
    backend_cuda_destroy();
    gpu = gpu_backend_or_skip(CUDA_GEMM_FP32);
    expect_matmul("matmul_bf16", 1, 1, GRAD_ASSIGN, err);
}

// ---- GELU MLP layers (fp32 GEMMs) -------------------------------------------------------------------
// slope = gelu'(pre) and act = gelu(pre) of matmul_gelu_forward at (N, C, OC); pre's values span
// GELU's bend and both tails (|pre| up to ~3). Both outputs start as different garbage on the two sides.
static void test_matmul_gelu_forward(void **state) {
    (void)state;
    Pair inp = pair_random((size_t)N * C, 60, 1.0), weight = pair_random((size_t)OC * C, 61, 0.3), bias = pair_random(OC, 62, 1.0);
    Pair slope = pair_garbage((size_t)N * OC, 63), act = pair_garbage((size_t)N * OC, 64);
    gpu->matmul_gelu_forward(slope.g, act.g, inp.g, weight.g, bias.g, N, C, OC);
    cpu->matmul_gelu_forward(slope.c, act.c, inp.c, weight.c, bias.c, N, C, OC);
    expect_close("matmul_gelu", "slope", slope);
    expect_close("matmul_gelu", "act", act);
    pair_free(inp); pair_free(weight); pair_free(bias); pair_free(slope); pair_free(act);
}

// matmul_backward_gelu of a (N, OC) hidden layer into C outputs, GELU's slope a random (N, OC): dpre
// (=, from garbage), dweight and dbias (+=, from the same random values).
static void test_matmul_backward_gelu(void **state) {
    (void)state;
    Pair slope = pair_random((size_t)N * OC, 65, 1.0), act = pair_random((size_t)N * OC, 66, 1.0);
    Pair weight = pair_random((size_t)C * OC, 67, 0.2), dout = pair_random((size_t)N * C, 68, 1.0);
    Pair dpre = pair_garbage((size_t)N * OC, 69), dweight = pair_random((size_t)C * OC, 70, 1.0), dbias = pair_random(C, 71, 1.0);
    gpu->matmul_backward_gelu(dpre.g, dweight.g, dbias.g, dout.g, act.g, weight.g, slope.g, N, OC, C);
    cpu->matmul_backward_gelu(dpre.c, dweight.c, dbias.c, dout.c, act.c, weight.c, slope.c, N, OC, C);
    expect_close("matmul_gelu", "dpre", dpre);
    expect_close("matmul_gelu", "dweight", dweight);
    expect_close("matmul_gelu", "dbias", dbias);
    pair_free(slope); pair_free(act); pair_free(weight); pair_free(dout); pair_free(dpre); pair_free(dweight); pair_free(dbias);
}

// ---- elementwise -------------------------------------------------------------------------------
enum { EW_N = 4099 };

static void test_add(void **state) {
    (void)state;
    Pair a = pair_random(EW_N, 65, 1.0), b = pair_random(EW_N, 66, 1.0), out = pair_random(EW_N, 67, 9.0);
    gpu->add(out.g, a.g, b.g, EW_N);
    cpu->add(out.c, a.c, b.c, EW_N);
    expect_close("add", "out", out);
    pair_free(a); pair_free(b); pair_free(out);
}

static void test_accumulate(void **state) {
    (void)state;
    Pair dst = pair_random(EW_N, 68, 1.0), src = pair_random(EW_N, 69, 1.0);
    gpu->accumulate(dst.g, src.g, EW_N);
    cpu->accumulate(dst.c, src.c, EW_N);
    expect_close("accumulate", "dst", dst);
    pair_free(dst); pair_free(src);
}

static void test_scale(void **state) {
    (void)state;
    Pair x = pair_random(EW_N, 70, 1.0);
    gpu->scale(x.g, -0.7301, EW_N);
    cpu->scale(x.c, -0.7301, EW_N);
    expect_close("scale", "x", x);
    pair_free(x);
}

static void test_scale_rows(void **state) {
    (void)state;
    const size_t row = 1031;
    Pair x = pair_random((size_t)B * row, 71, 1.0), factors = pair_random(B, 72, 1.0);
    gpu->scale_rows(x.g, factors.g, B, row);
    cpu->scale_rows(x.c, factors.c, B, row);
    expect_close("scale_rows", "x", x);
    pair_free(x); pair_free(factors);
}

// ---- cross-entropy -----------------------------------------------------------------------------
// Targets in [0, V) with row 5 ignored (-1) and row 0 aiming at the last class.
static int32_t *ce_targets(void) {
    int32_t *t = random_ids(N, 80, V);
    t[0] = V - 1;
    t[5] = -1;
    return t;
}

static void test_crossentropy_forward(void **state) {
    (void)state;
    int32_t *tg = ce_targets();
    PairI32 targets = pair_i32(tg, N);
    for (int alias = 0; alias < 2; alias++) {
        Pair logits = pair_random((size_t)N * V, 81, 4.0);
        Pair probs = pair_random((size_t)N * V, 82, 9.0), losses = pair_random(N, 83, 9.0);
        Pair *p = alias ? &logits : &probs;   // probs may alias logits
        gpu->crossentropy_forward(losses.g, p->g, logits.g, targets.g, N, V);
        cpu->crossentropy_forward(losses.c, p->c, logits.c, targets.c, N, V);
        expect_close("crossentropy_forward", alias ? "probs@" : "probs", *p);
        expect_close("crossentropy_forward", alias ? "losses@" : "losses", losses);
        pair_free(logits); pair_free(probs); pair_free(losses);
    }
    pair_i32_free(targets);
    free(tg);
}

static void test_crossentropy_backward(void **state) {
    (void)state;
    int32_t *tg = ce_targets();
    PairI32 targets = pair_i32(tg, N);
    const double dloss = 1.0 / N;
    for (int alias = 0; alias < 2; alias++) {
        // probs: a softmax of random logits, computed by the CPU and shared by both backends
        Pair probs = pair_random((size_t)N * V, 84, 4.0), losses = pair_random(N, 85, 1.0);
        cpu->crossentropy_forward(losses.c, probs.c, probs.c, targets.c, N, V);
        float *hp = gpu_get(cpu, probs.c, probs.n);
        gpu->upload(probs.g, hp, probs.n);
        free(hp);
        Pair dlogits = pair_random((size_t)N * V, 86, 9.0);   // garbage: (=), including the ignored row
        Pair *d = alias ? &probs : &dlogits;                   // dlogits may alias probs
        gpu->crossentropy_backward(d->g, probs.g, targets.g, dloss, N, V);
        cpu->crossentropy_backward(d->c, probs.c, targets.c, dloss, N, V);
        expect_close("crossentropy_backward", alias ? "dlogits@" : "dlogits", *d);
        pair_free(probs); pair_free(losses); pair_free(dlogits);
    }
    pair_i32_free(targets);
    free(tg);
}

static void test_argmax_rows(void **state) {
    (void)state;
    float *h = gpu_random((size_t)N * V, 90, 1.0);
    // Ties resolve to the lowest index as on the CPU: a row of zeros, and a row with two equal maxima.
    memset(h + (size_t)3 * V, 0, V * sizeof(float));
    h[(size_t)4 * V + 700] = 50.0f;
    h[(size_t)4 * V + 500] = 50.0f;
    h[(size_t)6 * V + V - 1] = 60.0f;   // the last column
    Pair probs = pair_from(h, (size_t)N * V);
    int32_t *garbage = random_ids(N, 91, V);
    PairI32 pred = pair_i32(garbage, N);
    gpu->argmax_rows(pred.g, probs.g, N, V);
    cpu->argmax_rows(pred.c, probs.c, N, V);
    int32_t *pg = malloc(N * sizeof *pg), *pc = malloc(N * sizeof *pc);
    gpu->synchronize();
    gpu->download_i32(pg, pred.g, N);
    cpu->download_i32(pc, pred.c, N);
    for (int i = 0; i < N; i++)
        if (pg[i] != pc[i]) fail_msg("argmax_rows: row %d: GPU %d, CPU %d", i, (int)pg[i], (int)pc[i]);
    assert_int_equal(pc[3], 0);
    assert_int_equal(pc[4], 500);
    assert_int_equal(pc[6], V - 1);
    free(pg); free(pc); free(h); free(garbage);
    pair_free(probs); pair_i32_free(pred);
}

// ---- reductions and AdamW ----------------------------------------------------------------------
// Compares sum or sum_squares at several lengths (shorter than the grid, odd, large), relative to
// sum |x| (or sum x^2), and checks that repeating the call gives the same bits.
static void check_reduction(int squares) {
    const size_t lengths[4] = {1, 5, 4099, 1000003};
    for (int k = 0; k < 4; k++) {
        size_t n = lengths[k];
        float *h = gpu_random(n, 100 + k, 1.0);
        double scale = 0;
        for (size_t i = 0; i < n; i++) scale += squares ? (double)h[i] * h[i] : fabs((double)h[i]);
        Pair x = pair_from(h, n);
        double g = squares ? gpu->sum_squares(x.g, n) : gpu->sum(x.g, n);
        double g2 = squares ? gpu->sum_squares(x.g, n) : gpu->sum(x.g, n);
        double c = squares ? cpu->sum_squares(x.c, n) : cpu->sum(x.c, n);
        double err = fabs(g - c) / (scale + 1e-300), tol = tolerance("sum");
        printf("# %-22s n=%-8zu error %.3g (tolerance %.3g)\n", squares ? "sum_squares" : "sum", n, err, tol);
        if (!(err <= tol)) fail_msg("%s(n=%zu): GPU %.17g, CPU %.17g", squares ? "sum_squares" : "sum", n, g, c);
        if (memcmp(&g, &g2, sizeof g) != 0) fail_msg("sum not reproducible: %.17g then %.17g", g, g2);
        pair_free(x);
        free(h);
    }
    void *empty = gpu->alloc(0);
    assert_true((squares ? gpu->sum_squares(empty, 0) : gpu->sum(empty, 0)) == 0.0);
    gpu->free(empty);
}

static void test_sum(void **state) {
    (void)state;
    check_reduction(0);
}

static void test_sum_squares(void **state) {
    (void)state;
    check_reduction(1);
}

static void test_adamw_update(void **state) {
    (void)state;
    const size_t n = 3 * 1031;
    float *hv = gpu_random(n, 110, 0.1);
    for (size_t i = 0; i < n; i++) hv[i] *= hv[i];   // second moments are >= 0
    Pair params = pair_random(n, 111, 1.0), m = pair_random(n, 112, 0.1), v = pair_from(hv, n);
    for (long t = 7; t <= 9; t++) {
        Pair grads = pair_random(n, 113 + (uint64_t)t, 1.0);
        gpu->adamw_update(params.g, grads.g, m.g, v.g, n, 1e-3, 0.9, 0.95, 1e-8, 0.1, 0.5, t);
        cpu->adamw_update(params.c, grads.c, m.c, v.c, n, 1e-3, 0.9, 0.95, 1e-8, 0.1, 0.5, t);
        pair_free(grads);
    }
    expect_close("adamw_update", "params", params);
    expect_close("adamw_update", "m", m);
    expect_close("adamw_update", "v", v);
    pair_free(params); pair_free(m); pair_free(v);
    free(hv);
}

// ---- bf16 storage (train.activations = "bf16") ------------------------------------------------
// Packing rounds on the bit pattern on both sides (cuda/bf16.cu, src/cpu/bf16.inc), so the GPU and
// the CPU agree bit for bit: every fp32 pattern class (normals of every binade, exact ties,
// subnormals, +-0, +-inf, NaNs with payloads) through pack and unpack, compared as bytes.
enum { BF16_N = 4099 };

static float bits_to_float(uint32_t u) { float f; memcpy(&f, &u, sizeof f); return f; }

static void test_bf16_pack_unpack(void **state) {
    (void)state;
    float *host = malloc(BF16_N * sizeof *host);
    for (size_t i = 0; i < BF16_N; i++) {
        uint32_t u = (uint32_t)rng_hash3(120, 1, i);
        if (i % 4 == 0) u = (u & 0xFFFF0000u) | 0x8000u;                       // an exact tie
        if (i % 16 == 1) u &= 0x807FFFFFu;                                      // a subnormal (or 0)
        if (i % 64 == 2) u |= 0x7F800000u;                                      // inf or a NaN
        host[i] = bits_to_float(u);
    }
    host[3] = 0.0f; host[5] = -0.0f; host[7] = INFINITY; host[9] = -INFINITY; host[11] = NAN;
    Pair x = pair_from(host, BF16_N);
    size_t before = 0, after = 0;
    gpu->memory_stats(&before, NULL);
    void *hg = gpu->alloc_bf16(BF16_N), *hc = cpu->alloc_bf16(BF16_N);
    gpu->memory_stats(&after, NULL);
    assert_int_equal(after - before, 2 * BF16_N);   // 2 bytes an element in the allocation table
    gpu->pack_bf16(hg, x.g, BF16_N);
    cpu->pack_bf16(hc, x.c, BF16_N);
    // into a range at an odd offset too: only that range changes
    gpu->pack_bf16(bf16_offset(hg, 101), be_offset(gpu, x.g, 7), 999);
    cpu->pack_bf16(bf16_offset(hc, 101), be_offset(cpu, x.c, 7), 999);
    Pair y = pair_garbage(BF16_N, 121);
    gpu->unpack_bf16(y.g, hg, BF16_N);
    cpu->unpack_bf16(y.c, hc, BF16_N);
    float *g = gpu_get(gpu, y.g, BF16_N), *c = gpu_get(cpu, y.c, BF16_N);
    size_t differ = 0, not_bf16 = 0;
    for (size_t i = 0; i < BF16_N; i++) {
        uint32_t ug, uc;
        memcpy(&ug, &g[i], sizeof ug);
        memcpy(&uc, &c[i], sizeof uc);
        differ += ug != uc;
        not_bf16 += (ug & 0xFFFFu) != 0;
    }
    printf("# %-26s %d values (ties, subnormals, inf, NaN): %zu differ from the CPU bitwise, %zu not bf16\n", "bf16_pack_unpack",
           BF16_N, differ, not_bf16);
    assert_int_equal(differ, 0);
    assert_int_equal(not_bf16, 0);
    assert_true(g[3] == 0.0f && !signbit(g[3]) && g[5] == 0.0f && signbit(g[5]));
    assert_true(isinf(g[7]) && g[7] > 0 && isinf(g[9]) && g[9] < 0 && isnan(g[11]));
    free(g); free(c); free(host);
    gpu->free(hg); cpu->free(hc);
    pair_free(x); pair_free(y);
}

// Why storing a GEMM's input in bf16 costs nothing on the GPU: under CUDA_GEMM_BF16 cuBLAS rounds
// its fp32 operands to bf16 to nearest even, so a GEMM fed unpack(pack(x)) computes bit for bit
// what it computes from x. Checked on the dense layer, forward and backward (dweight is the GEMM
// that reads the stored x in training).
static void test_bf16_storage_exact_for_bf16_gemm(void **state) {
    (void)state;
    backend_cuda_destroy();
    gpu = gpu_backend_or_skip(CUDA_GEMM_BF16);
    size_t nin = (size_t)N * C;
    float *hin = gpu_random(nin, 130, 1.0), *hw = gpu_random((size_t)OC * C, 131, 0.2), *hd = gpu_random((size_t)N * OC, 132, 1.0);
    void *inp = gpu_put(gpu, hin, nin), *w = gpu_put(gpu, hw, (size_t)OC * C), *dout = gpu_put(gpu, hd, (size_t)N * OC);
    void *kept = gpu->alloc_bf16(nin), *restored = gpu->alloc(nin);
    gpu->pack_bf16(kept, inp, nin);
    gpu->unpack_bf16(restored, kept, nin);
    float *out[2], *dw[2], *din[2];
    for (int r = 0; r < 2; r++) {
        const void *x = r ? restored : inp;
        void *o = gpu->alloc((size_t)N * OC), *dweight = gpu->alloc((size_t)OC * C), *dinp = gpu->alloc(nin);
        gpu->matmul_forward(o, x, w, NULL, N, C, OC);
        gpu->matmul_backward(dinp, GRAD_ASSIGN, dweight, NULL, dout, x, w, N, C, OC);
        out[r] = gpu_get(gpu, o, (size_t)N * OC);
        dw[r] = gpu_get(gpu, dweight, (size_t)OC * C);
        din[r] = gpu_get(gpu, dinp, nin);
        gpu->free(o); gpu->free(dweight); gpu->free(dinp);
    }
    int same_out = !memcmp(out[0], out[1], (size_t)N * OC * sizeof(float));
    int same_dw = !memcmp(dw[0], dw[1], (size_t)OC * C * sizeof(float));
    int same_din = !memcmp(din[0], din[1], nin * sizeof(float));
    float *hr = gpu_get(gpu, restored, nin);
    size_t rounded = 0;
    for (size_t i = 0; i < nin; i++) rounded += hr[i] != hin[i];
    gpu->free(inp); gpu->free(w); gpu->free(dout); gpu->free(kept); gpu->free(restored);
    backend_cuda_destroy();
    gpu = gpu_backend_or_skip(CUDA_GEMM_FP32);
    printf("# %-26s %zu of %zu inputs changed by the rounding; out %s, dweight %s, dinp %s\n", "bf16_storage_bf16_gemm",
           rounded, nin, same_out ? "bitwise equal" : "DIFFER", same_dw ? "bitwise equal" : "DIFFER",
           same_din ? "bitwise equal" : "DIFFER");
    for (int r = 0; r < 2; r++) { free(out[r]); free(dw[r]); free(din[r]); }
    free(hin); free(hw); free(hd); free(hr);
    assert_true(rounded > nin / 2);   // the inputs were not bf16 already
    assert_true(same_out && same_dw && same_din);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_memory),
        cmocka_unit_test(test_bf16_pack_unpack),
        cmocka_unit_test(test_bf16_storage_exact_for_bf16_gemm),
        cmocka_unit_test(test_encoder_forward),
        cmocka_unit_test(test_encoder_backward),
        cmocka_unit_test(test_layernorm_forward),
        cmocka_unit_test(test_layernorm_backward),
        cmocka_unit_test(test_matmul_forward_backward_fp32),
        cmocka_unit_test(test_matmul_forward_backward_bf16),
        cmocka_unit_test(test_matmul_gelu_forward),
        cmocka_unit_test(test_matmul_backward_gelu),
        cmocka_unit_test(test_add),
        cmocka_unit_test(test_accumulate),
        cmocka_unit_test(test_scale),
        cmocka_unit_test(test_scale_rows),
        cmocka_unit_test(test_crossentropy_forward),
        cmocka_unit_test(test_crossentropy_backward),
        cmocka_unit_test(test_argmax_rows),
        cmocka_unit_test(test_sum),
        cmocka_unit_test(test_sum_squares),
        cmocka_unit_test(test_adamw_update),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
