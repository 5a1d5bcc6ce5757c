// model.h: the GPT decoder (docs/design.md section 2) as a sequence of backend ops.
//
// A Model holds the parameters of one pipeline stage: blocks [layer_begin, layer_end), plus the
// embeddings on the first stage and the final LayerNorm and LM head on the last. With one stage
// it is the whole model. Parameters and gradients each live in one arena allocated by the backend;
// per-layer tensors are stacked over the stage's layers, as in the checkpoint's logical shapes.
//
// The model is the composition: its own parameters (embeddings, LayerNorms, attention and MLP
// projections, head), one attention variant (attention_variant.h) for the core of every block's
// attention, and the block hooks the config enables (block_hook.h). Each module declares its
// parameters; the model lays them out, initialises them and hands each module its tensors.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "attention_variant.h"
#include "backend.h"
#include "block_hook.h"
#include "config.h"
#include "model_shape.h"

// The model's own parameters; the modules' follow them in the table (ids from NUM_CORE_PARAMS on).
typedef enum {
    PARAM_WTE,        // (V, C) token embedding (and the LM head when tied)
    PARAM_WPE,        // (T, C) learned positions
    PARAM_LN1_W,      // (L, C)
    PARAM_LN1_B,      // (L, C)
    PARAM_QKV_W,      // (L, 3C, C)
    PARAM_QKV_B,      // (L, 3C)
    PARAM_ATTPROJ_W,  // (L, C, C)
    PARAM_ATTPROJ_B,  // (L, C)
    PARAM_LN2_W,      // (L, C)
    PARAM_LN2_B,      // (L, C)
    PARAM_FC_W,       // (L, H, C), H = mlp_hidden
    PARAM_FC_B,       // (L, H)
    PARAM_FCPROJ_W,   // (L, C, H)
    PARAM_FCPROJ_B,   // (L, C)
    PARAM_LNF_W,      // (C)
    PARAM_LNF_B,      // (C)
    PARAM_LM_HEAD,    // (V, C), only when the head is not tied
    NUM_CORE_PARAMS
} ParamId;

#define MODEL_MAX_PARAMS (NUM_CORE_PARAMS + MODULE_MAX_PARAMS * (1 + MAX_BLOCK_HOOKS))

typedef enum { ROLE_EMBEDDING, ROLE_BLOCK, ROLE_HEAD } ParamRole;

typedef struct {
    const char *name;      // stable name, used as the checkpoint dataset name
    ParamRole role;
    int slice_ndim;        // rank of one layer's slice (or of the whole tensor if not per layer)
    long slice_shape[2];
    size_t slice_numel;
    int decay;             // AdamW weight decay applies
    ParamInit init;
    double init_value;     // std (INIT_NORMAL) or value (INIT_CONSTANT)
    uint32_t stream;       // random stream of its initialisation (param_spec.h)
    int n_listed;          // block parameters of listed layers only: how many (0: every layer)
    int listed[PARAM_MAX_LAYER_LIST];
    int exists;            // the model has it (module parameters by config, lm_head only untied)
    int present;           // this stage holds it (in at least one of its layers)
    size_t offset;         // element offset in the stage's arenas (non-block parameters)
    size_t numel;          // elements held by this stage
} ParamInfo;

// Whether block parameter p has a slice at global layer `layer`; and that slice's row in the
// checkpoint's stacked dataset (the layer, or its position among the listed layers).
int param_in_layer(const ParamInfo *p, int layer);
int param_row(const ParamInfo *p, int layer);
// The number of stacked rows of a block parameter in the whole model.
int param_rows(const ParamInfo *p, int n_layer);

// A contiguous range of the parameter/gradient arenas: the unit of data-parallel reduction.
typedef struct {
    size_t offset;
    size_t numel;
} ModelRegion;

enum { REGION_EMBEDDING, REGION_HEAD, NUM_FIXED_REGIONS };

typedef struct {
    ModelShape shape;
    int layer_begin, layer_end;     // blocks owned by this stage
    int has_embedding, has_head;
    int n_params;                   // entries of params: the core's, the variant's, each hook's
    ParamInfo params[MODEL_MAX_PARAMS];
    int attn_param0, attn_n_params; // the attention variant's entries
    int n_hooks;
    const BlockHook *hooks[MAX_BLOCK_HOOKS];
    void *hook_state[MAX_BLOCK_HOOKS];
    int hook_param0[MAX_BLOCK_HOOKS], hook_n_params[MAX_BLOCK_HOOKS];
    AttnRegularizers reg;           // weights of the auxiliary losses on the attention weights
    ModelRegion regions[NUM_FIXED_REGIONS];  // embedding (wte, wpe) and head (lnf, lm_head); may be empty
    size_t *layer_offset;           // (local layers + 1) start of each layer's region in the arenas
    size_t *slice_offset;           // (n_params, local layers) arena offset of each block slice; SIZE_MAX: absent
    size_t num_params;              // elements in each arena
    const Backend *be;
    void *params_mem;               // (num_params)
    void *grads_mem;                // (num_params)
    void *head_mask;                // (layers on this stage, NH) device gains: head pruning at eval, or NULL
} Model;

// Lays out the parameter table of one stage and allocates its arenas (zeroed).
// The arenas are padded to a multiple of `arena_multiple` elements (ZeRO-1 shards them over dp).
void model_init(Model *m, const Backend *be, ModelShape shape, int layer_begin, int layer_end, int has_embedding, int has_head,
                size_t arena_multiple);
void model_free(Model *m);

// Fills the parameters with the configured initialisation. Each element is a pure function of
// (seed, parameter stream, global layer, index), so every topology starts from the same weights.
void model_init_weights(Model *m, uint64_t seed);

// The parameter named `name` (checkpoint name), or -1.
int model_find_param(const Model *m, const char *name);

// Element offset, and device pointer, of the slice of parameter `id` for global layer `layer`
// (ignored for non-block params), in the parameter or in the gradient arena.
size_t model_param_offset(const Model *m, int id, int layer);
void *model_param(const Model *m, int id, int layer);
void *model_grad(const Model *m, int id, int layer);

// The arena range holding every parameter of global layer `layer`.
ModelRegion model_layer_region(const Model *m, int layer);

// Parameter counts of the whole model (not the stage), for `info` and the log: all, and those
// declared by the attention variant and by each hook (indexed like block_hooks_for_config).
typedef struct {
    size_t total;
    size_t attention_variant;
    int n_hooks;
    size_t hooks[MAX_BLOCK_HOOKS];
} ModuleParamCounts;
ModuleParamCounts model_count_params(const ModelShape *s);

// The per-stage state of `hook`, or NULL when the model does not use it.
void *model_hook_state(const Model *m, const BlockHook *hook);

// ---- activations ------------------------------------------------------------------------------
// Everything one micro-batch of B sequences leaves behind for the backward pass, plus the
// gradient scratch the backward pass reuses from layer to layer. The attention variant's and the
// hooks' tensors live in their own slots.
typedef struct {
    int B, T;
    int n_local;            // layers on this stage
    RecomputeMode recompute;  // train.recompute: what the forward pass keeps (docs/design.md section 10)
    int kept;               // layers of the per-layer block tensors held: n_local, or 1 under "block"
                            // (then only the block outputs stay per layer: the next block's input)
    int held;               // under recomputation: the local layer whose tensors the one-layer scratch
                            // holds now (-1: none); the last layer's survive the forward pass
    int bf16;               // train.activations = "bf16" (and not "block"): the GEMM-only tensors below
                            // (ln1, attmerged, fch_gelu; ln2 pre-norm) are one fp32 layer of scratch,
                            // and every layer's copy is kept in bf16 (*_bf16)
    PassContext pass;       // set by the caller before model_forward; backward uses the same
    int32_t *tokens;        // (B,T) device
    int32_t *targets;       // (B,T) device, -1 = no loss
    void *input;            // (B,T,C) stage input: the embedding (first stage) or the previous stage's output
    void *ln1, *ln1_mean, *ln1_rstd;      // (Lc,B,T,C), (Lc,B,T), (Lc,B,T)
    void *qkv;                            // (B,T,3C) one layer of scratch, split into q, k, v at once
    void *q, *k, *v;                      // (Lc,B,NH,T,hs)
    void *atty;                           // (Lc,B,NH,T,hs)
    void *attmerged;                      // (Lc,B,T,C)
    void *resid_mid;                      // (Lc,B,T,C) x + attention
    void *ln2, *ln2_mean, *ln2_rstd;      // (Lc,B,T,C), (Lc,B,T), (Lc,B,T)
    void *fch_slope, *fch_gelu;           // (Lc,B,T,H) GELU's slope at the MLP's pre-activation fch, and GELU(fch)
    void *resid_out;                      // (Lc,B,T,C) attention-residual + MLP
    // bf16 copies (alloc_bf16) of the tensors backward reads only as a GEMM's input, NULL unless
    // bf16: the weight gradient dW = dout^T x of the GEMM each feeds. ln2_bf16 pre-norm only (post-
    // norm, ln2 is the block output: the residual stream stays fp32)
    void *ln1_bf16, *attmerged_bf16, *ln2_bf16;   // (Lc,B,T,C) each
    void *fch_gelu_bf16;                          // (Lc,B,T,H)
    void *lnf, *lnf_mean, *lnf_rstd;      // (B,T,C), (B,T), (B,T)
    void *logits;                         // (B,T,V); softmax probabilities after the forward pass
    void *losses;                         // (B,T)
    double aux[NUM_AUX];                  // this pass's unweighted auxiliary sums (step_context.h)
    void *attn_slot;                      // the attention variant's buffers
    void *hook_slot[MAX_BLOCK_HOOKS];     // each hook's buffers (or NULL)
    const void **block_in;                // (Lc, n_hooks + 1) host: block li's raw input, then after each hook
    // gradient scratch
    void *dresidual;                      // (B,T,C) gradient of the residual stream
    void *dtmp, *dln;                     // (B,T,C)
    void *dqkv;                           // (B,T,3C)
    void *dq, *dk, *dv, *datty;           // (B,NH,T,hs)
    void *dattmerged;                     // (B,T,C)
    void *dfch;                           // (B,T,H) the gradient of the pre-activation fch
    size_t bytes;                         // total device bytes held
} Activations;

void activations_init(Activations *a, const Model *m, int B);
void activations_free(Activations *a, const Model *m);

// The residual stream entering local block li (B,T,C) before any hook, and its attention
// weights (B,NH,T,T) (NULL if the variant keeps none). Under train.recompute the weights are
// rebuilt on demand into the slot's one-layer scratch (valid until the next rebuild or pass):
// the traces and the head entropies read them after the forward pass this way.
const void *model_block_input(const Model *m, const Activations *a, int li);
const void *model_layer_probs(const Model *m, const Activations *a, int li);

// Block output of local layer index li (the next block's input).
void *model_block_output(const Model *m, const Activations *a, int li);

// A module's view of local layer li: the call it gets from the model, with its parameters.
typedef struct {
    LayerCall call;
    void *param[MODULE_MAX_PARAMS], *grad[MODULE_MAX_PARAMS];
} ModuleCall;
// The attention variant's call for local layer li (the fields of LayerCall point into *out).
void model_variant_call(const Model *m, Activations *a, int li, ModuleCall *out);

// Forward pass of the stage over the micro-batch whose tokens/targets are already on the device,
// in the step described by a->pass. On the last stage the softmax probabilities replace the
// logits and `losses` holds one loss per position (0 where target < 0).
void model_forward(Model *m, Activations *a);

// Mean attention row entropy (nats) per local layer, sequence and head of the last forward pass:
// out (n_local, B, NH), host memory.
void model_head_entropies(const Model *m, const Activations *a, double *out);

// The gradient of head h's slice of layer `layer`'s attention weights, flattened: rows of W_q,
// W_k, W_v and columns of W_o. out (NH, 4 hs C), host memory. (HeadGradientsFn for the hooks.)
void model_head_gradients(const void *model, int layer, double *out);

// Sum of the per-position losses of the last forward pass (last stage only).
double model_loss_sum(const Model *m, const Activations *a);

// The weight of auxiliary term `term` in the reported loss of a step (the objective's is this
// times ctx->loss_scale).
double model_aux_weight(const Model *m, AuxTerm term, const StepContext *ctx);

// The hooks' per-step work: before the step's first pass, and after its gradients are complete
// (collective over all ranks; returns 1 if a hook measured something, e.g. R3SI's monitor).
void model_begin_step(Model *m, const StepContext *ctx);
int model_after_gradients(Model *m, Comm *comm, const StepContext *ctx, double tokens, int grads_reduced);

// Called by model_backward as soon as the gradients of one arena region are complete for this
// micro-batch: the head region first, then each layer from the last, then the embedding region.
// Data-parallel reduction starts on it while the backward pass goes on.
typedef void (*GradReadyFn)(void *ctx, ModelRegion region, int is_embedding);

// Backward pass. dloss is d(total loss)/d(loss of one position), e.g. 1 / (valid targets of the
// global batch). Parameter gradients accumulate (+=) into the gradient arena. On a stage without
// the head, a->dresidual must hold the gradient of the stage's output on entry; on exit it holds
// the gradient of the stage's input. ready may be NULL.
void model_backward(Model *m, Activations *a, double dloss, GradReadyFn ready, void *ready_ctx);

// The stage's output of the last forward pass (B,T,C): the last block's output.
void *model_stage_output(const Model *m, const Activations *a);
