// block_drop.c: the two ways the drop.* keys remove blocks in training, as block hooks. Both draw
// from rng.h as pure functions of the seed, so every rank and topology drops the same blocks.
//   LayerDrop (BLOCK_HOOK_LAYERDROP, the SGA post's baseline): each training step every block is
//   the identity with probability drop.p, a function of (seed, step, layer).
//   Stochastic depth (BLOCK_HOOK_STOCHASTIC_DEPTH): per sequence and block, both branches are
//   dropped with probability drop.p and scaled by 1 / (1 - p) otherwise, a function of (seed,
//   step, layer, global sequence index).
#include <string.h>
#include "block_hook.h"
#include "common.h"
#include "rng.h"
#include "rng_streams.h"


typedef struct {
    double p;
    uint64_t seed;
    int n_layer;
    uint8_t *skip;   // LayerDrop: (n_layer) this step's draws
} BlockDrop;

static void *block_drop_create(const Backend *be, const ModelShape *s, int layer_begin, int layer_end) {
    (void)be; (void)layer_begin; (void)layer_end;
    BlockDrop *d = xcalloc(1, sizeof *d);
    d->p = s->cfg->drop_p;
    d->seed = s->cfg->seed;
    d->n_layer = s->n_layer;
    d->skip = xcalloc((size_t)s->n_layer, 1);
    return d;
}

static void block_drop_destroy(void *state, const Backend *be) {
    (void)be;
    BlockDrop *d = state;
    free(d->skip);
    free(d);
}

// ---- LayerDrop ----------------------------------------------------------------------------------

static int layerdrop_enabled(const Config *cfg) { return !strcmp(cfg->drop_mode, "layerdrop") && cfg->drop_p > 0; }

static void layerdrop_begin_step(void *state, const StepContext *ctx) {
    BlockDrop *d = state;
    for (int l = 0; l < d->n_layer; l++)
        d->skip[l] = rng_uniform(d->seed, RNG_STREAM_LAYERDROP, (uint64_t)ctx->step * d->n_layer + l) < d->p;
}

static int layerdrop_skips_block(void *state, const LayerCall *c) {
    const BlockDrop *d = state;
    return c->pass->step.training && d->skip[c->layer];
}

const BlockHook BLOCK_HOOK_LAYERDROP = {
    .name = "layerdrop",
    .enabled = layerdrop_enabled,
    .create = block_drop_create,
    .destroy = block_drop_destroy,
    .begin_step = layerdrop_begin_step,
    .skips_block = layerdrop_skips_block,
};

// ---- stochastic depth ---------------------------------------------------------------------------
typedef struct {
    void *gains;     // (Lc,B) device: 0 or 1 / (1 - p) per block and sequence
    float *host;     // (B)
} StochasticDepthSlot;

static int stochastic_depth_enabled(const Config *cfg) { return !strcmp(cfg->drop_mode, "stochastic_depth") && cfg->drop_p > 0; }

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
    const BlockDrop *d = state;
    StochasticDepthSlot *slot = slot_;
    const PassContext *pass = c->pass;
    if (!pass->step.training) return NULL;
    void *gains = be_offset(c->be, slot->gains, (size_t)c->li * c->B);
    if (draw) {
        if ((uint64_t)pass->first_sequence + (uint64_t)c->B > STOCHASTIC_DEPTH_MAX_SEQUENCES)
            die(EXIT_FAILURE_OTHER, "internal: stochastic depth draws for more than %u sequences per step", STOCHASTIC_DEPTH_MAX_SEQUENCES);
        for (int b = 0; b < c->B; b++) {
            uint64_t counter = ((uint64_t)pass->step.step * (uint64_t)d->n_layer + (uint64_t)c->layer) * STOCHASTIC_DEPTH_MAX_SEQUENCES +
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
    .create = block_drop_create,
    .destroy = block_drop_destroy,
    .slot_create = stochastic_depth_slot_create,
    .slot_free = stochastic_depth_slot_free,
    .branch_gains = stochastic_depth_gains,
};
