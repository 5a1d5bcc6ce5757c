// train.activations = "bf16" on the CPU backends: pack_bf16 rounds to nearest, ties to even
// (known values: ties, overflow, inf, NaN, subnormals, signed zero; the fp64 backend rounds once
// from fp64), unpack_bf16 is exact; and at the model level, with the kept GEMM inputs stored in
// bf16, the forward pass (losses, auxiliary sums) and every gradient that does not go through a
// stored tensor (biases, LayerNorm parameters, embeddings, the head, the stage input's gradient)
// are bitwise those of fp32, while the four weight gradients dW = dout^T x whose x is a stored
// tensor (qkv, attproj, fc, fcproj) stay within a bf16 tolerance. Under train.recompute = "block"
// nothing is stored and everything is bitwise fp32's. The activation bytes drop by what the
// layout says.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "config.h"
#include "model_gradcheck.h"
#include "model.h"
#include "rng.h"

// ---- pack / unpack ------------------------------------------------------------------------------

static float from_bits(uint32_t u) { float f; memcpy(&f, &u, sizeof f); return f; }
static uint32_t to_bits(float f) { uint32_t u; memcpy(&u, &f, sizeof u); return u; }

// x through pack and unpack on `be`, as fp64 (exact: the result is a bf16 value)
static double round_trip(const Backend *be, double x, int upload_f64) {
    void *t = be->alloc(1), *h = be->alloc_bf16(1);
    float xf = (float)x;
    if (upload_f64) be->upload_f64(t, &x, 1); else be->upload(t, &xf, 1);
    be->pack_bf16(h, t, 1);
    be->upload(t, &(float){12345}, 1);   // the unpack overwrites it
    be->unpack_bf16(t, h, 1);
    double back;
    be->download_f64(&back, t, 1);
    be->free(t);
    be->free(h);
    return back;
}

// Known fp32 inputs and their bf16 values; the same on both backends (exact fp32 inputs).
static void test_pack_known_values(void **state) {
    (void)state;
    const float m = 0x1p-133f;   // the bf16 subnormals' spacing
    struct { float x, want; const char *what; } cases[] = {
        {1.0f, 1.0f, "exact"},
        {1.0f + 0x1p-8f, 1.0f, "tie, kept part even: down"},
        {1.0f + 3 * 0x1p-8f, 1.0f + 0x1p-6f, "tie, kept part odd: up"},
        {1.0f + 0x1p-8f + 0x1p-20f, 1.0f + 0x1p-7f, "above the tie: up"},
        {1.0f + 0x1p-8f - 0x1p-20f, 1.0f, "below the tie: down"},
        {-(1.0f + 0x1p-8f), -1.0f, "negative tie"},
        {-(1.0f + 3 * 0x1p-8f), -(1.0f + 0x1p-6f), "negative tie, odd"},
        {3.140625f, 3.140625f, "exact bf16"},
        {0.1f, from_bits(0x3DCD0000u), "0.1 (0x3DCCCCCD) up"},
        {-0.0f, -0.0f, "negative zero"},
        {from_bits(0x7F7F0000u), from_bits(0x7F7F0000u), "largest finite bf16"},
        {from_bits(0x7F7F7FFFu), from_bits(0x7F7F0000u), "just below the tie at the top: down"},
        {from_bits(0x7F7F8000u), INFINITY, "tie at the top, odd: overflows to inf"},
        {FLT_MAX, INFINITY, "FLT_MAX: inf"},
        {-FLT_MAX, -INFINITY, "-FLT_MAX: -inf"},
        {INFINITY, INFINITY, "inf"},
        {-INFINITY, -INFINITY, "-inf"},
        {FLT_MIN, FLT_MIN, "smallest normal"},
        {m, m, "smallest bf16 subnormal"},
        {1.5f * m, 2 * m, "subnormal tie, odd: up"},
        {2.5f * m, 2 * m, "subnormal tie, even: down"},
        {0.5f * m, 0.0f, "half the smallest subnormal: tie to zero"},
        {0.5f * m + 0x1p-149f, m, "just above it: up"},
        {0x1p-149f, 0.0f, "smallest fp32 subnormal: zero"},
        {FLT_MIN - m / 2, FLT_MIN, "largest subnormal tie rounds to FLT_MIN (even)"},
    };
    const Backend *backends[2] = {backend_cpu_f32(), backend_cpu_f64()};
    for (int b = 0; b < 2; b++)
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            double got = round_trip(backends[b], cases[i].x, 0);
            float gf = (float)got;
            if (to_bits(gf) != to_bits(cases[i].want) || got != (double)gf)
                fail_msg("%s: %s: %a -> %a, want %a", backends[b]->name, cases[i].what, cases[i].x, got, cases[i].want);
        }
    // NaN stays NaN, whatever its payload (one whose payload is all in the dropped bits too)
    for (int b = 0; b < 2; b++) {
        assert_true(isnan(round_trip(backends[b], NAN, 0)));
        assert_true(isnan(round_trip(backends[b], from_bits(0x7F800001u), 0)));
        assert_true(isnan(round_trip(backends[b], from_bits(0xFF800001u), 0)));
    }
    // The fp64 backend rounds once, from fp64: 1 + 2^-8 + 2^-30 is above the tie, though its
    // fp32 rounding (what the fp32 backend holds) is the tie 1 + 2^-8, which goes down.
    double x = 1.0 + 0x1p-8 + 0x1p-30;
    assert_true(round_trip(backend_cpu_f64(), x, 1) == 1.0 + 0x1p-7);
    assert_true(round_trip(backend_cpu_f32(), x, 1) == 1.0);
    assert_true(round_trip(backend_cpu_f64(), 0x1p-140, 1) == 0.0);
    assert_true(round_trip(backend_cpu_f64(), 0x1p-134 + 0x1p-160, 1) == 0x1p-133);   // above the tie
    assert_true(round_trip(backend_cpu_f64(), 0x1p200, 1) == INFINITY);
}

// On fp32 inputs the two backends' roundings (the bit trick, and fp64's frexp/nearbyint) agree,
// over every binade from the subnormals to the overflow, and unpack gives back bf16 values exactly.
static void test_pack_backends_agree(void **state) {
    (void)state;
    const size_t n = 1 << 16;
    float *x = malloc(n * sizeof *x), *y32 = malloc(n * sizeof *y32);
    double *y64 = malloc(n * sizeof *y64);
    for (size_t i = 0; i < n; i++) {
        // random bit patterns (every exponent, both signs), every 8th one a tie exactly
        uint32_t u = (uint32_t)rng_hash3(5, 1, i);
        if (i % 8 == 0) u = (u & 0xFFFF0000u) | 0x8000u;
        if ((u & 0x7F800000u) == 0x7F800000u) u &= 0xBFFFFFFFu;   // no inf / NaN here
        x[i] = from_bits(u);
    }
    const Backend *be[2] = {backend_cpu_f32(), backend_cpu_f64()};
    for (int b = 0; b < 2; b++) {
        void *t = be[b]->alloc(n), *h = be[b]->alloc_bf16(n);
        be[b]->upload(t, x, n);
        be[b]->pack_bf16(h, t, n);
        be[b]->zero(t, n);
        be[b]->unpack_bf16(t, h, n);
        if (b == 0) be[b]->download(y32, t, n); else be[b]->download_f64(y64, t, n);
        be[b]->free(t);
        be[b]->free(h);
    }
    size_t differ = 0, not_bf16 = 0;
    for (size_t i = 0; i < n; i++) {
        differ += !(y64[i] == (double)y32[i] && !signbit(y64[i]) == !signbit(y32[i]));
        not_bf16 += (to_bits(y32[i]) & 0xFFFFu) != 0;
        // the nearest bf16: no other bf16 value is closer (ties: the even one)
        uint32_t lo = to_bits(x[i]) & 0xFFFF0000u, hi = lo + 0x10000u;
        // (above the largest finite bf16 the next value up is inf, at 2^128 for the distance)
        double vhi = isinf(from_bits(hi)) ? copysign(0x1p128, (double)x[i]) : (double)from_bits(hi);
        double dlo = fabs((double)x[i] - (double)from_bits(lo)), dhi = fabs(vhi - (double)x[i]);
        uint32_t want = dlo < dhi || (dlo == dhi && !(lo & 0x10000u)) ? lo : hi;
        if (to_bits(y32[i]) != want) fail_msg("%a: packed %a, nearest even %a", x[i], y32[i], from_bits(want));
    }
    printf("# %zu random fp32 values: %zu differ between the fp32 and fp64 backends, %zu unpacked are not bf16\n", n, differ, not_bf16);
    assert_int_equal(differ, 0);
    assert_int_equal(not_bf16, 0);
    free(x); free(y32); free(y64);
}

// ---- the model ----------------------------------------------------------------------------------
enum { B = 2, T = 6, L = 3 };

typedef void (*Setup)(Config *c);

static void tiny(Config *c) { tiny_model_config(c, L, T, 0.3); }
static void pre_norm(Config *c) { tiny(c); }
static void post_norm(Config *c) { tiny(c); c->norm = NORM_POST; c->tie_embeddings = 0; }
static void sga(Config *c) { tiny(c); strcpy(c->attention_kind, "sga"); }
static void fused(Config *c) { tiny(c); c->attention_fused = 1; }

// One forward and backward pass: losses (B,T), aux sums, every gradient and the input's gradient.
typedef struct {
    double *losses, aux[NUM_AUX], *grads, *dinput;
    size_t n_grads;
    unsigned char *gemm_input;   // (n_grads) 1 where the gradient is a dW whose x may be stored in bf16
    size_t act_bytes;
} Run;

static Run run(Setup setup, const Backend *be, RecomputeMode mode, ActivationPrecision prec) {
    Config cfg;
    setup(&cfg);
    cfg.recompute = mode;
    cfg.activations = prec;
    ModelShape s = model_shape_from_config(&cfg);
    Model m;
    Activations a;
    model_init(&m, be, s, 0, L, 1, 1, 1);
    model_init_weights(&m, 23);
    activations_init(&a, &m, B);
    a.pass.step = (StepContext){.training = 1, .step = 0, .loss_scale = 0.5, .attn_temperature = 1.0, .micro_batches = 2};
    model_begin_step(&m, &a.pass.step);
    int32_t tokens[B * T], targets[B * T];
    for (int i = 0; i < B * T; i++) {
        tokens[i] = (int32_t)(rng_hash3(4, 1, (uint64_t)i) % 11);
        targets[i] = i % 5 == 2 ? -1 : (int32_t)(rng_hash3(4, 2, (uint64_t)i) % 11);
    }
    be->upload_i32(a.tokens, tokens, B * T);
    be->upload_i32(a.targets, targets, B * T);
    model_forward(&m, &a);
    Run r = {0};
    r.act_bytes = a.bytes;
    r.losses = malloc(sizeof(double) * B * T);
    be->download_f64(r.losses, a.losses, B * T);
    memcpy(r.aux, a.aux, sizeof r.aux);
    model_backward(&m, &a, 1.0 / 7, NULL, NULL);
    r.n_grads = m.num_params;
    r.grads = malloc(sizeof(double) * r.n_grads);
    be->download_f64(r.grads, m.grads_mem, r.n_grads);
    size_t io = (size_t)B * T * s.d_model;
    r.dinput = malloc(sizeof(double) * io);
    be->download_f64(r.dinput, a.dresidual, io);
    r.gemm_input = calloc(r.n_grads, 1);
    const ParamId ids[] = {PARAM_QKV_W, PARAM_ATTPROJ_W, PARAM_FC_W, PARAM_FCPROJ_W};
    for (int layer = 0; layer < L; layer++)
        for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
            memset(r.gemm_input + model_param_offset(&m, ids[i], layer), 1, m.params[ids[i]].slice_numel);
    activations_free(&a, &m);
    model_free(&m);
    return r;
}

static void run_free(Run *r) { free(r->losses); free(r->grads); free(r->dinput); free(r->gemm_input); }

static size_t count_differ(const double *a, const double *b, size_t n) {
    size_t d = 0;
    for (size_t i = 0; i < n; i++) d += memcmp(&a[i], &b[i], sizeof(double)) != 0;
    return d;
}

// bf16 against fp32: what must be bitwise, and the largest error of the stored-input dWs relative
// to the largest |dW| (each stored x is off by at most 2^-8 relative, so dW by about that).
#define DW_TOLERANCE 1e-2
static void check(Setup setup, const char *label) {
    const Backend *backends[2] = {backend_cpu_f32(), backend_cpu_f64()};
    for (int b = 0; b < 2; b++)
        for (RecomputeMode mode = RECOMPUTE_NONE; mode <= RECOMPUTE_BLOCK; mode++) {
            Run ref = run(setup, backends[b], mode, ACTIVATIONS_FP32), got = run(setup, backends[b], mode, ACTIVATIONS_BF16);
            assert_int_equal(got.n_grads, ref.n_grads);
            size_t loss_differ = count_differ(got.losses, ref.losses, B * T) + count_differ(got.aux, ref.aux, NUM_AUX);
            size_t in_differ = count_differ(got.dinput, ref.dinput, (size_t)B * T * 8);
            size_t other_differ = 0, dw_differ = 0, n_dw = 0;
            double max_err = 0, max_ref = 0;
            for (size_t i = 0; i < ref.n_grads; i++) {
                if (!ref.gemm_input[i]) { other_differ += memcmp(&got.grads[i], &ref.grads[i], sizeof(double)) != 0; continue; }
                n_dw++;
                dw_differ += got.grads[i] != ref.grads[i];
                max_err = fmax(max_err, fabs(got.grads[i] - ref.grads[i]));
                max_ref = fmax(max_ref, fabs(ref.grads[i]));
            }
            double rel = max_err / max_ref;
            printf("# %-10s %s recompute %-9s: losses+aux %zu differ, other grads %zu differ, input grad %zu differ; "
                   "stored-input dW: %zu of %zu differ, max error %.3g of max |dW| %.3g (%.3g relative)\n",
                   label, backends[b]->name, recompute_name(mode), loss_differ, other_differ, in_differ, dw_differ, n_dw,
                   max_err, max_ref, rel);
            assert_int_equal(loss_differ, 0);
            assert_int_equal(other_differ, 0);
            assert_int_equal(in_differ, 0);
            assert_true(max_ref > 0);
            if (mode == RECOMPUTE_BLOCK) {
                assert_int_equal(dw_differ, 0);               // nothing stored: fp32 exactly
                assert_int_equal(got.act_bytes, ref.act_bytes);
            } else {
                assert_true(dw_differ > 0);                   // the rounding does reach them
                assert_true(rel <= DW_TOLERANCE);
                assert_true(got.act_bytes < ref.act_bytes);
            }
            run_free(&ref);
            run_free(&got);
        }
}

static void test_pre_norm(void **state) { (void)state; check(pre_norm, "pre-norm"); }
static void test_post_norm(void **state) { (void)state; check(post_norm, "post-norm"); }
static void test_sga(void **state) { (void)state; check(sga, "sga"); }
static void test_fused(void **state) { (void)state; check(fused, "fused"); }

// Under "none" and "attention" the bf16 layout saves, per layer but one, half of ln1, attmerged,
// fch_gelu (and ln2 pre-norm) and pays their one-layer fp32 scratch: exactly that on the fp32 backend.
static void test_activation_bytes(void **state) {
    (void)state;
    for (int post = 0; post < 2; post++) {
        Run ref = run(post ? post_norm : pre_norm, backend_cpu_f32(), RECOMPUTE_NONE, ACTIVATIONS_FP32);
        Run got = run(post ? post_norm : pre_norm, backend_cpu_f32(), RECOMPUTE_NONE, ACTIVATIONS_BF16);
        size_t N = B * T, C = 8, H = 16, per_layer = N * ((post ? 2 : 3) * C + H);   // elements of the stored tensors
        size_t want = ref.act_bytes - L * per_layer * 4 + per_layer * 4 + L * per_layer * 2;
        printf("# %s activation bytes: fp32 %zu, bf16 %zu\n", post ? "post-norm" : "pre-norm", ref.act_bytes, got.act_bytes);
        assert_int_equal(got.act_bytes, want);
        run_free(&ref);
        run_free(&got);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pack_known_values), cmocka_unit_test(test_pack_backends_agree),
        cmocka_unit_test(test_pre_norm),          cmocka_unit_test(test_post_norm),
        cmocka_unit_test(test_sga),               cmocka_unit_test(test_fused),
        cmocka_unit_test(test_activation_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
