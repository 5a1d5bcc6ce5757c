// block_hook.h: the interface of a block hook, and the table of all hooks.
//
// A hook acts around the blocks of the residual stream: it may transform a block's input (R3SI's
// injection, with L_SD on it), make a block the identity for a step (LayerDrop), or gain its two
// branches per sequence (stochastic depth). It owns its parameters (declared per layer, possibly
// for a few listed layers only), its per-stage state (kept across steps, checkpointed by its own
// module where needed) and the buffers of each micro-batch slot. Everything about the step comes
// in the PassContext of the LayerCall; a hook keeps no trainer switches.
//
// Adding one: a new file that defines its BlockHook, and one entry in BLOCK_HOOK_TABLE.
#pragma once
#include <stddef.h>
#include "comm.h"
#include "layer_call.h"
#include "param_spec.h"

typedef struct BlockHook BlockHook;

// The head-h slices of one layer's attention-weight gradients, flattened (NH, 4 hs C): rows of
// W_q, W_k, W_v and columns of W_o, as the model provides them (model_head_gradients).
typedef void (*HeadGradientsFn)(const void *model, int layer, double *out);

// What a hook gets after the step's gradients are complete (collective over all ranks).
typedef struct {
    const Backend *be;
    Comm *comm;
    const StepContext *ctx;
    double tokens;                   // tokens in the global batch
    int grads_reduced;               // the gradient arena holds dp-summed gradients (not under ZeRO-1)
    HeadGradientsFn head_gradients;
    const void *model;
} HookStepEnv;

struct BlockHook {
    const char *name;
    int (*enabled)(const Config *cfg);
    // The parameters of one layer (at most MODULE_MAX_PARAMS); NULL: none.
    int (*declare_params)(const ModelShape *s, ParamSpec *out);
    // Per-stage state for blocks [layer_begin, layer_end); NULL: stateless.
    void *(*create)(const Backend *be, const ModelShape *s, int layer_begin, int layer_end);
    void (*destroy)(void *state, const Backend *be);
    // Buffers of one micro-batch slot of B sequences; *elements (+=) counts float elements.
    void *(*slot_create)(void *state, const Backend *be, const ModelShape *s, int n_layers, int B, size_t *elements);
    void (*slot_free)(void *state, const Backend *be, void *slot);
    // Once per training step on every rank, before its first pass.
    void (*begin_step)(void *state, const StepContext *ctx);
    // After the gradients of a training step (collective); returns 1 if it measured something
    // this step (R3SI's monitor).
    int (*after_gradients)(void *state, const HookStepEnv *env);
    // The weight of an auxiliary term the hook adds to (AuxTerm) in the reported loss; 0 for others.
    double (*aux_weight)(const void *state, AuxTerm term, const StepContext *ctx);

    // Forward, before block c->layer: the block's input from x (B,T,C) (x itself, or a copy the
    // slot keeps); NULL: x unchanged.
    const void *(*block_input)(void *state, void *slot, const LayerCall *c, const void *x);
    // Backward of block_input: dx holds the gradient of the returned input on entry and of x on
    // exit (may be updated in place).
    void (*block_input_backward)(void *state, void *slot, const LayerCall *c, const void *x, void *dx);
    // 1: block c->layer is the identity in this pass.
    int (*skips_block)(void *state, const LayerCall *c);
    // The gains (B) of both branches of block c->layer per sequence, drawn when `draw` (forward)
    // and reused in backward; NULL: 1.
    const void *(*branch_gains)(void *state, void *slot, const LayerCall *c, int draw);
};

// Every hook, in the order the model applies them: X(its BlockHook object).
#define BLOCK_HOOK_TABLE(X) \
    X(BLOCK_HOOK_R3SI)      \
    X(BLOCK_HOOK_LAYERDROP) \
    X(BLOCK_HOOK_STOCHASTIC_DEPTH)

#define BLOCK_HOOK_DECLARE(object) extern const BlockHook object;
BLOCK_HOOK_TABLE(BLOCK_HOOK_DECLARE)
#undef BLOCK_HOOK_DECLARE

#define MAX_BLOCK_HOOKS 4

// Stochastic depth's draws pack (step, layer) above the sequence's index in the global batch:
// train.batch_size may not exceed this under stochastic depth (validate.c checks).
#define STOCHASTIC_DEPTH_MAX_SEQUENCES (1u << 20)

// The hooks `cfg` enables, in table order; returns how many.
int block_hooks_for_config(const Config *cfg, const BlockHook **out);
