#include "optimizer.h"
#include <math.h>

double lr_at_step(const Config *cfg, long step, long total_steps) {
    if (step < cfg->warmup_steps) return cfg->lr * (double)(step + 1) / cfg->warmup_steps;
    if (total_steps <= cfg->warmup_steps) return cfg->lr;
    double progress = (double)(step - cfg->warmup_steps) / (double)(total_steps - cfg->warmup_steps);
    if (progress > 1) progress = 1;
    double cosine = 0.5 * (1.0 + cos(M_PI * progress));
    return cfg->min_lr + (cfg->lr - cfg->min_lr) * cosine;
}

void adam_init(AdamState *st, const Model *model) {
    st->m = model->be->alloc(model->num_params);
    st->v = model->be->alloc(model->num_params);
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

double grad_sum_squares(const Model *model) {
    double total = 0;
    for (int i = 0; i < NUM_PARAMS; i++) {
        const ParamInfo *p = &model->params[i];
        if (!p->present || !counted_once(model, i)) continue;
        total += model->be->sum_squares(be_offset(model->be, model->grads_mem, p->offset), p->numel);
    }
    return total;
}

void adam_step(AdamState *st, Model *model, const Config *cfg, double lr, double grad_scale) {
    const Backend *be = model->be;
    st->t++;
    for (int i = 0; i < NUM_PARAMS; i++) {
        const ParamInfo *p = &model->params[i];
        if (!p->present) continue;
        be->adamw_update(be_offset(be, model->params_mem, p->offset), be_offset(be, model->grads_mem, p->offset),
                         be_offset(be, st->m, p->offset), be_offset(be, st->v, p->offset), p->numel, lr, cfg->beta1,
                         cfg->beta2, cfg->adam_eps, p->decay ? cfg->weight_decay : 0.0, grad_scale, st->t);
    }
}
