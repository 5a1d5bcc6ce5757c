// stochastic_depth.c: stochastic depth, the block hook BLOCK_HOOK_STOCHASTIC_DEPTH: in training,
// per sequence and block, both branches are dropped with probability drop.p and scaled by
// 1 / (1 - p) otherwise. The draw is a function of (seed, step, layer, global sequence index), so
// every topology drops the same branches.
#include <string.h>
#include "block_hook.h"
#include "common.h"
#include "rng.h"
#include "rng_streams.h"

// The draw's counter packs (step, layer) above the global sequence index.
#define SD_SEQUENCES_PER_DRAW (1u << 20)

typedef struct {
    double p;
    uint64_t seed;
    int n_layer;
} StochasticDepth;

typedef struct {
    void *gains;     // (Lc,B) device: 0 or 1 / (1 - p) per block and sequence
    float *host;     // (B)
} StochasticDepthSlot;

static int stochastic_depth_enabled(const Config *cfg) { return !strcmp(cfg->drop_mode, "stochastic_depth") && cfg->drop_p > 0; }

static void *stochastic_depth_create(const Backend *be, const ModelShape *s, int layer_begin, int layer_end) {
    (void)be; (void)layer_begin; (void)layer_end;
    StochasticDepth *d = xcalloc(1, sizeof *d);
    d->p = s->cfg->drop_p;
    d->seed = s->cfg->seed;
    d->n_layer = s->n_layer;
    return d;
}

static void stochastic_depth_destroy(void *state, const Backend *be) {
    (void)be;
    free(state);
}

static void *stochastic_depth_slot_create(void *state, const Backend *be, const ModelShape *s, int n_layers, int B,
                                          size_t *elements) {
    (void)state; (void)s;
    StochasticDepthSlot *slot = xcalloc(1, sizeof *slot);
    slot->gains = be->alloc((size_t)n_layers * B);
    slot->host = xmalloc(sizeof(float) * (size_t)B);
    *elements += (size_t)n_layers * B;
    return slot;
}

static void stochastic_depth_slot_free(void *state, const Backend *be, void *slot_) {
    (void)state;
    StochasticDepthSlot *slot = slot_;
    be->free(slot->gains);
    free(slot->host);
    free(slot);
}

static const void *stochastic_depth_gains(void *state, void *slot_, const LayerCall *c, int draw) {
    const StochasticDepth *d = state;
    StochasticDepthSlot *slot = slot_;
    const PassContext *pass = c->pass;
    if (!pass->step.training) return NULL;
    void *gains = be_offset(c->be, slot->gains, (size_t)c->li * c->B);
    if (draw) {
        if ((uint64_t)pass->first_sequence + (uint64_t)c->B > SD_SEQUENCES_PER_DRAW)
            die(EXIT_FAILURE_OTHER, "internal: stochastic depth draws for more than %u sequences per step", SD_SEQUENCES_PER_DRAW);
        for (int b = 0; b < c->B; b++) {
            uint64_t counter = ((uint64_t)pass->step.step * (uint64_t)d->n_layer + (uint64_t)c->layer) * SD_SEQUENCES_PER_DRAW +
                               (uint64_t)(pass->first_sequence + b);
            double u = rng_uniform(d->seed, RNG_STREAM_STOCHASTIC_DEPTH, counter);
            slot->host[b] = u < d->p ? 0.0f : (float)(1.0 / (1.0 - d->p));
        }
        c->be->upload(gains, slot->host, (size_t)c->B);
    }
    return gains;
}

const BlockHook BLOCK_HOOK_STOCHASTIC_DEPTH = {
    .name = "stochastic_depth",
    .enabled = stochastic_depth_enabled,
    .create = stochastic_depth_create,
    .destroy = stochastic_depth_destroy,
    .slot_create = stochastic_depth_slot_create,
    .slot_free = stochastic_depth_slot_free,
    .branch_gains = stochastic_depth_gains,
};
