// attn_sdpa_fused.c: SDPA's fused form (attention.fused = true): the same attention, computed by
// the attn_fused_forward/attn_fused_backward ops without any (B,NH,T,T) tensor. Per layer the
// slot keeps each row's log-sum-exp (what backward needs to recompute the weights) and entropy
// (what the traces and head pruning read); the name and the (absent) parameters are SDPA's, so a
// checkpoint written by either form loads into the other.
//
// What backward reads besides the slot: q, k, v (the model passes them), and y, the core's output,
// which the model keeps (atty) but does not pass back. The slot remembers, per local layer, where
// the last core_forward of that layer read q and k and wrote y: the model's per-layer tensors
// under train.recompute = none and attention, the block's shared ones under "block" (whose rebuild
// calls core_forward again with them). A rebuild under "attention" (y NULL) recomputes y too, into
// the slot's own scratch, because the op computes it anyway and this keeps backward independent
// of what the caller did to atty since (head pruning masks it in place: evaluation only).
//
// The trace maps (map_stats, snapshots) need the weights: layer_probs materialises one layer's
// (B,NH,T,T) from the remembered q and k (attn_scores, then the causal softmax in place) into a
// buffer kept until the slot is freed: allocated with the slot when trace.every > 0, so that the
// trainer's counted allocations (memory_estimate.c) include it, else at the first call (evaluation).
#include "attention_variant.h"
#include <stdlib.h>
#include "backend.h"
#include "common.h"
#include "layer_call.h"

typedef struct {
    const Backend *be;
    int n_layers;            // layers whose lse and ent are kept: the stage's, or 1 under recomputation
    int max_local;           // entries of the per-layer records below: the model's layer count
    int B, NH, T, hs;
    size_t rows;             // B NH T: elements of one layer's lse or ent
    void *lse, *ent;         // (n_layers, B, NH, T) row log-sum-exp and softmax entropy
    void *y_rebuilt;         // (B,NH,T,hs) scratch: y of a rebuild (core_forward with y NULL)
    // What the last core_forward of local layer li read and wrote (device pointers), and its scale.
    const void **q, **k, **y;   // (max_local) each
    double *scale;              // (max_local)
    void *probs;             // (B,NH,T,T) the trace maps; NULL until needed (see above)
} FusedSlot;

static int sdpa_fused_declare_params(const ModelShape *s, ParamSpec *out) {
    (void)s; (void)out;
    return 0;   // SDPA's: none
}

static void *sdpa_fused_slot_create(const Backend *be, const ModelShape *s, int n_layers, int B, size_t *elements) {
    FusedSlot *slot = xcalloc(1, sizeof *slot);
    slot->be = be;
    slot->n_layers = n_layers = attn_layers_kept(s, n_layers);
    slot->max_local = s->n_layer;
    slot->B = B;
    slot->NH = s->n_head;
    slot->T = s->seq_len;
    slot->hs = s->head_size;
    slot->rows = (size_t)B * s->n_head * s->seq_len;
    slot->lse = be->alloc((size_t)n_layers * slot->rows);
    slot->ent = be->alloc((size_t)n_layers * slot->rows);
    slot->y_rebuilt = be->alloc(slot->rows * s->head_size);
    slot->q = xcalloc((size_t)s->n_layer, sizeof *slot->q);
    slot->k = xcalloc((size_t)s->n_layer, sizeof *slot->k);
    slot->y = xcalloc((size_t)s->n_layer, sizeof *slot->y);
    slot->scale = xcalloc((size_t)s->n_layer, sizeof *slot->scale);
    *elements += 2 * (size_t)n_layers * slot->rows + slot->rows * s->head_size;
    if (s->cfg->trace_every > 0) {
        slot->probs = be->alloc(slot->rows * s->seq_len);
        *elements += slot->rows * s->seq_len;
    }
    return slot;
}

static void sdpa_fused_slot_free(const Backend *be, void *slot_) {
    FusedSlot *slot = slot_;
    be->free(slot->lse);
    be->free(slot->ent);
    be->free(slot->y_rebuilt);
    if (slot->probs) be->free(slot->probs);
    free(slot->q); free(slot->k); free(slot->y); free(slot->scale);
    free(slot);
}

// Local layer li's lse or ent (B,NH,T): at li % n_layers, as every variant's kept tensors.
static void *kept(const FusedSlot *slot, void *base, int li) {
    return be_offset(slot->be, base, (size_t)(li % slot->n_layers) * slot->rows);
}

static void check_layer(const FusedSlot *slot, int li) {
    if (li < 0 || li >= slot->max_local) die(EXIT_FAILURE_OTHER, "internal: fused attention: local layer %d of %d", li, slot->max_local);
}

static void sdpa_fused_forward(const AttentionVariant *self, void *slot_, const AttnCall *c, const void *q, const void *k,
                               const void *v, void *y) {
    (void)self;
    FusedSlot *slot = slot_;
    const Backend *be = c->layer.be;
    int li = c->layer.li, BH = c->layer.B * c->layer.shape->n_head, T = c->layer.T, hs = c->layer.shape->head_size;
    check_layer(slot, li);
    // validate.c refuses the regularisers with attention.fused: they need the weights.
    if (c->reg && (c->reg->entropy_weight > 0 || c->reg->adr_weight > 0))
        die(EXIT_FAILURE_OTHER, "internal: attention regularisers with the fused form (validation missed it)");
    // y NULL: a rebuild for backward (train.recompute = attention); y goes to the slot's scratch.
    void *out = y ? y : slot->y_rebuilt;                                               // (B,NH,T,hs)
    be->attn_fused_forward(out, kept(slot, slot->lse, li), kept(slot, slot->ent, li), q, k, v, c->scale, BH, T, hs);
    slot->q[li] = q;
    slot->k[li] = k;
    slot->y[li] = out;
    slot->scale[li] = c->scale;
}

static void sdpa_fused_backward(const AttentionVariant *self, void *slot_, const AttnCall *c, const void *q, const void *k,
                                const void *v, const void *dy, void *dq, void *dk, void *dv) {
    (void)self;
    FusedSlot *slot = slot_;
    const Backend *be = c->layer.be;
    int li = c->layer.li, BH = c->layer.B * c->layer.shape->n_head, T = c->layer.T, hs = c->layer.shape->head_size;
    check_layer(slot, li);
    if (!slot->y[li]) die(EXIT_FAILURE_OTHER, "internal: fused attention: backward of layer %d before its forward", li);
    // dq, dk, dv (=) (B,NH,T,hs), like the materialised core's
    be->attn_fused_backward(dq, dk, dv, dy, q, k, v, slot->y[li], kept(slot, slot->lse, li), c->scale, BH, T, hs);
}

// The weights (B,NH,T,T) of local layer li, materialised for the trace maps from the q and k its
// last core_forward read (the model rebuilds that layer first under train.recompute).
static const void *sdpa_fused_layer_probs(const void *slot_, int li) {
    FusedSlot *slot = (FusedSlot *)slot_;   // the map buffer is ours to (lazily) allocate
    const Backend *be = slot->be;
    check_layer(slot, li);
    if (!slot->q[li]) die(EXIT_FAILURE_OTHER, "internal: fused attention: weights of layer %d before its forward", li);
    int BH = slot->B * slot->NH;
    if (!slot->probs) slot->probs = be->alloc((size_t)BH * slot->T * slot->T);
    be->attn_scores(slot->probs, slot->q[li], slot->k[li], slot->scale[li], BH, slot->T, slot->hs, 0, slot->T);   // (B,NH,T,T)
    be->softmax_causal_forward(slot->probs, slot->probs, BH, slot->T, 0, slot->T);                  // in place
    return slot->probs;
}

static const void *sdpa_fused_layer_row_entropy(const void *slot_, int li) {
    const FusedSlot *slot = slot_;
    check_layer(slot, li);
    return kept(slot, slot->ent, li);   // (B,NH,T)
}

const AttentionVariant ATTENTION_SDPA_FUSED = {
    .name = "sdpa",
    .description = "scaled dot-product attention, fused (no (B, heads, T, T) tensor)",
    .declare_params = sdpa_fused_declare_params,
    .slot_create = sdpa_fused_slot_create,
    .slot_free = sdpa_fused_slot_free,
    .core_forward = sdpa_fused_forward,
    .core_backward = sdpa_fused_backward,
    .layer_probs = sdpa_fused_layer_probs,
    .layer_row_entropy = sdpa_fused_layer_row_entropy,
};
