// attn_sdpa.c: scaled dot-product attention, the baseline variant: softmax(scale q k^T) v over
// the causal prefix, with nothing between the scores and the softmax.
#include "attn_core.h"

static int sdpa_declare_params(const ModelShape *s, ParamSpec *out) {
    (void)s; (void)out;
    return 0;
}

const AttentionVariant ATTENTION_SDPA = {
    .name = "sdpa",
    .description = "scaled dot-product attention",
    .declare_params = sdpa_declare_params,
    .slot_create = attn_core_slot_create,
    .slot_free = attn_core_slot_free,
    .core_forward = attn_core_forward,
    .core_backward = attn_core_backward,
    .layer_probs = attn_core_layer_probs,
    .fused_form = &ATTENTION_SDPA_FUSED,   // attn_sdpa_fused.c
};
