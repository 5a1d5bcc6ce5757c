// layerdrop.c: LayerDrop (the SGA post's baseline), the block hook BLOCK_HOOK_LAYERDROP: each
// training step every block is the identity with probability drop.p, the same draw on every rank,
// a function of (seed, step, layer).
#include <string.h>
#include "block_hook.h"
#include "common.h"
#include "rng.h"
#include "rng_streams.h"

typedef struct {
    double p;
    uint64_t seed;
    int n_layer;
    uint8_t *skip;   // (n_layer) this step's draws
} LayerDrop;

static int layerdrop_enabled(const Config *cfg) { return !strcmp(cfg->drop_mode, "layerdrop") && cfg->drop_p > 0; }

static void *layerdrop_create(const Backend *be, const ModelShape *s, int layer_begin, int layer_end) {
    (void)be; (void)layer_begin; (void)layer_end;
    LayerDrop *d = xcalloc(1, sizeof *d);
    d->p = s->cfg->drop_p;
    d->seed = s->cfg->seed;
    d->n_layer = s->n_layer;
    d->skip = xcalloc((size_t)s->n_layer, 1);
    return d;
}

static void layerdrop_destroy(void *state, const Backend *be) {
    (void)be;
    LayerDrop *d = state;
    free(d->skip);
    free(d);
}

static void layerdrop_begin_step(void *state, const StepContext *ctx) {
    LayerDrop *d = state;
    for (int l = 0; l < d->n_layer; l++)
        d->skip[l] = rng_uniform(d->seed, RNG_STREAM_LAYERDROP, (uint64_t)ctx->step * d->n_layer + l) < d->p;
}

static int layerdrop_skips_block(void *state, const LayerCall *c) {
    const LayerDrop *d = state;
    return c->pass->step.training && d->skip[c->layer];
}

const BlockHook BLOCK_HOOK_LAYERDROP = {
    .name = "layerdrop",
    .enabled = layerdrop_enabled,
    .create = layerdrop_create,
    .destroy = layerdrop_destroy,
    .begin_step = layerdrop_begin_step,
    .skips_block = layerdrop_skips_block,
};
