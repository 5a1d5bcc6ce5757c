// attn_head_scale.c: attention with a learned scale per head on the logits, l = s_h scale q k^T
// (s_h initialised to 1). A small variant that shows the interface: one parameter per layer, one
// saved tensor, a rewrite of the logits and its gradient, all through backend ops.
#include "attn_core.h"
#include "common.h"

typedef struct {
    AttnCoreSlot core;
    void *scores;   // (Lc,B,NH,T,T) the scores before the scale, zero above the diagonal
} HeadScaleSlot;

static int head_scale_declare_params(const ModelShape *s, ParamSpec *out) {
    out[0] = (ParamSpec){"blocks.head_scale", 1, {s->n_head, 0}, INIT_ONE, 0, 0, PARAM_STREAM_HEAD_SCALE, 0, {0}};
    return 1;
}

static void *head_scale_slot_create(const Backend *be, const ModelShape *s, int n_layers, int B, size_t *elements) {
    HeadScaleSlot *slot = xcalloc(1, sizeof *slot);
    attn_core_slot_init(&slot->core, be, s, n_layers, B, 1, elements);
    slot->scores = be->alloc((size_t)slot->core.n_layers * slot->core.maps);   // the core's kept layers
    *elements += (size_t)slot->core.n_layers * slot->core.maps;
    return slot;
}

static void head_scale_slot_free(const Backend *be, void *slot_) {
    HeadScaleSlot *slot = slot_;
    attn_core_slot_release(&slot->core, be);
    be->free(slot->scores);
    free(slot);
}

static void head_scale_forward(void *slot_, const AttnCall *c, const void *scores, void *logits) {
    HeadScaleSlot *slot = slot_;
    const Backend *be = c->layer.be;
    int NH = c->layer.shape->n_head, T = c->layer.T, B = c->layer.B;
    size_t TT = (size_t)T * T, per_seq = (size_t)NH * TT;
    void *saved = be_offset(be, slot->scores, (size_t)attn_core_kept_layer(&slot->core, c->layer.li) * slot->core.maps);
    be->causal_lower_copy(saved, scores, B * NH, T, 0, T);             // (B,NH,T,T)
    if (logits != scores) be->copy(logits, scores, (size_t)B * per_seq);
    for (int b = 0; b < B; b++) be->scale_rows(be_offset(be, logits, b * per_seq), c->layer.param[0], NH, TT);   // l = s_h a
}

static void head_scale_backward(void *slot_, const AttnCall *c, const void *dlogits, void *dscores) {
    HeadScaleSlot *slot = slot_;
    const Backend *be = c->layer.be;
    int NH = c->layer.shape->n_head, T = c->layer.T, B = c->layer.B, TT = T * T;
    size_t per_seq = (size_t)NH * TT;
    const void *saved = be_offset(be, slot->scores, (size_t)attn_core_kept_layer(&slot->core, c->layer.li) * slot->core.maps);
    be->copy(dscores, dlogits, (size_t)B * per_seq);
    for (int b = 0; b < B; b++) {
        be->scale_rows(be_offset(be, dscores, b * per_seq), c->layer.param[0], NH, (size_t)TT);   // da = s_h dl
        for (int h = 0; h < NH; h++) {
            // ds_h (+=) sum over the map of dl a: a (1, T T) by (1, T T) product
            size_t off = b * per_seq + (size_t)h * TT;
            be->gemm(0, 1, 1, 1, TT, 1.0, be_offset(be, (void *)dlogits, off), TT, be_offset(be, (void *)saved, off), TT, 1.0,
                     be_offset(be, c->layer.grad[0], (size_t)h), 1);
        }
    }
}

const AttentionVariant ATTENTION_HEAD_SCALE = {
    .name = "head_scale",
    .description = "scaled dot-product attention with a learned logit scale per head",
    .declare_params = head_scale_declare_params,
    .slot_create = head_scale_slot_create,
    .slot_free = head_scale_slot_free,
    .logits_forward = head_scale_forward,
    .logits_backward = head_scale_backward,
    .core_forward = attn_core_forward,
    .core_backward = attn_core_backward,
    .layer_probs = attn_core_layer_probs,
};
