// attention.fused: the fused causal attention ops (attn_fused_forward/backward) against the
// materialised ops on the fp64 CPU backend (y, the log-sum-exp, the row entropy and the three
// gradients to ~1e-12), a finite-difference check of the fused backward, causality and batch
// independence (bitwise), at T = 1, 7 and 64; and at the model level SDPA's fused form against the
// materialised one: loss, every gradient, entropies and trace maps, under every train.recompute
// mode, and the variant's wiring (same name and parameters, no (B,NH,T,T) in `info`'s estimate).
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "backend.h"
#include "config.h"
#include "model_gradcheck.h"
#include "flops.h"
#include "memory_estimate.h"
#include "model.h"
#include "rng.h"

enum { BH = 3, HS = 5 };

static double *host_random(size_t n, uint64_t seed, double scale) {
    double *x = malloc((n ? n : 1) * sizeof(double));
    for (size_t i = 0; i < n; i++) x[i] = (double)(float)(scale * rng_normal(seed, 41, i));
    return x;
}

static void *put(const Backend *be, const double *x, size_t n) {
    void *d = be->alloc(n ? n : 1);
    be->upload_f64(d, x, n);
    return d;
}

static double *get(const Backend *be, const void *d, size_t n) {
    double *x = malloc((n ? n : 1) * sizeof(double));
    be->download_f64(x, d, n);
    return x;
}

// max |a - b| / (max |b| + 1e-300)
static double rel_err(const double *a, const double *b, size_t n) {
    double diff = 0, ref = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]);
        if (d != d) return INFINITY;
        if (d > diff) diff = d;
        if (fabs(b[i]) > ref) ref = fabs(b[i]);
    }
    return diff / (ref + 1e-300);
}

static void check(const char *what, int T, double err, double tol) {
    printf("# T=%-3d %-28s error %.3g (tolerance %.3g)\n", T, what, err, tol);
    assert_true(err < tol);
}

// The inputs of one test: q, k, v, dy (BH,T,hs) on the host.
typedef struct {
    int T;
    double scale;
    double *q, *k, *v, *dy;
} Inputs;

static Inputs inputs(int T, uint64_t seed) {
    size_t n = (size_t)BH * T * HS;
    // Logit scale ~2: peaked rows, so that the online rescaling is exercised.
    Inputs in = {T, 1.0 / sqrt((double)HS), host_random(n, seed, 1.5), host_random(n, seed + 1, 1.5), host_random(n, seed + 2, 1.0),
                 host_random(n, seed + 3, 1.0)};
    return in;
}

static void inputs_free(Inputs in) { free(in.q); free(in.k); free(in.v); free(in.dy); }

// The fused ops on backend be: y, dq, dk, dv (BH,T,hs), lse, ent (BH,T) on the host.
typedef struct {
    double *y, *lse, *ent, *dq, *dk, *dv;
} Outputs;

static Outputs fused(const Backend *be, Inputs in) {
    int T = in.T;
    size_t n = (size_t)BH * T * HS, r = (size_t)BH * T;
    void *q = put(be, in.q, n), *k = put(be, in.k, n), *v = put(be, in.v, n), *dy = put(be, in.dy, n);
    void *y = be->alloc(n), *lse = be->alloc(r), *ent = be->alloc(r), *dq = be->alloc(n), *dk = be->alloc(n), *dv = be->alloc(n);
    // (=) outputs: start them from garbage, which must vanish
    double *junk = host_random(n, 999, 1e3);
    be->upload_f64(dq, junk, n); be->upload_f64(dk, junk, n); be->upload_f64(dv, junk, n);
    free(junk);
    be->attn_fused_forward(y, lse, ent, q, k, v, in.scale, BH, T, HS);
    be->attn_fused_backward(dq, dk, dv, dy, q, k, v, y, lse, in.scale, BH, T, HS);
    Outputs o = {get(be, y, n), get(be, lse, r), get(be, ent, r), get(be, dq, n), get(be, dk, n), get(be, dv, n)};
    void *all[] = {q, k, v, dy, y, lse, ent, dq, dk, dv};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) be->free(all[i]);
    return o;
}

// The same from the materialised ops (scores, causal softmax, values and their backward), the
// log-sum-exp from the scores on the host.
static Outputs materialised(const Backend *be, Inputs in) {
    int T = in.T;
    size_t n = (size_t)BH * T * HS, r = (size_t)BH * T, tt = (size_t)BH * T * T;
    void *q = put(be, in.q, n), *k = put(be, in.k, n), *v = put(be, in.v, n), *dy = put(be, in.dy, n);
    void *y = be->alloc(n), *ent = be->alloc(r), *dq = be->alloc(n), *dk = be->alloc(n), *dv = be->alloc(n);
    void *scores = be->alloc(tt), *probs = be->alloc(tt), *dprobs = be->alloc(tt), *dscores = be->alloc(tt);
    be->attn_scores(scores, q, k, in.scale, BH, T, HS, 0, T);
    be->softmax_causal_forward(probs, scores, BH, T, 0, T);
    be->attn_values(y, probs, v, BH, T, HS, 0, T);
    be->attn_row_entropy(ent, probs, BH, T);
    be->attn_values_backward(dprobs, dv, dy, probs, v, BH, T, HS, 0, T);
    be->softmax_causal_backward(dscores, dprobs, probs, BH, T, 0, T);
    be->attn_scores_backward(dq, dk, dscores, q, k, in.scale, BH, T, HS, 0, T);
    double *s = get(be, scores, tt), *lse = malloc(r * sizeof(double));
    for (size_t row = 0; row < r; row++) {
        int i = (int)(row % T);
        const double *si = s + row * T;
        double m = si[0], sum = 0;
        for (int j = 1; j <= i; j++) m = si[j] > m ? si[j] : m;
        for (int j = 0; j <= i; j++) sum += exp(si[j] - m);
        lse[row] = m + log(sum);
    }
    free(s);
    Outputs o = {get(be, y, n), lse, get(be, ent, r), get(be, dq, n), get(be, dk, n), get(be, dv, n)};
    void *all[] = {q, k, v, dy, y, ent, dq, dk, dv, scores, probs, dprobs, dscores};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) be->free(all[i]);
    return o;
}

static void outputs_free(Outputs o) { free(o.y); free(o.lse); free(o.ent); free(o.dq); free(o.dk); free(o.dv); }

static const int SIZES[] = {1, 7, 64};

static void test_fused_matches_materialised(void **state) {
    (void)state;
    for (size_t t = 0; t < sizeof SIZES / sizeof SIZES[0]; t++) {
        int T = SIZES[t];
        size_t n = (size_t)BH * T * HS, r = (size_t)BH * T;
        Inputs in = inputs(T, 10 + t);
        Outputs f = fused(backend_cpu_f64(), in), m = materialised(backend_cpu_f64(), in);
        check("fp64 y", T, rel_err(f.y, m.y, n), 1e-12);
        check("fp64 lse", T, rel_err(f.lse, m.lse, r), 1e-12);
        // T = 1: every entropy is 0, and so must the fused one be (exactly: log 1 - 0 / 1)
        check("fp64 entropy", T, T == 1 ? rel_err(f.ent, m.ent, r) * 1e-300 + fabs(f.ent[0]) : rel_err(f.ent, m.ent, r), 1e-12);
        check("fp64 dq", T, rel_err(f.dq, m.dq, n), 1e-12);
        check("fp64 dk", T, rel_err(f.dk, m.dk, n), 1e-12);
        check("fp64 dv", T, rel_err(f.dv, m.dv, n), 1e-12);
        // The fp32 backend's fused ops (double accumulation, fp32 in and out) against fp64.
        Outputs g = fused(backend_cpu_f32(), in);
        check("fp32 y", T, rel_err(g.y, f.y, n), 1e-6);
        check("fp32 lse", T, rel_err(g.lse, f.lse, r), 1e-6);
        if (T > 1) check("fp32 entropy", T, rel_err(g.ent, f.ent, r), 1e-5);
        check("fp32 dq", T, rel_err(g.dq, f.dq, n), 1e-5);
        check("fp32 dk", T, rel_err(g.dk, f.dk, n), 1e-5);
        check("fp32 dv", T, rel_err(g.dv, f.dv, n), 1e-5);
        outputs_free(f); outputs_free(m); outputs_free(g); inputs_free(in);
    }
}

// L = sum(dy * y) with fixed weights dy: central differences of L in q, k, v on the fp64 backend
// against the fused backward, every element.
static double objective(const Backend *be, Inputs in) {
    Outputs o = fused(be, in);
    double L = 0;
    for (size_t i = 0; i < (size_t)BH * in.T * HS; i++) L += in.dy[i] * o.y[i];
    outputs_free(o);
    return L;
}

static void test_fused_backward_finite_differences(void **state) {
    (void)state;
    const Backend *be = backend_cpu_f64();
    for (size_t t = 0; t < sizeof SIZES / sizeof SIZES[0]; t++) {
        int T = SIZES[t] > 7 ? 12 : SIZES[t];   // every element of every input: a small T suffices past 7
        size_t n = (size_t)BH * T * HS;
        Inputs in = inputs(T, 20 + t);
        Outputs g = fused(be, in);
        double *x[3] = {in.q, in.k, in.v}, *analytic[3] = {g.dq, g.dk, g.dv}, h = 1e-6;
        const char *names[3] = {"finite differences dq", "finite differences dk", "finite differences dv"};
        for (int w = 0; w < 3; w++) {
            double *fd = malloc(n * sizeof(double));
            for (size_t e = 0; e < n; e++) {
                double keep = x[w][e];
                x[w][e] = keep + h;
                double up = objective(be, in);
                x[w][e] = keep - h;
                double down = objective(be, in);
                x[w][e] = keep;
                fd[e] = (up - down) / (2 * h);
            }
            check(names[w], T, rel_err(analytic[w], fd, n), 1e-7);
            free(fd);
        }
        outputs_free(g); inputs_free(in);
    }
}

static int bitwise_equal(const double *a, const double *b, size_t n) { return memcmp(a, b, n * sizeof(double)) == 0; }

// Rows i <= c see keys j <= c only: new keys and values past c leave y, lse, ent and dq of those
// rows bitwise as they were; and new queries and output gradients before c leave dk and dv of the
// keys j >= c bitwise (only queries i >= j reach them). Both backends.
static void test_fused_causality(void **state) {
    (void)state;
    const Backend *backends[2] = {backend_cpu_f32(), backend_cpu_f64()};
    for (int bi = 0; bi < 2; bi++)
        for (size_t t = 1; t < sizeof SIZES / sizeof SIZES[0]; t++) {
            int T = SIZES[t], c = T / 2;
            Inputs in = inputs(T, 30 + t);
            Outputs ref = fused(backends[bi], in);
            for (int bh = 0; bh < BH; bh++)
                for (int i = c + 1; i < T; i++)
                    for (int d = 0; d < HS; d++) {
                        size_t e = ((size_t)bh * T + i) * HS + d;
                        in.k[e] += 1.0; in.v[e] -= 2.0; in.q[e] *= 3.0; in.dy[e] += 0.5;
                    }
            Outputs got = fused(backends[bi], in);
            for (int bh = 0; bh < BH; bh++) {
                size_t rows = (size_t)bh * T, heads = rows * HS, nr = (size_t)c + 1, nh = nr * HS;
                assert_true(bitwise_equal(got.y + heads, ref.y + heads, nh));
                assert_true(bitwise_equal(got.lse + rows, ref.lse + rows, nr));
                assert_true(bitwise_equal(got.ent + rows, ref.ent + rows, nr));
                assert_true(bitwise_equal(got.dq + heads, ref.dq + heads, nh));
                // the changed rows did change (the test is not vacuous)
                assert_false(bitwise_equal(got.y + heads + nh, ref.y + heads + nh, (size_t)(T - c - 1) * HS));
            }
            outputs_free(got); outputs_free(ref); inputs_free(in);
            in = inputs(T, 40 + t);
            ref = fused(backends[bi], in);
            for (int bh = 0; bh < BH; bh++)
                for (int i = 0; i < c; i++)
                    for (int d = 0; d < HS; d++) {
                        size_t e = ((size_t)bh * T + i) * HS + d;
                        in.q[e] *= -2.0; in.dy[e] += 1.0;
                    }
            got = fused(backends[bi], in);
            for (int bh = 0; bh < BH; bh++) {
                size_t from = ((size_t)bh * T + c) * HS, nh = (size_t)(T - c) * HS;
                assert_true(bitwise_equal(got.dk + from, ref.dk + from, nh));
                assert_true(bitwise_equal(got.dv + from, ref.dv + from, nh));
                assert_false(bitwise_equal(got.dq + (size_t)bh * T * HS, ref.dq + (size_t)bh * T * HS, (size_t)c * HS));
            }
            printf("# T=%-3d %s causality: rows <= %d bitwise unchanged by later keys; keys >= %d by earlier queries\n", T,
                   bi ? "fp64" : "fp32", c, c);
            outputs_free(got); outputs_free(ref); inputs_free(in);
        }
}

// Another (batch, head) slice's inputs leave every output of the others bitwise unchanged.
static void test_fused_batch_independence(void **state) {
    (void)state;
    const Backend *backends[2] = {backend_cpu_f32(), backend_cpu_f64()};
    for (int bi = 0; bi < 2; bi++)
        for (size_t t = 0; t < sizeof SIZES / sizeof SIZES[0]; t++) {
            int T = SIZES[t];
            size_t nh = (size_t)T * HS;
            Inputs in = inputs(T, 50 + t);
            Outputs ref = fused(backends[bi], in);
            for (size_t e = nh; e < 2 * nh; e++) { in.q[e] += 1; in.k[e] -= 1; in.v[e] *= 2; in.dy[e] += 3; }   // slice 1
            Outputs got = fused(backends[bi], in);
            for (int bh = 0; bh < BH; bh++) {
                size_t h = (size_t)bh * nh, r = (size_t)bh * T;
                int same = bitwise_equal(got.y + h, ref.y + h, nh) && bitwise_equal(got.lse + r, ref.lse + r, (size_t)T) &&
                           bitwise_equal(got.ent + r, ref.ent + r, (size_t)T) && bitwise_equal(got.dq + h, ref.dq + h, nh) &&
                           bitwise_equal(got.dk + h, ref.dk + h, nh) && bitwise_equal(got.dv + h, ref.dv + h, nh);
                assert_int_equal(same, bh != 1);
            }
            outputs_free(got); outputs_free(ref); inputs_free(in);
        }
}

// ---- the model ----------------------------------------------------------------------------------

enum { MB = 2, MT = 7, ML = 3 };

static void tiny(Config *c) { tiny_model_config(c, ML, MT, 0.5); }

// One training pass on the fp64 backend; the loss, every gradient, the head entropies and the
// trace maps of every layer, flattened.
typedef struct {
    double *v;
    size_t n;
} Record;

static void record(Record *r, const double *x, size_t n) {
    r->v = realloc(r->v, (r->n + n) * sizeof(double));
    memcpy(r->v + r->n, x, n * sizeof(double));
    r->n += n;
}

static Record run_model(int fused_form, RecomputeMode mode, NormPlacement norm) {
    Config cfg;
    tiny(&cfg);
    cfg.attention_fused = fused_form;
    cfg.recompute = mode;
    cfg.norm = norm;
    ModelShape s = model_shape_from_config(&cfg);
    assert_ptr_equal(s.attention, fused_form ? &ATTENTION_SDPA_FUSED : &ATTENTION_SDPA);
    const Backend *be = backend_cpu_f64();
    Model m;
    Activations a;
    model_init(&m, be, s, 0, ML, 1, 1, 1);
    model_init_weights(&m, 5);
    activations_init(&a, &m, MB);
    a.pass.step = (StepContext){.training = 1, .step = 0, .loss_scale = 1, .attn_temperature = 1.2, .micro_batches = 1};
    int32_t tokens[MB * MT], targets[MB * MT];
    for (int i = 0; i < MB * MT; i++) {
        tokens[i] = (int32_t)(rng_hash3(8, 1, (uint64_t)i) % 11);
        targets[i] = (int32_t)(rng_hash3(8, 2, (uint64_t)i) % 11);
    }
    be->upload_i32(a.tokens, tokens, MB * MT);
    be->upload_i32(a.targets, targets, MB * MT);
    model_forward(&m, &a);
    Record r = {0};
    double loss = model_loss_sum(&m, &a), ent[ML * MB * 2];
    record(&r, &loss, 1);
    model_head_entropies(&m, &a, ent);
    record(&r, ent, sizeof ent / sizeof ent[0]);
    for (int li = 0; li < ML; li++) {
        size_t n = (size_t)MB * 2 * MT * MT;
        double *p = get(be, model_layer_probs(&m, &a, li), n);
        record(&r, p, n);
        free(p);
    }
    model_backward(&m, &a, 1.0 / (MB * MT), NULL, NULL);
    double *g = get(be, m.grads_mem, m.num_params);
    record(&r, g, m.num_params);
    free(g);
    activations_free(&a, &m);
    model_free(&m);
    return r;
}

static void test_model_fused_matches_materialised(void **state) {
    (void)state;
    NormPlacement norms[2] = {NORM_PRE, NORM_POST};
    for (int ni = 0; ni < 2; ni++) {
        Record ref = run_model(0, RECOMPUTE_NONE, norms[ni]);
        for (RecomputeMode mode = RECOMPUTE_NONE; mode <= RECOMPUTE_BLOCK; mode++) {
            Record got = run_model(1, mode, norms[ni]);
            assert_int_equal(got.n, ref.n);
            double err = rel_err(got.v, ref.v, ref.n);
            printf("# model %s-norm, fused, recompute %d: %zu values (loss, entropies, maps, gradients), error %.3g\n",
                   ni ? "post" : "pre", (int)mode, ref.n, err);
            assert_true(err < 1e-12);
            free(got.v);
        }
        free(ref.v);
    }
}

// The fused form is SDPA's under another implementation: the same name (so checkpoint.c's check
// of model.attention accepts either) and parameters; `info` counts no (B,NH,T,T) for it.
static void test_variant_wiring(void **state) {
    (void)state;
    assert_ptr_equal(ATTENTION_SDPA.fused_form, &ATTENTION_SDPA_FUSED);
    assert_string_equal(ATTENTION_SDPA_FUSED.name, ATTENTION_SDPA.name);
    assert_null(ATTENTION_SDPA_FUSED.fused_form);
    Config cfg;
    tiny(&cfg);
    cfg.seq_len = 1024;
    ModelShape plain = model_shape_from_config(&cfg);
    cfg.attention_fused = 1;
    ModelShape f = model_shape_from_config(&cfg);
    assert_int_equal(model_count_params(&plain).total, model_count_params(&f).total);
    // One rank, micro-batches of 4, untraced (a traced fused run keeps one layer's weights too).
    cfg.batch_size = cfg.micro_batch_size = 4;
    cfg.micro_batches = 0;
    cfg.trace_every = 0;
    cfg.attention_fused = 0;
    MemoryEstimate mp = estimate_memory(&cfg, 1, 1, 0);
    cfg.attention_fused = 1;
    MemoryEstimate mf = estimate_memory(&cfg, 1, 1, 0);
    double maps = 4.0 * 4 * 2 * 1024 * 1024;   // bytes of one layer's (B,NH,T,T) at B = 4
    printf("# activation estimate at T=1024: materialised %.0f bytes, fused %.0f bytes\n", mp.activation_bytes, mf.activation_bytes);
    assert_true(mp.activation_bytes - mf.activation_bytes > (ML + 3) * maps * 0.99);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fused_matches_materialised),
        cmocka_unit_test(test_fused_backward_finite_differences),
        cmocka_unit_test(test_fused_causality),
        cmocka_unit_test(test_fused_batch_independence),
        cmocka_unit_test(test_model_fused_matches_materialised),
        cmocka_unit_test(test_variant_wiring),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
