// Spectral Gated Attention: the DCT pair against a direct O(T^2) DCT, finite-difference checks of
// every SGA op and of whole SGA models (every ablation), the causal row ops on blocks of query rows
// against the whole square, causality, batch independence, and alpha = 0 reducing to plain SDPA.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include "gradcheck.h"
#include "model_gradcheck.h"
#include "row_blocks.h"
#include "model.h"

#define TOL 1e-3
#define STEP 1e-5

// ---- DCT --------------------------------------------------------------------------------------

static void direct_dct(const double *z, double *s, int T) {
    for (int k = 0; k < T; k++) {
        double c = k == 0 ? sqrt(1.0 / T) : sqrt(2.0 / T), acc = 0;
        for (int j = 0; j < T; j++) acc += z[j] * cos(M_PI * (2 * j + 1) * k / (2.0 * T));
        s[k] = c * acc;
    }
}

static void test_fft_dct_matches_direct_dct(void **state) {
    (void)state;
    const Backend *backends[2] = {backend_cpu_f32(), backend_cpu_f64()};
    // Odd, even, tiny and power-of-two lengths; 3 rows (a partial block) and 70 (blocks plus a remainder).
    int lengths[6] = {1, 2, 7, 18, 64, 256};
    for (int b = 0; b < 2; b++) {
        const Backend *be = backends[b];
        for (int li = 0; li < 6; li++) {
            int T = lengths[li], R = li % 2 ? 70 : 3;
            double *z = gc_random((size_t)R * T, 40 + li, 1.0), *ref = malloc(sizeof(double) * R * T);
            for (int r = 0; r < R; r++) direct_dct(z + r * T, ref + r * T, T);
            void *dz = gc_upload(be, z, (size_t)R * T), *ds = be->alloc((size_t)R * T), *back = be->alloc((size_t)R * T);
            be->dct_rows(ds, dz, R, T, 0);
            be->dct_rows(back, ds, R, T, 1);
            double *s = gc_download(be, ds, (size_t)R * T), *zz = gc_download(be, back, (size_t)R * T);
            double worst = 0, worst_back = 0, norm = 0;
            for (int i = 0; i < R * T; i++) {
                worst = fmax(worst, fabs(s[i] - ref[i]));
                worst_back = fmax(worst_back, fabs(zz[i] - z[i]));
                norm = fmax(norm, fabs(ref[i]));
            }
            printf("# %s T=%d: max |fft - direct| %.2e (max |s| %.2f), round trip %.2e\n", be->name, T, worst, norm, worst_back);
            assert_true(worst <= 1e-5 * fmax(1.0, norm));
            assert_true(worst_back <= 1e-5);
            free(z); free(ref); free(s); free(zz);
            be->free(dz); be->free(ds); be->free(back);
        }
    }
}

// ---- op gradients -------------------------------------------------------------------------------

typedef struct { int R, T; double *w; } StatsCtx;

static double stats_objective(const Backend *be, double **in, void *ctx_) {
    StatsCtx *c = ctx_;
    void *spec = gc_upload(be, in[0], (size_t)c->R * c->T), *stats = be->alloc((size_t)c->R * 4);
    be->sga_stats_forward(stats, spec, c->R, c->T);
    double *h = gc_download(be, stats, (size_t)c->R * 4), sum = 0;
    for (int i = 0; i < c->R * 4; i++) sum += c->w[i] * h[i];
    free(h); be->free(spec); be->free(stats);
    return sum;
}

static void stats_gradient(const Backend *be, double **in, double **g, void *ctx_) {
    StatsCtx *c = ctx_;
    void *spec = gc_upload(be, in[0], (size_t)c->R * c->T), *dstats = gc_upload(be, c->w, (size_t)c->R * 4);
    void *dspec = be->alloc((size_t)c->R * c->T), *stats = be->alloc((size_t)c->R * 4);
    be->sga_stats_forward(stats, spec, c->R, c->T);   // the backward takes the forward's statistics
    be->sga_stats_backward(dspec, dstats, spec, stats, c->R, c->T);
    double *h = gc_download(be, dspec, (size_t)c->R * c->T);
    memcpy(g[0], h, sizeof(double) * c->R * c->T);
    free(h); be->free(spec); be->free(dstats); be->free(dspec); be->free(stats);
}

// Each statistic alone (weights on one column) and all four together.
static void test_spectral_statistics_gradients(void **state) {
    (void)state;
    int R = 3, T = 16;
    for (int stat = 0; stat <= 4; stat++) {
        StatsCtx c = {R, T, calloc((size_t)R * 4, sizeof(double))};
        for (int r = 0; r < R; r++)
            for (int k = 0; k < 4; k++) c.w[r * 4 + k] = (stat == 4 || stat == k) ? 0.5 + 0.25 * k + 0.1 * r : 0;
        GradCheck gc = {.n_inputs = 1, .ctx = &c, .objective = stats_objective, .gradient = stats_gradient,
                        .inputs = {gc_random((size_t)R * T, 50 + stat, 1.0)}, .sizes = {(size_t)R * T},
                        .names = {"sga.stats"}, .differentiable = {1}};
        printf("# statistic %d%s\n", stat, stat == 4 ? " (all)" : "");
        assert_true(gradcheck_run(&gc, 1000, STEP) < TOL);
        free(c.w); free(gc.inputs[0]);
    }
}

typedef struct { int BH, T; double *w; } BlendCtx;

// The blend and the causal softmax it ends in: objective sum w . probs over the triangle (probs
// are exact zeros above it).
static double blend_objective(const Backend *be, double **in, void *ctx_) {
    BlendCtx *c = ctx_;
    size_t n = (size_t)c->BH * c->T * c->T;
    void *a = gc_upload(be, in[0], n), *zp = gc_upload(be, in[1], n), *alpha = gc_upload(be, in[2], 1), *probs = be->alloc(n);
    be->sga_blend_softmax_forward(probs, a, zp, alpha, c->BH, c->T, 0, c->T);
    double *h = gc_download(be, probs, n), sum = 0;
    for (size_t r = 0; r < (size_t)c->BH * c->T; r++)
        for (int j = 0; j <= (int)(r % c->T); j++) sum += c->w[r * c->T + j] * h[r * c->T + j];
    free(h); be->free(a); be->free(zp); be->free(alpha); be->free(probs);
    return sum;
}

// The model's backward of the pair: the softmax's (attn_core) into dlogits, then the blend's.
static void blend_gradient(const Backend *be, double **in, double **g, void *ctx_) {
    BlendCtx *c = ctx_;
    size_t n = (size_t)c->BH * c->T * c->T;
    void *a = gc_upload(be, in[0], n), *zp = gc_upload(be, in[1], n), *alpha = gc_upload(be, in[2], 1);
    void *dprobs = gc_upload(be, c->w, n), *probs = be->alloc(n), *dlogits = be->alloc(n);
    void *da = be->alloc(n), *dzp = be->alloc(n), *dalpha = be->alloc(1);
    be->sga_blend_softmax_forward(probs, a, zp, alpha, c->BH, c->T, 0, c->T);
    be->softmax_causal_backward(dlogits, dprobs, probs, c->BH, c->T, 0, c->T);
    be->sga_blend_backward(da, dzp, dalpha, dlogits, a, zp, alpha, c->BH, c->T, 0, c->T);
    double *h;
    h = gc_download(be, da, n); memcpy(g[0], h, n * sizeof(double)); free(h);
    h = gc_download(be, dzp, n); memcpy(g[1], h, n * sizeof(double)); free(h);
    h = gc_download(be, dalpha, 1); g[2][0] = h[0]; free(h);
    be->free(a); be->free(zp); be->free(alpha); be->free(dprobs); be->free(probs); be->free(dlogits);
    be->free(da); be->free(dzp); be->free(dalpha);
}

// T = 5 (rows shorter than a softmax chunk) and T = 20 (a whole chunk and a masked one)
static void test_blend_gradients(void **state) {
    (void)state;
    const int lengths[] = {5, 20};
    for (int t = 0; t < 2; t++) {
        int T = lengths[t];
        size_t n = (size_t)2 * T * T;
        BlendCtx c = {2, T, gc_random(n, 60, 1.0)};
        double alpha = 0.3;
        GradCheck gc = {.n_inputs = 3, .ctx = &c, .objective = blend_objective, .gradient = blend_gradient,
                        .inputs = {gc_random(n, 61, 1.0), gc_random(n, 62, 1.0), &alpha}, .sizes = {n, n, 1},
                        .names = {"sga.blend.a", "sga.blend.zprime", "sga.blend.alpha"}, .differentiable = {1, 1, 1}};
        assert_true(gradcheck_run(&gc, 1000, STEP) < TOL);
        free(c.w); free(gc.inputs[0]); free(gc.inputs[1]);
    }
}

// The DCT pair: d(sum w . DCT(x))/dx = IDCT(w), and the converse.
typedef struct { int R, T, inverse; double *w; } DctCtx;

static double dct_objective(const Backend *be, double **in, void *ctx_) {
    DctCtx *c = ctx_;
    size_t n = (size_t)c->R * c->T;
    void *x = gc_upload(be, in[0], n), *y = be->alloc(n);
    be->dct_rows(y, x, c->R, c->T, c->inverse);
    double *h = gc_download(be, y, n), sum = 0;
    for (size_t i = 0; i < n; i++) sum += c->w[i] * h[i];
    free(h); be->free(x); be->free(y);
    return sum;
}

static void dct_gradient(const Backend *be, double **in, double **g, void *ctx_) {
    (void)in;
    DctCtx *c = ctx_;
    size_t n = (size_t)c->R * c->T;
    void *w = gc_upload(be, c->w, n), *dx = be->alloc(n);
    be->dct_rows(dx, w, c->R, c->T, !c->inverse);   // orthonormal: the transpose is the inverse
    double *h = gc_download(be, dx, n);
    memcpy(g[0], h, n * sizeof(double));
    free(h); be->free(w); be->free(dx);
}

static void test_dct_pair_gradients(void **state) {
    (void)state;
    for (int inverse = 0; inverse <= 1; inverse++) {
        DctCtx c = {3, 12, inverse, gc_random(36, 70 + inverse, 1.0)};
        GradCheck gc = {.n_inputs = 1, .ctx = &c, .objective = dct_objective, .gradient = dct_gradient,
                        .inputs = {gc_random(36, 72 + inverse, 1.0)}, .sizes = {36},
                        .names = {inverse ? "idct" : "dct"}, .differentiable = {1}};
        assert_true(gradcheck_run(&gc, 1000, STEP) < TOL);
    }
}

// ---- the causal row ops on blocks of query rows ----------------------------------------------------
// Each on rows q0..q0+Q-1 of every head gives bitwise the rows of its whole-square run (row_blocks.h).

static void lower_copy_rows(const Backend *be, void *const *out, void *const *in, int BH, int T, RowBlock b, void *ctx) {
    (void)ctx;
    be->causal_lower_copy(out[0], in[0], BH, T, b.q0, b.Q);
}

static void lower_accumulate_rows(const Backend *be, void *const *out, void *const *in, int BH, int T, RowBlock b, void *ctx) {
    (void)ctx;
    be->causal_lower_accumulate(out[0], in[0], BH, T, b.q0, b.Q);
}

// ctx: the blend parameter alpha_raw (one double), or NULL for none (alpha = 1)
static void blend_forward_rows(const Backend *be, void *const *out, void *const *in, int BH, int T, RowBlock b, void *ctx) {
    void *alpha = ctx ? gc_upload(be, ctx, 1) : NULL;
    be->sga_blend_softmax_forward(out[0], in[0], in[1], alpha, BH, T, b.q0, b.Q);   // probs from a, z'
    if (alpha) be->free(alpha);
}

// out: da, dz'; in: dout, a, z'. dalpha is accumulated too (the reduction runs) but not compared
// here: its sum changes order with the rows (test_blend_dalpha_sums_over_row_blocks).
static void blend_backward_rows(const Backend *be, void *const *out, void *const *in, int BH, int T, RowBlock b, void *ctx) {
    void *alpha = ctx ? gc_upload(be, ctx, 1) : NULL, *dalpha = be->alloc(1);
    be->sga_blend_backward(out[0], out[1], dalpha, in[0], in[1], in[2], alpha, BH, T, b.q0, b.Q);
    if (alpha) be->free(alpha);
    be->free(dalpha);
}

static void test_causal_row_ops_on_row_blocks_match_whole_square(void **state) {
    (void)state;
    const int lengths[] = {7, 64};
    double alpha = 0.3;
    const RowOp ops[] = {
        {"causal_lower_copy", 1, 1, 1.0, lower_copy_rows, NULL},
        {"causal_lower_accumulate", 1, 1, 1.0, lower_accumulate_rows, NULL},
        {"sga_blend_softmax_forward", 2, 1, 3.0, blend_forward_rows, &alpha},
        {"sga_blend_softmax_forward no alpha", 2, 1, 3.0, blend_forward_rows, NULL},
        {"sga_blend_backward", 3, 2, 1.0, blend_backward_rows, &alpha},
        {"sga_blend_backward no alpha", 3, 2, 1.0, blend_backward_rows, NULL},
    };
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        assert_row_blocks_match_square(&ops[i], 3, lengths, 2, 90 + 10 * i);
}

// dalpha over a partition of the rows into blocks (the first row, then two longer blocks), each
// block's share accumulated (+=) into one element, against the whole square's: the same terms in
// another order, so equal to rounding (1e-6 relative).
static void test_blend_dalpha_sums_over_row_blocks(void **state) {
    (void)state;
    const Backend *backends[2] = {backend_cpu_f32(), backend_cpu_f64()};
    const int lengths[] = {7, 64};
    int BH = 3;
    double alpha = 0.3, zero = 0;
    for (int bi = 0; bi < 2; bi++)
        for (int li = 0; li < 2; li++) {
            const Backend *be = backends[bi];
            int T = lengths[li], third = (T - 1) / 3;
            const RowBlock parts[3] = {{0, 1}, {1, third}, {1 + third, T - 1 - third}};
            size_t n = (size_t)BH * T * T;
            double *h[3] = {gc_random(n, 150, 1.0), gc_random(n, 151, 1.0), gc_random(n, 152, 1.0)};   // dout, a, z'
            void *alpha_raw = gc_upload(be, &alpha, 1), *dalpha_whole = gc_upload(be, &zero, 1);
            void *dalpha_parts = gc_upload(be, &zero, 1);
            for (int p = -1; p < 3; p++) {
                RowBlock b = p < 0 ? (RowBlock){0, T} : parts[p];
                size_t nb = (size_t)BH * b.Q * T;
                void *d[3], *da = be->alloc(nb), *dzp = be->alloc(nb);
                for (int k = 0; k < 3; k++) {
                    double *rows = rows_of_square(h[k], BH, T, b);
                    d[k] = gc_upload(be, rows, nb);
                    free(rows);
                }
                be->sga_blend_backward(da, dzp, p < 0 ? dalpha_whole : dalpha_parts, d[0], d[1], d[2], alpha_raw, BH, T,
                                       b.q0, b.Q);
                for (int k = 0; k < 3; k++) be->free(d[k]);
                be->free(da); be->free(dzp);
            }
            double *whole = gc_download(be, dalpha_whole, 1), *parts_sum = gc_download(be, dalpha_parts, 1);
            double rel = fabs(parts_sum[0] - whole[0]) / fabs(whole[0]);
            printf("# %s T=%d: dalpha whole %.9g, over blocks %.9g (rel diff %.2e)\n", be->name, T, whole[0], parts_sum[0], rel);
            assert_true(rel <= 1e-6);
            free(whole); free(parts_sum);
            for (int k = 0; k < 3; k++) free(h[k]);
            be->free(alpha_raw); be->free(dalpha_whole); be->free(dalpha_parts);
        }
}

// ---- whole SGA models ---------------------------------------------------------------------------

typedef struct { int spectral, fixed_filter, blend, hidden; const char *name; } Variant;
static const Variant VARIANTS[] = {
    {1, 0, 1, 8, "sga"}, {0, 0, 1, 8, "sga.spectral=false"}, {1, 1, 1, 8, "sga.fixed_filter=true"},
    {1, 0, 0, 8, "sga.blend=false"}, {1, 0, 1, 3, "sga.gate_hidden=3"},
};

// The shape of an SGA model of variant v; cfg (the SGA options) must outlive the model.
static ModelShape sga_shape(const Variant *v, Config *cfg) {
    config_defaults(cfg);
    snprintf(cfg->attention_kind, sizeof cfg->attention_kind, "sga");
    cfg->sga_spectral = v->spectral;
    cfg->sga_fixed_filter = v->fixed_filter;
    cfg->sga_blend = v->blend;
    cfg->sga_gate_hidden = v->hidden;
    cfg->sga_embed_dim = 5;
    cfg->sga_alpha_init = 0.4;
    ModelShape s = {.n_layer = 2, .n_head = 2, .d_model = 8, .head_size = 4, .seq_len = 6, .vocab_size = 11,
                    .mlp_hidden = 16, .norm = NORM_PRE, .tie_embeddings = 1, .init_std = 0.3, .scaled_init = 1,
                    .attention = &ATTENTION_SGA, .cfg = cfg};
    return s;
}

enum { B = 2 };

static void load_batch(const Model *m, Activations *a, const int32_t *tokens) {
    int T = m->shape.seq_len, V = m->shape.vocab_size;
    int32_t tok[B * 6], targets[B * 6];
    for (int i = 0; i < B * T; i++) {
        tok[i] = tokens ? tokens[i] : (int32_t)(rng_hash3(5, 1, (uint64_t)i) % (uint64_t)V);
        targets[i] = (int32_t)(rng_hash3(5, 2, (uint64_t)i) % (uint64_t)V);
    }
    m->be->upload_i32(a->tokens, tok, (size_t)B * T);
    m->be->upload_i32(a->targets, targets, (size_t)B * T);
}

// The fp32 backend with slices of one head (Backend.working_set_bytes), so that src/sga.c's slice
// loop runs more than once even at test sizes (the real backend takes these whole).
static const Backend *one_head_slices(void) {
    static Backend copy;
    copy = *backend_cpu_f32();
    copy.working_set_bytes = 1;
    return &copy;
}

static void test_sga_models_gradients_match_finite_differences(void **state) {
    (void)state;
    for (size_t vi = 0; vi < sizeof VARIANTS / sizeof VARIANTS[0]; vi++) {
        Config cfg;
        ModelShape s = sga_shape(&VARIANTS[vi], &cfg);
        Model m32, m64;
        Activations a32, a64;
        // Analytic gradients through one-head slices; finite differences of whole layers.
        model_init(&m32, one_head_slices(), s, 0, s.n_layer, 1, 1, 1);
        model_init(&m64, backend_cpu_f64(), s, 0, s.n_layer, 1, 1, 1);
        model_init_weights(&m64, 9);
        double *host = malloc(m64.num_params * sizeof(double));
        m64.be->download_f64(host, m64.params_mem, m64.num_params);
        for (size_t i = 0; i < m64.num_params; i++) host[i] += (double)(float)(0.05 * rng_normal(8, 0, i));
        m64.be->upload_f64(m64.params_mem, host, m64.num_params);
        m32.be->upload_f64(m32.params_mem, host, m32.num_params);
        activations_init(&a32, &m32, B);
        activations_init(&a64, &m64, B);
        load_batch(&m32, &a32, NULL);
        load_batch(&m64, &a64, NULL);
        double dloss = 1.0 / 12;
        model_forward(&m32, &a32);
        model_backward(&m32, &a32, dloss, NULL, NULL);
        double *grads = malloc(m32.num_params * sizeof(double));
        m32.be->download_f64(grads, m32.grads_mem, m32.num_params);
        double worst = model_fd_worst(&m64, &a64, host, grads, dloss, 16, 7, VARIANTS[vi].name, 1);
        assert_true(worst < TOL);
        free(host); free(grads);
        activations_free(&a32, &m32); activations_free(&a64, &m64);
        model_free(&m32); model_free(&m64);
    }
}

// out (B,T,V): the model's output on `tokens` (B,T).
static void forward_logits(Model *m, Activations *a, const int32_t *tokens, float *out) {
    load_batch(m, a, tokens);
    model_forward(m, a);
    m->be->download(out, a->logits, (size_t)B * m->shape.seq_len * m->shape.vocab_size);
}

// Logits of positions <= i do not change when tokens after i change, nor when another sequence
// of the batch changes: bitwise, for SGA and every ablation.
static void test_sga_is_causal_and_batch_independent(void **state) {
    (void)state;
    for (size_t vi = 0; vi < sizeof VARIANTS / sizeof VARIANTS[0]; vi++) {
        Config cfg;
        ModelShape s = sga_shape(&VARIANTS[vi], &cfg);
        int T = s.seq_len, V = s.vocab_size;
        Model m;
        Activations a;
        model_init(&m, backend_cpu_f32(), s, 0, s.n_layer, 1, 1, 1);
        model_init_weights(&m, 4);
        activations_init(&a, &m, B);
        int32_t tokens[B * 6];
        for (int i = 0; i < B * T; i++) tokens[i] = (int32_t)(rng_hash3(3, 3, (uint64_t)i) % (uint64_t)V);
        size_t n = (size_t)B * T * V;
        float *before = malloc(n * sizeof(float)), *after = malloc(n * sizeof(float));
        forward_logits(&m, &a, tokens, before);   // softmax probabilities: a function of the logits
        int cut = 3;
        tokens[cut + 1] = (tokens[cut + 1] + 1) % V;          // sequence 0, a position after `cut`
        for (int t = 0; t < T; t++) tokens[T + t] = (tokens[T + t] + 5) % V;   // all of sequence 1
        forward_logits(&m, &a, tokens, after);
        // Sequence 0, positions 0..cut: bitwise unchanged.
        assert_memory_equal(before, after, (size_t)(cut + 1) * V * sizeof(float));
        // ...and position cut + 1 did change (the test can fail).
        assert_true(memcmp(before + (size_t)(cut + 1) * V, after + (size_t)(cut + 1) * V, (size_t)V * sizeof(float)) != 0);
        free(before); free(after);
        activations_free(&a, &m);
        model_free(&m);
    }
}

static void test_batch_neighbours_do_not_leak(void **state) {
    (void)state;
    Config cfg;
    ModelShape s = sga_shape(&VARIANTS[0], &cfg);
    int T = s.seq_len, V = s.vocab_size;
    Model m;
    Activations a;
    model_init(&m, backend_cpu_f32(), s, 0, s.n_layer, 1, 1, 1);
    model_init_weights(&m, 4);
    activations_init(&a, &m, B);
    int32_t tokens[B * 6];
    for (int i = 0; i < B * T; i++) tokens[i] = (int32_t)(rng_hash3(3, 4, (uint64_t)i) % (uint64_t)V);
    size_t n = (size_t)B * T * V;
    float *before = malloc(n * sizeof(float)), *after = malloc(n * sizeof(float));
    forward_logits(&m, &a, tokens, before);
    for (int t = 0; t < T; t++) tokens[T + t] = (tokens[T + t] + 5) % V;
    forward_logits(&m, &a, tokens, after);
    assert_memory_equal(before, after, (size_t)T * V * sizeof(float));
    free(before); free(after);
    activations_free(&a, &m);
    model_free(&m);
}

// Slices of heads are a schedule, not a change of the math: the logits and every gradient agree with
// whole layers (up to the order in which the gate's parameter gradients add up over slices).
static void test_head_slices_match_whole_layers(void **state) {
    (void)state;
    for (size_t vi = 0; vi < sizeof VARIANTS / sizeof VARIANTS[0]; vi++) {
        Config cfg;
        ModelShape s = sga_shape(&VARIANTS[vi], &cfg);
        const Backend *backends[2] = {backend_cpu_f32(), one_head_slices()};
        float *logits[2], *grads[2];
        size_t n_logits = (size_t)B * s.seq_len * s.vocab_size, n_params = 0;
        for (int k = 0; k < 2; k++) {
            Model m;
            Activations a;
            model_init(&m, backends[k], s, 0, s.n_layer, 1, 1, 1);
            model_init_weights(&m, 21);
            activations_init(&a, &m, B);
            load_batch(&m, &a, NULL);
            model_forward(&m, &a);
            model_backward(&m, &a, 1.0 / 12, NULL, NULL);
            n_params = m.num_params;
            logits[k] = malloc(n_logits * sizeof(float));
            grads[k] = malloc(n_params * sizeof(float));
            m.be->download(logits[k], a.logits, n_logits);
            m.be->download(grads[k], m.grads_mem, n_params);
            activations_free(&a, &m);
            model_free(&m);
        }
        double dl = 0, dg = 0, gmax = 0;
        for (size_t i = 0; i < n_logits; i++) dl = fmax(dl, fabs((double)logits[0][i] - logits[1][i]));
        for (size_t i = 0; i < n_params; i++) {
            dg = fmax(dg, fabs((double)grads[0][i] - grads[1][i]));
            gmax = fmax(gmax, fabs((double)grads[0][i]));
        }
        printf("# %-22s one-head slices vs whole layers: max |d logits| %.2e, max |d grad| %.2e (max |grad| %.2e)\n",
               VARIANTS[vi].name, dl, dg, gmax);
        assert_true(dl <= 1e-5);
        assert_true(gmax > 0 && dg <= 1e-5 * gmax);
        for (int k = 0; k < 2; k++) { free(logits[k]); free(grads[k]); }
    }
}

// With alpha_l = 0 the blend returns the raw logits: the loss is SDPA's on the same weights.
static void test_alpha_zero_is_sdpa(void **state) {
    (void)state;
    Config cfg;
    ModelShape s = sga_shape(&VARIANTS[0], &cfg);
    cfg.sga_alpha_init = 0;
    ModelShape plain = s;
    plain.attention = &ATTENTION_SDPA;
    Model ms, mp;
    Activations as, ap;
    model_init(&ms, backend_cpu_f32(), s, 0, s.n_layer, 1, 1, 1);
    model_init(&mp, backend_cpu_f32(), plain, 0, plain.n_layer, 1, 1, 1);
    model_init_weights(&ms, 11);
    model_init_weights(&mp, 11);   // the shared parameters draw the same streams
    activations_init(&as, &ms, B);
    activations_init(&ap, &mp, B);
    load_batch(&ms, &as, NULL);
    load_batch(&mp, &ap, NULL);
    model_forward(&ms, &as);
    model_forward(&mp, &ap);
    double ls = model_loss_sum(&ms, &as), lp = model_loss_sum(&mp, &ap);
    printf("# SGA alpha=0 loss %.9f, SDPA loss %.9f\n", ls, lp);
    assert_true(fabs(ls - lp) <= 1e-6 * fabs(lp));
    // and alpha != 0 does change it
    float alpha = 0.5f;
    int alpha_id = model_find_param(&ms, "blocks.sga_alpha");
    for (int l = 0; l < s.n_layer; l++) ms.be->upload(model_param(&ms, alpha_id, l), &alpha, 1);
    model_forward(&ms, &as);
    assert_true(fabs(model_loss_sum(&ms, &as) - lp) > 1e-4);
    activations_free(&as, &ms); activations_free(&ap, &mp);
    model_free(&ms); model_free(&mp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fft_dct_matches_direct_dct),
        cmocka_unit_test(test_dct_pair_gradients),
        cmocka_unit_test(test_spectral_statistics_gradients),
        cmocka_unit_test(test_blend_gradients),
        cmocka_unit_test(test_causal_row_ops_on_row_blocks_match_whole_square),
        cmocka_unit_test(test_blend_dalpha_sums_over_row_blocks),
        cmocka_unit_test(test_sga_models_gradients_match_finite_differences),
        cmocka_unit_test(test_sga_is_causal_and_batch_independent),
        cmocka_unit_test(test_batch_neighbours_do_not_leak),
        cmocka_unit_test(test_alpha_zero_is_sdpa),
        cmocka_unit_test(test_head_slices_match_whole_layers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
