// attention_variant.h: the interface of an attention variant, and the table of all variants.
//
// The model runs every block's attention as: qkv = x W_qkv^T + b; split into heads q, k, v
// (B,NH,T,hs); y = core(q, k, v) (B,NH,T,hs); merge heads; output projection. A variant is the
// core. Most variants materialise the (B,NH,T,T) attention weights and only rewrite the logits
// between scores = scale q k^T and the causal softmax (SDPA: no rewrite; SGA: the spectral gate):
// they set logits_forward (or probs_forward, which takes the softmax too)/logits_backward and use
// attn_core.h's materialised core. A variant that never materialises the weights (a fused kernel)
// sets core_forward/core_backward instead.
//
// A variant owns its parameters (declared per layer), the buffers of each micro-batch slot and
// their contents. Adding one: a new file that defines its AttentionVariant, and one entry in
// ATTENTION_VARIANT_TABLE below (the config's allowed values of attention.kind come from it too).
#pragma once
#include <stddef.h>
#include "layer_call.h"
#include "param_spec.h"

// Weights of the auxiliary losses on the attention weights (materialised cores only).
typedef struct {
    double entropy_weight;   // aux -= weight x sum over rows i >= 1 of H_i / ln(i+1)
    double adr_weight;       // aux += weight x sum over sequences and head pairs of cos(A_h, A_h')
} AttnRegularizers;

// One layer's attention call: the common LayerCall plus what attention needs.
typedef struct {
    LayerCall layer;
    double scale;                    // logit scale: 1 / (sqrt(hs) x temperature)
    const AttnRegularizers *reg;     // NULL: none
    int rebuild;                     // 1: core_forward again for backward under train.recompute = "attention" (y NULL)
} AttnCall;

// Layers of (B,NH,T,T) tensors a slot for a stage of n_layers keeps: all of them, or under
// train.recompute one, rebuilt before each layer's backward.
static inline int attn_layers_kept(const ModelShape *s, int n_layers) {
    return s->cfg->recompute == RECOMPUTE_NONE ? n_layers : 1;
}

struct AttentionVariant {
    const char *name;                // the value of attention.kind
    const char *description;         // one line for `info` and --help

    // The parameters of one layer; returns how many (at most MODULE_MAX_PARAMS).
    int (*declare_params)(const ModelShape *s, ParamSpec *out);

    // The buffers one micro-batch slot keeps for the `n_layers` layers of a stage, B sequences;
    // *elements (+=) counts the float elements allocated. Under train.recompute a slot keeps one
    // layer of its (B,NH,T,T) tensors (attn_layers_kept; local layer li's at li % kept), and the
    // model rebuilds a layer's by calling core_forward again before its core_backward; a variant
    // may keep small per-row tensors of every layer to make that rebuild cheaper (SGA's gate).
    void *(*slot_create)(const Backend *be, const ModelShape *s, int n_layers, int B, size_t *elements);
    void (*slot_free)(const Backend *be, void *slot);

    // Materialised variants: logits (BH,T,T) from scores, may be in place; and the gradient:
    // dscores (=) (BH,T,T), zero above the diagonal, from dlogits. NULL: logits = scores.
    void (*logits_forward)(void *slot, const AttnCall *c, const void *scores, void *logits);
    void (*logits_backward)(void *slot, const AttnCall *c, const void *dlogits, void *dscores);
    // Instead of logits_forward: probs (BH,T,T), the causal softmax of the variant's logits, from
    // scores in one go, for a variant whose last op can take the softmax in the same pass over its
    // rows (SGA's blend). logits_backward is the same for both.
    void (*probs_forward)(void *slot, const AttnCall *c, const void *scores, void *probs);

    // The core: y (=) (B,NH,T,hs) from q, k, v, keeping what backward needs in the slot (y NULL:
    // a rebuild for backward under recomputation: only what backward needs, no auxiliary sums); and
    // dq, dk, dv (=) (B,NH,T,hs) from dy. attn_core.h's materialised core for most variants.
    void (*core_forward)(const AttentionVariant *self, void *slot, const AttnCall *c, const void *q, const void *k,
                         const void *v, void *y);
    void (*core_backward)(const AttentionVariant *self, void *slot, const AttnCall *c, const void *q, const void *k,
                          const void *v, const void *dy, void *dq, void *dk, void *dv);

    // The attention weights (B,NH,T,T) of local layer li from the last forward pass, for the
    // traces and head pruning; NULL if the variant does not keep them. A fused form that keeps no
    // weights may materialise them here on demand, into a buffer of its own (trace steps only).
    const void *(*layer_probs)(const void *slot, int li);
    // The softmax entropy (B,NH,T) of each attention row of local layer li from the last forward
    // pass, in nats, for the traces and head pruning; NULL: the model computes it from layer_probs.
    const void *(*layer_row_entropy)(const void *slot, int li);

    // Training FLOPs per token beyond SDPA's, for `info` and MFU (NULL: none).
    double (*extra_flops_per_token)(const ModelShape *s);
    // Bytes of workspace the variant's ops take on a GPU outside the backend's alloc (library
    // scratch, e.g. cuFFT's), for one micro-batch of B sequences, at their largest; NULL: none.
    // What the variant keeps or uses as scratch is allocated by slot_create and counted from there
    // (memory_estimate.c runs the real allocations on a counting backend).
    double (*gpu_workspace_bytes)(const ModelShape *s, int B);

    // The same variant computed without keeping (B,NH,T,T) tensors (attention.fused = true): the
    // same name and parameters, so checkpoints move freely between the two forms; NULL: none.
    const AttentionVariant *fused_form;
};

// Every variant: X(name as in attention.kind, its AttentionVariant object).
#define ATTENTION_VARIANT_TABLE(X)            \
    X("sdpa", ATTENTION_SDPA)                 \
    X("sga", ATTENTION_SGA)                   \
    X("head_scale", ATTENTION_HEAD_SCALE)

#define ATTENTION_VARIANT_DECLARE(name, object) extern const AttentionVariant object;
ATTENTION_VARIANT_TABLE(ATTENTION_VARIANT_DECLARE)
#undef ATTENTION_VARIANT_DECLARE
// The fused forms (attention.fused = true), reached through their variant's fused_form only: they
// share its name, so they are no entry of the table.
extern const AttentionVariant ATTENTION_SDPA_FUSED;

// The variant named `name`, or NULL.
const AttentionVariant *attention_variant_find(const char *name);
// The names of every variant, NULL-terminated (the allowed values of attention.kind).
const char *const *attention_variant_names(void);
