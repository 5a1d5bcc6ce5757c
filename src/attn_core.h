// attn_core.h: the materialised attention core shared by the variants that rewrite logits
// (attention_variant.h): scores = scale q k^T, the variant's logits, causal softmax into the
// (B,NH,T,T) weights kept for backward, the auxiliary losses on the weights, y = weights v.
#pragma once
#include "attention_variant.h"

// The diversity regulariser builds an (NH,NH) Gram matrix per sequence on the host.
#define ATTN_ADR_MAX_HEADS 64

// The buffers of a materialised core; a variant's slot struct begins with one.
typedef struct {
    int n_layers;             // layers whose tensors are kept: the stage's, or 1 under recomputation
    const Backend *be;
    size_t maps;              // elements of one layer's weights: B NH T T
    void *probs;              // (n_layers,B,NH,T,T) causal attention weights
    void *scores;             // (B,NH,T,T) scratch: scores, then logits
    void *dprobs, *dscores;   // (B,NH,T,T) scratch
    void *dlogits;            // (B,NH,T,T) scratch, only for variants that rewrite logits
    void *adr_gram;           // (NH,NH) scratch
} AttnCoreSlot;

// Where local layer li's kept tensors live: li, or 0 when the slot keeps one layer (recomputation).
int attn_core_kept_layer(const AttnCoreSlot *slot, int li);

void attn_core_slot_init(AttnCoreSlot *slot, const Backend *be, const ModelShape *s, int n_layers, int B, int rewrites_logits,
                         size_t *elements);
void attn_core_slot_release(AttnCoreSlot *slot, const Backend *be);

// The core of AttentionVariant for variants whose slot begins with an AttnCoreSlot.
void attn_core_forward(const AttentionVariant *self, void *slot, const AttnCall *c, const void *q, const void *k, const void *v,
                       void *y);
void attn_core_backward(const AttentionVariant *self, void *slot, const AttnCall *c, const void *q, const void *k, const void *v,
                        const void *dy, void *dq, void *dk, void *dv);
const void *attn_core_layer_probs(const void *slot, int li);

// A slot that is nothing but the core (variants without buffers of their own).
void *attn_core_slot_create(const Backend *be, const ModelShape *s, int n_layers, int B, size_t *elements);
void attn_core_slot_free(const Backend *be, void *slot);
