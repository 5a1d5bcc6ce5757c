// Every backward op of the CPU backend against central differences of its forward op, computed
// in double precision (docs/design.md section 7: the CPU backend is the reference).
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include "gradcheck.h"
#include "row_blocks.h"

#define TOL 1e-3
#define STEP 1e-5

static double dot_download(const Backend *be, const void *dev, const double *w, size_t n) {
    double *y = gc_download(be, dev, n), s = 0;
    for (size_t i = 0; i < n; i++) s += w[i] * y[i];
    free(y);
    return s;
}

static void grads_download(const Backend *be, double **grads, int idx, const void *dev, size_t n) {
    double *g = gc_download(be, dev, n);
    memcpy(grads[idx], g, n * sizeof(double));
    free(g);
}

// ---- matmul -----------------------------------------------------------------------------------
typedef struct { int N, C, OC; double *w; } MatmulCtx;

static double matmul_objective(const Backend *be, double **in, void *ctx_) {
    MatmulCtx *c = ctx_;
    void *inp = gc_upload(be, in[0], (size_t)c->N * c->C), *wt = gc_upload(be, in[1], (size_t)c->OC * c->C);
    void *bias = gc_upload(be, in[2], c->OC), *out = be->alloc((size_t)c->N * c->OC);
    be->matmul_forward(out, inp, wt, bias, c->N, c->C, c->OC);
    double s = dot_download(be, out, c->w, (size_t)c->N * c->OC);
    be->free(inp); be->free(wt); be->free(bias); be->free(out);
    return s;
}

static void matmul_gradient(const Backend *be, double **in, double **g, void *ctx_) {
    MatmulCtx *c = ctx_;
    void *inp = gc_upload(be, in[0], (size_t)c->N * c->C), *wt = gc_upload(be, in[1], (size_t)c->OC * c->C);
    void *dout = gc_upload(be, c->w, (size_t)c->N * c->OC);
    void *dinp = gc_alloc_stale(be, (size_t)c->N * c->C);   // GRAD_ASSIGN overwrites it
    void *dw = be->alloc((size_t)c->OC * c->C), *db = be->alloc(c->OC);
    be->matmul_backward(dinp, GRAD_ASSIGN, dw, db, dout, inp, wt, c->N, c->C, c->OC);
    grads_download(be, g, 0, dinp, (size_t)c->N * c->C);
    grads_download(be, g, 1, dw, (size_t)c->OC * c->C);
    grads_download(be, g, 2, db, c->OC);
    be->free(inp); be->free(wt); be->free(dout); be->free(dinp); be->free(dw); be->free(db);
}

static void test_matmul_backward_matches_finite_differences(void **state) {
    (void)state;
    MatmulCtx c = {.N = 7, .C = 5, .OC = 6};
    c.w = gc_random((size_t)c.N * c.OC, 1, 1.0);
    GradCheck gc = {.n_inputs = 3, .ctx = &c, .objective = matmul_objective, .gradient = matmul_gradient,
                    .inputs = {gc_random(35, 2, 1.0), gc_random(30, 3, 1.0), gc_random(6, 4, 1.0)},
                    .sizes = {35, 30, 6}, .names = {"matmul.inp", "matmul.weight", "matmul.bias"},
                    .differentiable = {1, 1, 1}};
    assert_true(gradcheck_run(&gc, 1000, STEP) < TOL);
}

// An op whose input gradient (N_DINP values) is written as GradWrite says; `be` runs it on dinp.
enum { DINP_ROWS = 7, DINP_COLS = 5, N_DINP = DINP_ROWS * DINP_COLS };
typedef void (*DinpOp)(const Backend *be, void *dinp, GradWrite write);

static void matmul_dinp(const Backend *be, void *dinp, GradWrite write) {
    enum { OC = 6 };
    double *h[3] = {gc_random(N_DINP, 11, 1.0), gc_random(OC * DINP_COLS, 12, 1.0), gc_random(DINP_ROWS * OC, 13, 1.0)};
    void *inp = gc_upload(be, h[0], N_DINP), *wt = gc_upload(be, h[1], OC * DINP_COLS), *dout = gc_upload(be, h[2], DINP_ROWS * OC);
    void *dw = be->alloc(OC * DINP_COLS);
    be->matmul_backward(dinp, write, dw, NULL, dout, inp, wt, DINP_ROWS, DINP_COLS, OC);
    be->free(inp); be->free(wt); be->free(dout); be->free(dw);
    for (int i = 0; i < 3; i++) free(h[i]);
}

static void layernorm_dinp(const Backend *be, void *dinp, GradWrite write) {
    double *h[3] = {gc_random(N_DINP, 15, 1.0), gc_random(DINP_COLS, 16, 1.0), gc_random(N_DINP, 17, 1.0)};
    void *inp = gc_upload(be, h[0], N_DINP), *wt = gc_upload(be, h[1], DINP_COLS), *dout = gc_upload(be, h[2], N_DINP);
    void *out = be->alloc(N_DINP), *mean = be->alloc(DINP_ROWS), *rstd = be->alloc(DINP_ROWS);
    void *dw = be->alloc(DINP_COLS), *db = be->alloc(DINP_COLS);
    be->layernorm_forward(out, mean, rstd, inp, wt, wt, DINP_ROWS, DINP_COLS);
    be->layernorm_backward(dinp, write, dw, db, dout, inp, wt, mean, rstd, DINP_ROWS, DINP_COLS);
    void *ptrs[] = {inp, wt, dout, out, mean, rstd, dw, db};
    for (int i = 0; i < 8; i++) be->free(ptrs[i]);
    for (int i = 0; i < 3; i++) free(h[i]);
}

// GRAD_ACCUMULATE adds the dinp that GRAD_ASSIGN writes (over NaN) to what the buffer held, within
// the rounding of that one sum (BLAS may add in its own order), on both CPU backends.
static void expect_accumulate_adds_what_assign_writes(DinpOp op) {
    const Backend *backends[] = {backend_cpu_f32(), backend_cpu_f64()};
    double *held_h = gc_random(N_DINP, 14, 1.0);
    for (int b = 0; b < 2; b++) {
        const Backend *be = backends[b];
        void *assigned = gc_alloc_stale(be, N_DINP), *summed = gc_upload(be, held_h, N_DINP);
        op(be, assigned, GRAD_ASSIGN);
        op(be, summed, GRAD_ACCUMULATE);
        double *a = gc_download(be, assigned, N_DINP), *s = gc_download(be, summed, N_DINP);
        double tol = b == 0 ? 1e-5 : 1e-13;
        for (int i = 0; i < N_DINP; i++) {
            if (!isfinite(a[i])) fail_msg("backend %d element %d: assigned %g", b, i, a[i]);
            double want = held_h[i] + a[i];
            if (!(fabs(s[i] - want) <= tol * (1 + fabs(want)))) fail_msg("backend %d element %d: %.17g, want %.17g", b, i, s[i], want);
        }
        free(a); free(s);
        be->free(assigned); be->free(summed);
    }
    free(held_h);
}

static void test_matmul_backward_dinp_accumulates_what_assign_writes(void **state) {
    (void)state;
    expect_accumulate_adds_what_assign_writes(matmul_dinp);
}

static void test_layernorm_backward_dinp_accumulates_what_assign_writes(void **state) {
    (void)state;
    expect_accumulate_adds_what_assign_writes(layernorm_dinp);
}

// ---- layernorm --------------------------------------------------------------------------------
typedef struct { int N, C; double *w; } LnCtx;

static double layernorm_objective(const Backend *be, double **in, void *ctx_) {
    LnCtx *c = ctx_;
    size_t n = (size_t)c->N * c->C;
    void *inp = gc_upload(be, in[0], n), *wt = gc_upload(be, in[1], c->C), *b = gc_upload(be, in[2], c->C);
    void *out = be->alloc(n), *mean = be->alloc(c->N), *rstd = be->alloc(c->N);
    be->layernorm_forward(out, mean, rstd, inp, wt, b, c->N, c->C);
    double s = dot_download(be, out, c->w, n);
    be->free(inp); be->free(wt); be->free(b); be->free(out); be->free(mean); be->free(rstd);
    return s;
}

static void layernorm_gradient(const Backend *be, double **in, double **g, void *ctx_) {
    LnCtx *c = ctx_;
    size_t n = (size_t)c->N * c->C;
    void *inp = gc_upload(be, in[0], n), *wt = gc_upload(be, in[1], c->C), *b = gc_upload(be, in[2], c->C);
    void *out = be->alloc(n), *mean = be->alloc(c->N), *rstd = be->alloc(c->N), *dout = gc_upload(be, c->w, n);
    void *dinp = gc_alloc_stale(be, n), *dw = be->alloc(c->C), *db = be->alloc(c->C);   // GRAD_ASSIGN overwrites dinp
    be->layernorm_forward(out, mean, rstd, inp, wt, b, c->N, c->C);
    be->layernorm_backward(dinp, GRAD_ASSIGN, dw, db, dout, inp, wt, mean, rstd, c->N, c->C);
    grads_download(be, g, 0, dinp, n);
    grads_download(be, g, 1, dw, c->C);
    grads_download(be, g, 2, db, c->C);
    void *ptrs[] = {inp, wt, b, out, mean, rstd, dout, dinp, dw, db};
    for (int i = 0; i < 10; i++) be->free(ptrs[i]);
}

static void test_layernorm_backward_matches_finite_differences(void **state) {
    (void)state;
    LnCtx c = {.N = 6, .C = 16};
    c.w = gc_random(96, 5, 1.0);
    GradCheck gc = {.n_inputs = 3, .ctx = &c, .objective = layernorm_objective, .gradient = layernorm_gradient,
                    .inputs = {gc_random(96, 6, 2.0), gc_random(16, 7, 1.0), gc_random(16, 8, 1.0)},
                    .sizes = {96, 16, 16}, .names = {"layernorm.inp", "layernorm.weight", "layernorm.bias"},
                    .differentiable = {1, 1, 1}};
    assert_true(gradcheck_run(&gc, 1000, STEP) < TOL);
}

// ---- GELU MLP: out = gelu(x W1^T + b1) W2^T + b2 ---------------------------------------------
// matmul_gelu_forward and matmul_backward_gelu through a second layer, so that dpre carries dout W2;
// the slope the forward op keeps is what the backward op reads.
typedef struct { int N, C, H, O; double *w; } MlpCtx;

typedef struct { void *x, *w1, *b1, *w2, *b2, *slope, *act, *out; } MlpTensors;

static MlpTensors mlp_forward(const Backend *be, double **in, const MlpCtx *c) {
    MlpTensors t = {gc_upload(be, in[0], (size_t)c->N * c->C), gc_upload(be, in[1], (size_t)c->H * c->C), gc_upload(be, in[2], c->H),
                    gc_upload(be, in[3], (size_t)c->O * c->H), gc_upload(be, in[4], c->O), gc_alloc_stale(be, (size_t)c->N * c->H),
                    gc_alloc_stale(be, (size_t)c->N * c->H), be->alloc((size_t)c->N * c->O)};
    be->matmul_gelu_forward(t.slope, t.act, t.x, t.w1, t.b1, c->N, c->C, c->H);   // (N,H) x2
    be->matmul_forward(t.out, t.act, t.w2, t.b2, c->N, c->H, c->O);            // (N,O)
    return t;
}

static void mlp_free(const Backend *be, MlpTensors t) {
    void *all[] = {t.x, t.w1, t.b1, t.w2, t.b2, t.slope, t.act, t.out};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) be->free(all[i]);
}

static double mlp_objective(const Backend *be, double **in, void *ctx_) {
    MlpCtx *c = ctx_;
    MlpTensors t = mlp_forward(be, in, c);
    double s = dot_download(be, t.out, c->w, (size_t)c->N * c->O);
    mlp_free(be, t);
    return s;
}

static void mlp_gradient(const Backend *be, double **in, double **g, void *ctx_) {
    MlpCtx *c = ctx_;
    MlpTensors t = mlp_forward(be, in, c);
    void *dout = gc_upload(be, c->w, (size_t)c->N * c->O);
    void *dpre = gc_alloc_stale(be, (size_t)c->N * c->H), *dx = gc_alloc_stale(be, (size_t)c->N * c->C);   // both overwritten
    void *dw1 = be->alloc((size_t)c->H * c->C), *db1 = be->alloc(c->H), *dw2 = be->alloc((size_t)c->O * c->H), *db2 = be->alloc(c->O);
    be->matmul_backward_gelu(dpre, dw2, db2, dout, t.act, t.w2, t.slope, c->N, c->H, c->O);   // (N,H)
    be->matmul_backward(dx, GRAD_ASSIGN, dw1, db1, dpre, t.x, t.w1, c->N, c->C, c->H);     // (N,C)
    grads_download(be, g, 0, dx, (size_t)c->N * c->C);
    grads_download(be, g, 1, dw1, (size_t)c->H * c->C);
    grads_download(be, g, 2, db1, c->H);
    grads_download(be, g, 3, dw2, (size_t)c->O * c->H);
    grads_download(be, g, 4, db2, c->O);
    void *all[] = {dout, dpre, dx, dw1, db1, dw2, db2};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) be->free(all[i]);
    mlp_free(be, t);
}

// Pre-activations of about +-3 (inputs and first weights of scale 1.5 over C = 4): both tails and the bend.
static void test_gelu_mlp_backward_matches_finite_differences(void **state) {
    (void)state;
    MlpCtx c = {.N = 5, .C = 4, .H = 6, .O = 3};
    c.w = gc_random((size_t)c.N * c.O, 9, 1.0);
    GradCheck gc = {.n_inputs = 5, .ctx = &c, .objective = mlp_objective, .gradient = mlp_gradient,
                    .inputs = {gc_random(20, 10, 1.5), gc_random(24, 14, 1.5), gc_random(6, 15, 1.0), gc_random(18, 16, 1.0),
                               gc_random(3, 17, 1.0)},
                    .sizes = {20, 24, 6, 18, 3}, .names = {"mlp.x", "mlp.fc_weight", "mlp.fc_bias", "mlp.proj_weight", "mlp.proj_bias"},
                    .differentiable = {1, 1, 1, 1, 1}};
    assert_true(gradcheck_run(&gc, 1000, STEP) < TOL);
}

// ---- encoder ----------------------------------------------------------------------------------
typedef struct { int B, T, C, V; int32_t tokens[12]; double *w; } EncCtx;

static double encoder_objective(const Backend *be, double **in, void *ctx_) {
    EncCtx *c = ctx_;
    size_t n = (size_t)c->B * c->T * c->C;
    void *wte = gc_upload(be, in[0], (size_t)c->V * c->C), *wpe = gc_upload(be, in[1], (size_t)c->T * c->C);
    int32_t *tok = be->alloc_i32((size_t)c->B * c->T);
    be->upload_i32(tok, c->tokens, (size_t)c->B * c->T);
    void *out = be->alloc(n);
    be->encoder_forward(out, tok, wte, wpe, c->B, c->T, c->C);
    double s = dot_download(be, out, c->w, n);
    be->free(wte); be->free(wpe); be->free(tok); be->free(out);
    return s;
}

static void encoder_gradient(const Backend *be, double **in, double **g, void *ctx_) {
    (void)in;
    EncCtx *c = ctx_;
    size_t n = (size_t)c->B * c->T * c->C;
    int32_t *tok = be->alloc_i32((size_t)c->B * c->T);
    be->upload_i32(tok, c->tokens, (size_t)c->B * c->T);
    void *dout = gc_upload(be, c->w, n), *dwte = be->alloc((size_t)c->V * c->C), *dwpe = be->alloc((size_t)c->T * c->C);
    be->encoder_backward(dwte, dwpe, dout, tok, c->B, c->T, c->C, c->V);
    grads_download(be, g, 0, dwte, (size_t)c->V * c->C);
    grads_download(be, g, 1, dwpe, (size_t)c->T * c->C);
    be->free(tok); be->free(dout); be->free(dwte); be->free(dwpe);
}

static void test_encoder_backward_matches_finite_differences(void **state) {
    (void)state;
    // Token 3 appears three times: its gradient row must sum all of them.
    EncCtx c = {.B = 2, .T = 6, .C = 4, .V = 8, .tokens = {3, 1, 3, 0, 7, 2, 5, 3, 6, 1, 4, 2}};
    c.w = gc_random(48, 11, 1.0);
    GradCheck gc = {.n_inputs = 2, .ctx = &c, .objective = encoder_objective, .gradient = encoder_gradient,
                    .inputs = {gc_random(32, 12, 1.0), gc_random(24, 13, 1.0)}, .sizes = {32, 24},
                    .names = {"encoder.wte", "encoder.wpe"}, .differentiable = {1, 1}};
    assert_true(gradcheck_run(&gc, 1000, STEP) < TOL);
}

// ---- attention: split heads, scores, causal softmax, values, merge heads ----------------------
typedef struct { int B, T, NH, hs; double *w; } AttCtx;

static double attention_objective(const Backend *be, double **in, void *ctx_) {
    AttCtx *c = ctx_;
    int C = c->NH * c->hs, BH = c->B * c->NH;
    size_t n = (size_t)c->B * c->T * C, att = (size_t)BH * c->T * c->T;
    void *qkv = gc_upload(be, in[0], 3 * n);
    void *q = be->alloc(n), *k = be->alloc(n), *v = be->alloc(n), *scores = be->alloc(att), *probs = be->alloc(att);
    void *y = be->alloc(n), *out = be->alloc(n);
    be->heads_split(q, k, v, qkv, c->B, c->T, c->NH, c->hs);
    be->attn_scores(scores, q, k, 1.0 / sqrt(c->hs), BH, c->T, c->hs, 0, c->T);
    be->softmax_causal_forward(probs, scores, BH, c->T, 0, c->T);
    be->attn_values(y, probs, v, BH, c->T, c->hs, 0, c->T);
    be->heads_merge(out, y, c->B, c->T, c->NH, c->hs);
    double s = dot_download(be, out, c->w, n);
    void *ptrs[] = {qkv, q, k, v, scores, probs, y, out};
    for (int i = 0; i < 8; i++) be->free(ptrs[i]);
    return s;
}

static void attention_gradient(const Backend *be, double **in, double **g, void *ctx_) {
    AttCtx *c = ctx_;
    int C = c->NH * c->hs, BH = c->B * c->NH;
    size_t n = (size_t)c->B * c->T * C, att = (size_t)BH * c->T * c->T;
    void *qkv = gc_upload(be, in[0], 3 * n);
    void *q = be->alloc(n), *k = be->alloc(n), *v = be->alloc(n), *scores = be->alloc(att), *probs = be->alloc(att);
    void *y = be->alloc(n), *out = be->alloc(n), *dout = gc_upload(be, c->w, n);
    void *dy = be->alloc(n), *dprobs = be->alloc(att), *dscores = be->alloc(att);
    void *dq = be->alloc(n), *dk = be->alloc(n), *dv = be->alloc(n);
    void *dqkv = gc_alloc_stale(be, 3 * n);   // heads_split_backward overwrites it
    be->heads_split(q, k, v, qkv, c->B, c->T, c->NH, c->hs);
    be->attn_scores(scores, q, k, 1.0 / sqrt(c->hs), BH, c->T, c->hs, 0, c->T);
    be->softmax_causal_forward(probs, scores, BH, c->T, 0, c->T);
    be->attn_values(y, probs, v, BH, c->T, c->hs, 0, c->T);
    be->heads_merge_backward(dy, dout, c->B, c->T, c->NH, c->hs);
    be->attn_values_backward(dprobs, dv, dy, probs, v, BH, c->T, c->hs, 0, c->T);
    be->softmax_causal_backward(dscores, dprobs, probs, BH, c->T, 0, c->T);
    be->attn_scores_backward(dq, dk, dscores, q, k, 1.0 / sqrt(c->hs), BH, c->T, c->hs, 0, c->T);
    be->heads_split_backward(dqkv, dq, dk, dv, c->B, c->T, c->NH, c->hs);
    grads_download(be, g, 0, dqkv, 3 * n);
    void *ptrs[] = {qkv, q, k, v, scores, probs, y, out, dout, dy, dprobs, dscores, dq, dk, dv, dqkv};
    for (int i = 0; i < 16; i++) be->free(ptrs[i]);
}

static void test_attention_backward_matches_finite_differences(void **state) {
    (void)state;
    AttCtx c = {.B = 2, .T = 5, .NH = 2, .hs = 3};
    size_t n = (size_t)c.B * c.T * c.NH * c.hs;
    c.w = gc_random(n, 14, 1.0);
    GradCheck gc = {.n_inputs = 1, .ctx = &c, .objective = attention_objective, .gradient = attention_gradient,
                    .inputs = {gc_random(3 * n, 15, 1.5)}, .sizes = {3 * n}, .names = {"attention.qkv"},
                    .differentiable = {1}};
    assert_true(gradcheck_run(&gc, 1000, STEP) < TOL);
}

// The causal softmax gives exact zeros above the diagonal and rows that sum to one, whatever the
// scores above the diagonal hold (NaN and inf here: the rows are worked in chunks of 16, the last
// one masked, so lengths on both sides of a chunk boundary and rows with and without room for a
// whole last chunk are checked), and each entry within fp32 rounding of an fp64 softmax.
static void test_causal_softmax_masks_future_and_normalises(void **state) {
    (void)state;
    const Backend *be = backend_cpu_f32();
    const int lengths[] = {6, 16, 17, 40, 64};
    for (size_t t = 0; t < sizeof lengths / sizeof lengths[0]; t++) {
        int T = lengths[t];
        double *s = gc_random((size_t)T * T, 16, 3.0);
        for (int i = 0; i < T; i++)
            for (int j = i + 1; j < T; j++) s[i * T + j] = (j % 2) ? NAN : INFINITY;
        void *scores = gc_upload(be, s, (size_t)T * T), *probs = be->alloc((size_t)T * T);
        be->softmax_causal_forward(probs, scores, 1, T, 0, T);
        double *p = gc_download(be, probs, (size_t)T * T);
        for (int i = 0; i < T; i++) {
            double max = s[i * T], sum = 0, ref_sum = 0;
            for (int j = 1; j <= i; j++) max = fmax(max, s[i * T + j]);
            for (int j = 0; j <= i; j++) ref_sum += exp(s[i * T + j] - max);
            for (int j = 0; j < T; j++) {
                if (j > i) assert_true(p[i * T + j] == 0.0);
                else assert_true(fabs(p[i * T + j] - exp(s[i * T + j] - max) / ref_sum) < 1e-6);
                sum += p[i * T + j];
            }
            assert_true(fabs(sum - 1.0) < 1e-6);
        }
        assert_true(fabs(p[0] - 1.0) < 1e-7);   // the first row attends only to itself
        free(s); free(p); be->free(scores); be->free(probs);
    }
}

// The causal softmax on a block of query rows of each head: the rows of the whole square, bitwise.
static void softmax_forward_rows(const Backend *be, void *const *out, void *const *in, int BH, int T, RowBlock b, void *ctx) {
    (void)ctx;
    be->softmax_causal_forward(out[0], in[0], BH, T, b.q0, b.Q);   // probs (BH,Q,T) from scores
}

// in: dprobs, probs (BH,Q,T); any values, the op is arithmetic on them
static void softmax_backward_rows(const Backend *be, void *const *out, void *const *in, int BH, int T, RowBlock b, void *ctx) {
    (void)ctx;
    be->softmax_causal_backward(out[0], in[0], in[1], BH, T, b.q0, b.Q);   // dscores (BH,Q,T)
}

static void test_causal_softmax_on_row_blocks_matches_whole_square(void **state) {
    (void)state;
    const int lengths[] = {7, 64};
    const RowOp forward = {"softmax_causal_forward", 1, 1, 3.0, softmax_forward_rows, NULL};
    const RowOp backward = {"softmax_causal_backward", 2, 1, 1.0, softmax_backward_rows, NULL};
    assert_row_blocks_match_square(&forward, 3, lengths, 2, 70);
    assert_row_blocks_match_square(&backward, 3, lengths, 2, 80);
}

// The four attention products, on the whole square and on blocks of query rows (q0, Q) that partition
// it, against plain loops over the causal triangle in double: scores and dprobs on the triangle (above
// it they are unspecified), y and dq, and dk and dv accumulated over the blocks one after the other.
// probs and dscores hold random values on the triangle and zeros above it, as their producers leave
// them (backend.h). T = 11 runs each block as one product; T = 150 in causal pieces
// (src/cpu/attention.inc), four on the square, two on its blocks of 70 and 80 rows. fp64 backend:
// within 1e-12 relative, whatever order the GEMMs sum in.
typedef struct {
    int BH, T, HS;
    double scale;
    const double *q, *k, *v, *dy, *probs, *dscores;   // (BH,T,hs) x4, (BH,T,T) x2
} AttnProducts;

// The products by their definition: scores (BH,T,T) on the triangle, y, dprobs on the triangle, dq, dk, dv.
static void attn_products_by_loops(const AttnProducts *a, double *scores, double *y, double *dprobs, double *dq, double *dk,
                                   double *dv) {
    int T = a->T, HS = a->HS;
    size_t nh = (size_t)a->BH * T * HS;
    memset(y, 0, nh * sizeof(double)); memset(dq, 0, nh * sizeof(double));
    memset(dk, 0, nh * sizeof(double)); memset(dv, 0, nh * sizeof(double));
    for (int bh = 0; bh < a->BH; bh++) {
        size_t h = (size_t)bh * T * HS, sq = (size_t)bh * T * T;
        for (int i = 0; i < T; i++)
            for (int j = 0; j <= i; j++) {
                double qk = 0, dyv = 0, p = a->probs[sq + (size_t)i * T + j], ds = a->dscores[sq + (size_t)i * T + j];
                for (int d = 0; d < HS; d++) {
                    size_t qi = h + (size_t)i * HS + d, kj = h + (size_t)j * HS + d;
                    qk += a->q[qi] * a->k[kj];
                    dyv += a->dy[qi] * a->v[kj];
                    y[qi] += p * a->v[kj];
                    dv[kj] += p * a->dy[qi];
                    dq[qi] += a->scale * ds * a->k[kj];
                    dk[kj] += a->scale * ds * a->q[qi];
                }
                scores[sq + (size_t)i * T + j] = a->scale * qk;
                dprobs[sq + (size_t)i * T + j] = dyv;
            }
    }
}

// The largest |got - want| over the causal triangle of rows b of (BH,T,T) `want`, got (BH,Q,T); and
// the largest |want| there in *ref.
static double triangle_diff(const double *got, const double *want, int BH, int T, RowBlock b, double *ref) {
    double d = 0;
    for (int bh = 0; bh < BH; bh++)
        for (int r = 0; r < b.Q; r++) {
            int i = b.q0 + r;
            for (int j = 0; j <= i; j++) {
                double w = want[((size_t)bh * T + i) * T + j];
                d = fmax(d, fabs(got[((size_t)bh * b.Q + r) * T + j] - w));
                *ref = fmax(*ref, fabs(w));
            }
        }
    return d;
}

static double max_abs_diff(const double *a, const double *b, size_t n, double *ref) {
    double d = 0;
    *ref = 0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs(a[i] - b[i]));
        *ref = fmax(*ref, fabs(b[i]));
    }
    return d;
}

// Runs the four ops on blocks (one block (0, T): the square) and returns the worst relative error
// against the loops' results.
static double attn_products_error(const Backend *be, const AttnProducts *a, const RowBlock *blocks, int n_blocks,
                                  double *const want[6]) {
    int BH = a->BH, T = a->T, HS = a->HS;
    size_t nh = (size_t)BH * T * HS;
    void *q = gc_upload(be, a->q, nh), *k = gc_upload(be, a->k, nh), *v = gc_upload(be, a->v, nh), *dy = gc_upload(be, a->dy, nh);
    void *y = be->alloc(nh), *dq = be->alloc(nh), *dk = be->alloc(nh), *dv = be->alloc(nh);
    be->zero(y, nh); be->zero(dq, nh); be->zero(dk, nh); be->zero(dv, nh);
    double ref_s = 0, ref_dp = 0, ds = 0, ddp = 0, ref;
    for (int bk = 0; bk < n_blocks; bk++) {
        RowBlock b = blocks[bk];
        size_t nb = (size_t)BH * b.Q * T;
        double *p_rows = rows_of_square(a->probs, BH, T, b), *ds_rows = rows_of_square(a->dscores, BH, T, b);
        void *bs = be->alloc(nb), *bdp = be->alloc(nb), *bp = gc_upload(be, p_rows, nb), *bds = gc_upload(be, ds_rows, nb);
        be->attn_scores(bs, q, k, a->scale, BH, T, HS, b.q0, b.Q);
        be->attn_values(y, bp, v, BH, T, HS, b.q0, b.Q);
        be->attn_values_backward(bdp, dv, dy, bp, v, BH, T, HS, b.q0, b.Q);
        be->attn_scores_backward(dq, dk, bds, q, k, a->scale, BH, T, HS, b.q0, b.Q);
        double *got_s = gc_download(be, bs, nb), *got_dp = gc_download(be, bdp, nb);
        ds = fmax(ds, triangle_diff(got_s, want[0], BH, T, b, &ref_s));
        ddp = fmax(ddp, triangle_diff(got_dp, want[2], BH, T, b, &ref_dp));
        free(p_rows); free(ds_rows); free(got_s); free(got_dp);
        be->free(bs); be->free(bdp); be->free(bp); be->free(bds);
    }
    double worst = fmax(ds / ref_s, ddp / ref_dp);
    void *outs[4] = {y, dq, dk, dv};
    double *const want_h[4] = {want[1], want[3], want[4], want[5]};
    for (int o = 0; o < 4; o++) {
        double *got = gc_download(be, outs[o], nh);
        worst = fmax(worst, max_abs_diff(got, want_h[o], nh, &ref) / ref);
        assert_true(ref > 0);
        free(got);
    }
    void *all[] = {q, k, v, dy, y, dq, dk, dv};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) be->free(all[i]);
    return worst;
}

static void check_attention_products(int T, const RowBlock *partition, int n_blocks, uint64_t seed) {
    const Backend *be = backend_cpu_f64();
    enum { BH = 3, HS = 4 };
    size_t nh = (size_t)BH * T * HS, nt = (size_t)BH * T * T;
    AttnProducts a = {BH, T, HS, 0.5, gc_random(nh, seed, 1.0), gc_random(nh, seed + 1, 1.0), gc_random(nh, seed + 2, 1.0),
                      gc_random(nh, seed + 3, 1.0), gc_random(nt, seed + 4, 1.0), gc_random(nt, seed + 5, 1.0)};
    for (size_t e = 0; e < nt; e++)
        if ((int)(e % T) > (int)((e / T) % T)) ((double *)a.probs)[e] = ((double *)a.dscores)[e] = 0;   // j > i
    double *want[6] = {malloc(nt * sizeof(double)), malloc(nh * sizeof(double)), malloc(nt * sizeof(double)),
                       malloc(nh * sizeof(double)), malloc(nh * sizeof(double)), malloc(nh * sizeof(double))};
    attn_products_by_loops(&a, want[0], want[1], want[2], want[3], want[4], want[5]);
    RowBlock square = {0, T};
    double e_square = attn_products_error(be, &a, &square, 1, want), e_blocks = attn_products_error(be, &a, partition, n_blocks, want);
    printf("# T = %d: the square %.2e, %d row blocks %.2e (worst relative error of the six outputs)\n", T, e_square, n_blocks, e_blocks);
    assert_true(e_square <= 1e-12 && e_blocks <= 1e-12);
    for (int i = 0; i < 6; i++) free(want[i]);
    free((void *)a.q); free((void *)a.k); free((void *)a.v); free((void *)a.dy); free((void *)a.probs); free((void *)a.dscores);
}

static void test_attention_products_match_loops_on_the_square_and_row_blocks(void **state) {
    (void)state;
    const RowBlock short_rows[3] = {{0, 1}, {1, 6}, {7, 4}};   // rows 0 | 1-6 | 7-10
    check_attention_products(11, short_rows, 3, 90);
    const RowBlock long_rows[2] = {{0, 70}, {70, 80}};
    check_attention_products(150, long_rows, 2, 96);
}

// ---- the dscores contract ---------------------------------------------------------------------
// attn_scores_backward may read dscores as a full square (CUDA) or past the diagonal (the CPU's
// causal pieces), relying on zeros above it (backend.h); its two producers, softmax_causal_backward
// and sga_blend_backward (da), must write them as exact zeros, whatever their output buffer held
// before (here NaN and 1e30).

// A (BH,T,T) device tensor of garbage: NaN and 1e30, alternately.
static void *garbage_square(const Backend *be, int BH, int T) {
    size_t n = (size_t)BH * T * T;
    double *h = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) h[i] = i % 2 ? NAN : 1e30;
    void *dev = gc_upload(be, h, n);
    free(h);
    return dev;
}

// Exact zeros above the diagonal of every (T,T) matrix of dev (BH,T,T), finite values on the triangle.
static void assert_causal_with_exact_zeros(const Backend *be, const char *what, const void *dev, int BH, int T) {
    double *h = gc_download(be, dev, (size_t)BH * T * T);
    for (size_t idx = 0; idx < (size_t)BH * T * T; idx++) {
        size_t j = idx % T, i = (idx / T) % T;
        if (j > i ? h[idx] != 0.0 : !isfinite(h[idx]))
            fail_msg("%s (%s): entry %zu (i = %zu, j = %zu) is %g", what, be->name, idx, i, j, h[idx]);
    }
    free(h);
}

static void test_dscores_producers_write_exact_zeros_above_the_diagonal(void **state) {
    (void)state;
    const Backend *backends[] = {backend_cpu_f32(), backend_cpu_f64()};
    int BH = 3, T = 7;
    size_t n = (size_t)BH * T * T;
    for (int b = 0; b < 2; b++) {
        const Backend *be = backends[b];
        double *hs = gc_random(n, 30, 2.0), *hdp = gc_random(n, 31, 1.0), *ha = gc_random(n, 32, 1.0);
        double *hz = gc_random(n, 33, 1.0), *hdout = gc_random(n, 34, 1.0), alpha = 0.3;
        void *scores = gc_upload(be, hs, n), *dprobs = gc_upload(be, hdp, n), *a = gc_upload(be, ha, n);
        void *zp = gc_upload(be, hz, n), *dout = gc_upload(be, hdout, n), *alpha_raw = gc_upload(be, &alpha, 1);
        void *probs = be->alloc(n);
        be->softmax_causal_forward(probs, scores, BH, T, 0, T);
        void *dscores = garbage_square(be, BH, T);
        be->softmax_causal_backward(dscores, dprobs, probs, BH, T, 0, T);
        assert_causal_with_exact_zeros(be, "softmax_causal_backward dscores", dscores, BH, T);
        be->free(dscores);
        // The blend with a blend parameter and without one (alpha = 1: da is 0 on the triangle too).
        for (int with_alpha = 0; with_alpha < 2; with_alpha++) {
            void *da = garbage_square(be, BH, T), *dzp = garbage_square(be, BH, T);
            be->sga_blend_backward(da, dzp, NULL, dout, a, zp, with_alpha ? alpha_raw : NULL, BH, T, 0, T);
            assert_causal_with_exact_zeros(be, with_alpha ? "sga_blend_backward da" : "sga_blend_backward da, no alpha",
                                           da, BH, T);
            be->free(da); be->free(dzp);
        }
        void *ptrs[] = {scores, dprobs, a, zp, dout, alpha_raw, probs};
        for (int i = 0; i < 7; i++) be->free(ptrs[i]);
        free(hs); free(hdp); free(ha); free(hz); free(hdout);
    }
}

// ---- cross-entropy ----------------------------------------------------------------------------
typedef struct { int N, V; int32_t targets[6]; double dloss; } CeCtx;

static double ce_objective(const Backend *be, double **in, void *ctx_) {
    CeCtx *c = ctx_;
    void *logits = gc_upload(be, in[0], (size_t)c->N * c->V), *losses = be->alloc(c->N);
    int32_t *tg = be->alloc_i32(c->N);
    be->upload_i32(tg, c->targets, c->N);
    be->crossentropy_forward(losses, logits, logits, tg, c->N, c->V);
    double s = c->dloss * be->sum(losses, c->N);
    be->free(logits); be->free(losses); be->free(tg);
    return s;
}

static void ce_gradient(const Backend *be, double **in, double **g, void *ctx_) {
    CeCtx *c = ctx_;
    void *logits = gc_upload(be, in[0], (size_t)c->N * c->V), *losses = be->alloc(c->N);
    int32_t *tg = be->alloc_i32(c->N);
    be->upload_i32(tg, c->targets, c->N);
    be->crossentropy_forward(losses, logits, logits, tg, c->N, c->V);
    be->crossentropy_backward(logits, logits, tg, c->dloss, c->N, c->V);
    grads_download(be, g, 0, logits, (size_t)c->N * c->V);
    be->free(logits); be->free(losses); be->free(tg);
}

static void test_crossentropy_backward_matches_finite_differences(void **state) {
    (void)state;
    CeCtx c = {.N = 6, .V = 11, .targets = {3, -1, 0, 10, 5, -1}, .dloss = 0.37};
    GradCheck gc = {.n_inputs = 1, .ctx = &c, .objective = ce_objective, .gradient = ce_gradient,
                    .inputs = {gc_random(66, 17, 2.0)}, .sizes = {66}, .names = {"crossentropy.logits"},
                    .differentiable = {1}};
    assert_true(gradcheck_run(&gc, 1000, STEP) < TOL);
}

// A target of -1 contributes neither loss nor gradient; a uniform row has loss ln V.
static void test_crossentropy_ignores_masked_targets(void **state) {
    (void)state;
    const Backend *be = backend_cpu_f32();
    int N = 2, V = 8;
    double zeros[16] = {0};
    int32_t targets[2] = {-1, 5};
    void *logits = gc_upload(be, zeros, 16), *losses = be->alloc(2);
    int32_t *tg = be->alloc_i32(2);
    be->upload_i32(tg, targets, 2);
    be->crossentropy_forward(losses, logits, logits, tg, N, V);
    double *l = gc_download(be, losses, 2);
    assert_true(l[0] == 0.0);
    assert_true(fabs(l[1] - log(8.0)) < 1e-6);
    be->crossentropy_backward(logits, logits, tg, 1.0, N, V);
    double *d = gc_download(be, logits, 16);
    for (int j = 0; j < V; j++) assert_true(d[j] == 0.0);
    free(l); free(d); be->free(logits); be->free(losses); be->free(tg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_backward_matches_finite_differences),
        cmocka_unit_test(test_matmul_backward_dinp_accumulates_what_assign_writes),
        cmocka_unit_test(test_layernorm_backward_dinp_accumulates_what_assign_writes),
        cmocka_unit_test(test_layernorm_backward_matches_finite_differences),
        cmocka_unit_test(test_gelu_mlp_backward_matches_finite_differences),
        cmocka_unit_test(test_encoder_backward_matches_finite_differences),
        cmocka_unit_test(test_attention_backward_matches_finite_differences),
        cmocka_unit_test(test_causal_softmax_masks_future_and_normalises),
        cmocka_unit_test(test_causal_softmax_on_row_blocks_matches_whole_square),
        cmocka_unit_test(test_attention_products_match_loops_on_the_square_and_row_blocks),
        cmocka_unit_test(test_dscores_producers_write_exact_zeros_above_the_diagonal),
        cmocka_unit_test(test_crossentropy_backward_matches_finite_differences),
        cmocka_unit_test(test_crossentropy_ignores_masked_targets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
