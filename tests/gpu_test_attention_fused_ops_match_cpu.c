// The fused causal attention ops of the CUDA backend (cuda/attention_fused.cu) against their CPU
// twin (src/cpu/attention_fused.inc, the fp32 CPU backend): y, lse, ent and dq, dk, dv at T = 1, 7,
// 64 and 512 (small BH, head sizes 24, 64 and 128), under the fp32 and the bf16 backend (the fused
// kernels use no cuBLAS: both must give bitwise the same results); causality and batch
// independence on the GPU (bitwise); and a real shape, T = 2048, 16 heads of 64, where the GPU
// computes every head and two of them are compared with the CPU twin run on just those heads.
// The (=) outputs start from different garbage on each side. Named *_ops_match_cpu: tests/run_emu.sh
// reruns it under other schedules (determinism) and counts its launches (kernel coverage).
// Exits 77 (skip) where there is no CUDA device.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <string.h>
#include <time.h>
#include "gpu_pairs.h"

// Scale-relative max error (gpu_compare.h). The GPU accumulates in fp32 in key order, the CPU
// twin in double: the forward outputs are a few fp32 roundings of T-term sums apart, the gradients
// a few more (dp - D cancels).
#define TOL_FORWARD  2e-5
#define TOL_BACKWARD 1e-4

static int group_setup(void **state) {
    (void)state;
    gpu = gpu_backend_or_skip(CUDA_GEMM_FP32);
    cpu = backend_cpu_f32();
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    backend_cuda_destroy();
    return 0;
}

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

// One problem on both backends: inputs q, k, v, dy and the outputs, each a Pair.
typedef struct {
    int BH, T, hs;
    double scale;
    Pair q, k, v, dy, y, lse, ent, dq, dk, dv;
} Problem;

static Problem problem(int BH, int T, int hs, uint64_t seed) {
    size_t n = (size_t)BH * T * hs, r = (size_t)BH * T;
    // Logits of a few units: peaked rows exercise the online rescaling.
    Problem p = {BH, T, hs, 1.0 / sqrt((double)hs), pair_random(n, seed, 1.5), pair_random(n, seed + 1, 1.5),
                 pair_random(n, seed + 2, 1.0), pair_random(n, seed + 3, 1.0), pair_garbage(n, seed + 4),
                 pair_garbage(r, seed + 5), pair_garbage(r, seed + 6), pair_garbage(n, seed + 7), pair_garbage(n, seed + 8),
                 pair_garbage(n, seed + 9)};
    return p;
}

static void problem_free(Problem p) {
    Pair all[] = {p.q, p.k, p.v, p.dy, p.y, p.lse, p.ent, p.dq, p.dk, p.dv};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) pair_free(all[i]);
}

// Forward then backward on backend be, on its copies (side 0: GPU, 1: CPU).
static void run_side(const Backend *be, Problem *p, int side) {
#define S(x) (side ? p->x.c : p->x.g)
    be->attn_fused_forward(S(y), S(lse), S(ent), S(q), S(k), S(v), p->scale, p->BH, p->T, p->hs);
    be->attn_fused_backward(S(dq), S(dk), S(dv), S(dy), S(q), S(k), S(v), S(y), S(lse), p->scale, p->BH, p->T, p->hs);
#undef S
}

static void compare(const char *label, Problem *p) {
    char what[96];
    struct { const char *name; Pair x; double tol; } outs[] = {
        {"y", p->y, TOL_FORWARD}, {"lse", p->lse, TOL_FORWARD}, {"ent", p->ent, TOL_FORWARD},
        {"dq", p->dq, TOL_BACKWARD}, {"dk", p->dk, TOL_BACKWARD}, {"dv", p->dv, TOL_BACKWARD},
    };
    for (size_t i = 0; i < sizeof outs / sizeof outs[0]; i++) {
        snprintf(what, sizeof what, "%s %s", label, outs[i].name);
        // T = 1: dq and dk are 0 (one key: p = 1 and dp = D); the CPU's double sums give exact
        // zeros, which leave the scale-relative error no scale. The GPU's must be fp32 roundings.
        if (p->T == 1 && (outs[i].x.g == p->dq.g || outs[i].x.g == p->dk.g)) {
            float *g = gpu_get(gpu, outs[i].x.g, outs[i].x.n);
            double worst = 0;
            for (size_t e = 0; e < outs[i].x.n; e++) worst = fabs(g[e]) > worst ? fabs(g[e]) : worst;
            free(g);
            printf("# %-26s %-28s max |x| %.3g (must be 0 up to fp32 roundings)\n", "attn_fused", what, worst);
            assert_true(worst < 1e-6);
            continue;
        }
        expect_pair_close("attn_fused", what, outs[i].x, outs[i].tol);
    }
}

// Host copies of the GPU outputs, to compare runs bitwise.
typedef struct { float *y, *lse, *ent, *dq, *dk, *dv; } Host;

static Host host_of(Problem *p) {
    size_t n = (size_t)p->BH * p->T * p->hs, r = (size_t)p->BH * p->T;
    Host h = {gpu_get(gpu, p->y.g, n), gpu_get(gpu, p->lse.g, r), gpu_get(gpu, p->ent.g, r), gpu_get(gpu, p->dq.g, n),
              gpu_get(gpu, p->dk.g, n), gpu_get(gpu, p->dv.g, n)};
    return h;
}

static void host_free(Host h) { free(h.y); free(h.lse); free(h.ent); free(h.dq); free(h.dk); free(h.dv); }

static int same(const float *a, const float *b, size_t n) { return memcmp(a, b, n * sizeof(float)) == 0; }

static const struct { int BH, T, hs; } SHAPES[] = {{3, 1, 24}, {3, 7, 24}, {3, 64, 24}, {2, 512, 64}, {2, 40, 128}};

static void test_fused_ops_match_cpu(void **state) {
    (void)state;
    for (size_t s = 0; s < sizeof SHAPES / sizeof SHAPES[0]; s++) {
        Problem p = problem(SHAPES[s].BH, SHAPES[s].T, SHAPES[s].hs, 100 + 10 * s);
        double t0 = seconds();
        run_side(gpu, &p, 0);
        gpu->synchronize();
        double t1 = seconds();
        run_side(cpu, &p, 1);
        char label[64];
        snprintf(label, sizeof label, "BH=%d T=%d hs=%d", p.BH, p.T, p.hs);
        printf("# %s: GPU (emulated) %.2f s, CPU %.3f s\n", label, t1 - t0, seconds() - t1);
        compare(label, &p);
        problem_free(p);
    }
}

// The bf16 backend changes cuBLAS's precision only; the fused kernels use none: bitwise the same.
static void test_fused_ops_under_bf16_backend(void **state) {
    (void)state;
    char why[256] = "";
    Problem p = problem(2, 64, 24, 300);
    run_side(gpu, &p, 0);
    Host fp32 = host_of(&p);
    problem_free(p);   // before its backend goes
    backend_cuda_destroy();
    gpu = backend_cuda_create(0, CUDA_GEMM_BF16, why, sizeof why);
    if (!gpu) fail_msg("cannot create the bf16 CUDA backend: %s", why);
    Problem b = problem(2, 64, 24, 300);   // the same inputs on the new backend
    run_side(gpu, &b, 0);
    run_side(cpu, &b, 1);
    compare("bf16 backend BH=2 T=64", &b);
    Host bf = host_of(&b);
    size_t n = (size_t)2 * 64 * 24, r = 2 * 64;
    assert_true(same(fp32.y, bf.y, n) && same(fp32.lse, bf.lse, r) && same(fp32.ent, bf.ent, r));
    assert_true(same(fp32.dq, bf.dq, n) && same(fp32.dk, bf.dk, n) && same(fp32.dv, bf.dv, n));
    printf("# bf16 backend: every output bitwise the fp32 backend's\n");
    host_free(fp32); host_free(bf); problem_free(b);
    backend_cuda_destroy();
    gpu = backend_cuda_create(0, CUDA_GEMM_FP32, why, sizeof why);
    if (!gpu) fail_msg("cannot re-create the fp32 CUDA backend: %s", why);
}

// Writes host values into rows [r0, r1) of every head of the GPU copy of x (BH,T,hs).
static void rewrite_rows(Pair x, int BH, int T, int hs, int r0, int r1, float add) {
    size_t n = (size_t)BH * T * hs;
    float *h = gpu_get(gpu, x.g, n);
    for (int bh = 0; bh < BH; bh++)
        for (int i = r0; i < r1; i++)
            for (int d = 0; d < hs; d++) h[((size_t)bh * T + i) * hs + d] += add * (1 + d % 3);
    gpu->upload(x.g, h, n);
    free(h);
}

// Rows i <= c see keys j <= c only; keys j >= c are reached by queries i >= j only (bitwise),
// across tile boundaries (T = 100, c = 45: inside the second tile of 32).
static void test_fused_causality_on_gpu(void **state) {
    (void)state;
    int BH = 2, T = 100, hs = 24, c = 45;
    size_t hn = (size_t)hs, rn = (size_t)c + 1;
    Problem p = problem(BH, T, hs, 400);
    run_side(gpu, &p, 0);
    Host ref = host_of(&p);
    rewrite_rows(p.k, BH, T, hs, c + 1, T, 1.0f);
    rewrite_rows(p.v, BH, T, hs, c + 1, T, -2.0f);
    rewrite_rows(p.q, BH, T, hs, c + 1, T, 0.5f);
    rewrite_rows(p.dy, BH, T, hs, c + 1, T, 0.25f);
    run_side(gpu, &p, 0);
    Host got = host_of(&p);
    for (int bh = 0; bh < BH; bh++) {
        size_t h0 = (size_t)bh * T * hn, r0 = (size_t)bh * T;
        assert_true(same(got.y + h0, ref.y + h0, rn * hn));
        assert_true(same(got.lse + r0, ref.lse + r0, rn) && same(got.ent + r0, ref.ent + r0, rn));
        assert_true(same(got.dq + h0, ref.dq + h0, rn * hn));
        assert_false(same(got.y + h0 + rn * hn, ref.y + h0 + rn * hn, (T - rn) * hn));   // not vacuous
    }
    host_free(ref); host_free(got);
    problem_free(p);
    p = problem(BH, T, hs, 500);
    run_side(gpu, &p, 0);
    ref = host_of(&p);
    rewrite_rows(p.q, BH, T, hs, 0, c, 0.75f);
    rewrite_rows(p.dy, BH, T, hs, 0, c, -0.5f);
    run_side(gpu, &p, 0);
    got = host_of(&p);
    for (int bh = 0; bh < BH; bh++) {
        size_t from = ((size_t)bh * T + c) * hn;
        assert_true(same(got.dk + from, ref.dk + from, (T - c) * hn) && same(got.dv + from, ref.dv + from, (T - c) * hn));
    }
    printf("# causality: rows <= %d bitwise unchanged by later rows; dk, dv of keys >= %d by earlier queries\n", c, c);
    host_free(ref); host_free(got);
    problem_free(p);
}

// Another (batch, head) slice's inputs leave the other slices' outputs bitwise unchanged.
static void test_fused_batch_independence_on_gpu(void **state) {
    (void)state;
    int BH = 3, T = 70, hs = 24;
    size_t nh = (size_t)T * hs;
    Problem p = problem(BH, T, hs, 600);
    run_side(gpu, &p, 0);
    Host ref = host_of(&p);
    Pair ins[] = {p.q, p.k, p.v, p.dy};
    for (size_t i = 0; i < 4; i++) {
        float *h = gpu_get(gpu, ins[i].g, ins[i].n);
        for (size_t e = nh; e < 2 * nh; e++) h[e] = h[e] * -1.5f + 0.25f;   // slice 1
        gpu->upload(ins[i].g, h, ins[i].n);
        free(h);
    }
    run_side(gpu, &p, 0);
    Host got = host_of(&p);
    for (int bh = 0; bh < BH; bh++) {
        size_t h = (size_t)bh * nh, r = (size_t)bh * T;
        int unchanged = same(got.y + h, ref.y + h, nh) && same(got.lse + r, ref.lse + r, T) && same(got.ent + r, ref.ent + r, T) &&
                        same(got.dq + h, ref.dq + h, nh) && same(got.dk + h, ref.dk + h, nh) && same(got.dv + h, ref.dv + h, nh);
        assert_int_equal(unchanged, bh != 1);
    }
    host_free(ref); host_free(got);
    problem_free(p);
}

// The real shape: T = 2048, 16 heads of 64 (one sequence). The GPU runs all 16 heads; the CPU twin
// runs heads 0 and 11 alone (the op is per head), and those two are compared whole.
static void test_fused_real_shape(void **state) {
    (void)state;
    enum { RBH = 16, RT = 2048, RHS = 64 };
    const int heads[2] = {0, 11};
    size_t nh = (size_t)RT * RHS;
    Problem p = problem(RBH, RT, RHS, 700);
    double t0 = seconds();
    run_side(gpu, &p, 0);
    gpu->synchronize();
    double t1 = seconds();
    for (int hi = 0; hi < 2; hi++) {
        int h = heads[hi];
        // One head on the CPU: its slices of the inputs, into a BH = 1 problem.
        Problem one = problem(1, RT, RHS, 800);
        Pair src[] = {p.q, p.k, p.v, p.dy}, dst[] = {one.q, one.k, one.v, one.dy};
        for (int i = 0; i < 4; i++) {
            float *x = gpu_get(gpu, be_offset(gpu, src[i].g, h * nh), nh);
            gpu->upload(dst[i].g, x, nh);
            cpu->upload(dst[i].c, x, nh);
            free(x);
        }
        run_side(cpu, &one, 1);
        // The GPU's outputs of head h, into the one-head problem's GPU copies.
        Pair gout[] = {p.y, p.dq, p.dk, p.dv}, oout[] = {one.y, one.dq, one.dk, one.dv};
        for (int i = 0; i < 4; i++) gpu->copy(oout[i].g, be_offset(gpu, gout[i].g, h * nh), nh);
        gpu->copy(one.lse.g, be_offset(gpu, p.lse.g, (size_t)h * RT), RT);
        gpu->copy(one.ent.g, be_offset(gpu, p.ent.g, (size_t)h * RT), RT);
        char label[64];
        snprintf(label, sizeof label, "T=2048 hs=64 head %d of 16", h);
        compare(label, &one);
        problem_free(one);
    }
    printf("# real shape: GPU (emulated) %.1f s for 16 heads, CPU twin %.1f s for 2 heads\n", t1 - t0, seconds() - t1);
    problem_free(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fused_ops_match_cpu),
        cmocka_unit_test(test_fused_ops_under_bf16_backend),
        cmocka_unit_test(test_fused_causality_on_gpu),
        cmocka_unit_test(test_fused_batch_independence_on_gpu),
        cmocka_unit_test(test_fused_real_shape),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
