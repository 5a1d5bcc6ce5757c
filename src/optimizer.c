#include "optimizer.h"
#include <math.h>
#include <string.h>

// The tail of an extended run (train.extend, resolved at a resume into extend_step / extend_lr):
// constant keeps the LR reached; rewarm climbs linearly back to train.lr over
// min(warmup_steps, half the tail) steps, then decays by the same cosine to min_lr at the new end.
static double lr_tail(const Config *cfg, long step, long total_steps) {
    long from = cfg->extend_step;
    if (!strcmp(cfg->extend, "constant") || total_steps <= from) return cfg->extend_lr;
    long w = (total_steps - from) / 2 < cfg->warmup_steps ? (total_steps - from) / 2 : cfg->warmup_steps;
    if (step < from + w) return cfg->extend_lr + (cfg->lr - cfg->extend_lr) * (double)(step - from + 1) / w;
    double progress = (double)(step - from - w) / (double)(total_steps - from - w);
    if (progress > 1) progress = 1;
    return cfg->min_lr + (cfg->lr - cfg->min_lr) * 0.5 * (1.0 + cos(M_PI * progress));
}

double lr_at_step(const Config *cfg, long step, long total_steps) {
    if (cfg->extend_step > 0 && step >= cfg->extend_step && strcmp(cfg->extend, "none")) return lr_tail(cfg, step, total_steps);
    if (step < cfg->warmup_steps) return cfg->lr * (double)(step + 1) / cfg->warmup_steps;
    if (total_steps <= cfg->warmup_steps) return cfg->lr;
    double progress = (double)(step - cfg->warmup_steps) / (double)(total_steps - cfg->warmup_steps);
    if (progress > 1) progress = 1;
    double cosine = 0.5 * (1.0 + cos(M_PI * progress));
    return cfg->min_lr + (cfg->lr - cfg->min_lr) * cosine;
}

void adam_init(AdamState *st, const Model *model, size_t begin, size_t numel) {
    st->begin = begin;
    st->numel = numel;
    st->m = model->be->alloc(numel);
    st->v = model->be->alloc(numel);
    st->t = 0;
}

void adam_free(AdamState *st, const Model *model) {
    model->be->free(st->m);
    model->be->free(st->v);
    st->m = st->v = NULL;
}

// The last stage's copy of a tied wte is a replica of the first stage's, not a tensor of its own.
static int counted_once(const Model *model, int id) {
    return !(id == PARAM_WTE && !model->has_embedding);
}

// Calls fn on the part inside [begin, end) of every contiguous parameter slice of this stage:
// one slice per non-block tensor, one per layer for block tensors.
typedef void (*SliceFn)(const Model *model, const ParamInfo *p, size_t offset, size_t n, void *ctx);

static void for_each_slice_in(const Model *model, size_t begin, size_t end, SliceFn fn, void *ctx) {
    for (int i = 0; i < model->n_params; i++) {
        const ParamInfo *p = &model->params[i];
        if (!p->present) continue;
        int layers = p->role == ROLE_BLOCK ? model->layer_end - model->layer_begin : 1;
        for (int l = 0; l < layers; l++) {
            if (p->role == ROLE_BLOCK && !param_in_layer(p, model->layer_begin + l)) continue;
            size_t o = model_param_offset(model, i, model->layer_begin + l);
            size_t n = p->role == ROLE_BLOCK ? p->slice_numel : p->numel;
            size_t lo = o > begin ? o : begin, hi = o + n < end ? o + n : end;
            if (lo < hi) fn(model, p, lo, hi - lo, ctx);
        }
    }
}

typedef struct {
    const void *grads;
    size_t begin;
    double total;
} SumCtx;

static void add_sum_squares(const Model *model, const ParamInfo *p, size_t offset, size_t n, void *ctx_) {
    SumCtx *c = ctx_;
    if (!counted_once(model, (int)(p - model->params))) return;
    c->total += model->be->sum_squares(be_offset(model->be, (void *)c->grads, offset - c->begin), n);
}

double grad_sum_squares(const Model *model, const void *grads, size_t begin, size_t numel) {
    SumCtx c = {grads, begin, 0};
    for_each_slice_in(model, begin, begin + numel, add_sum_squares, &c);
    return c.total;
}

typedef struct {
    AdamState *st;
    const Config *cfg;
    const void *grads;
    double lr, grad_scale;
} AdamCtx;

static void adam_slice(const Model *model, const ParamInfo *p, size_t offset, size_t n, void *ctx_) {
    const AdamCtx *c = ctx_;
    const Backend *be = model->be;
    size_t local = offset - c->st->begin;
    be->adamw_update(be_offset(be, model->params_mem, offset), be_offset(be, (void *)c->grads, local),
                     be_offset(be, c->st->m, local), be_offset(be, c->st->v, local), n, c->lr, c->cfg->beta1,
                     c->cfg->beta2, c->cfg->adam_eps, p->decay ? c->cfg->weight_decay : 0.0, c->grad_scale, c->st->t);
}

void adam_step(AdamState *st, Model *model, const Config *cfg, double lr, double grad_scale, const void *grads) {
    st->t++;
    AdamCtx c = {st, cfg, grads, lr, grad_scale};
    for_each_slice_in(model, st->begin, st->begin + st->numel, adam_slice, &c);
}
