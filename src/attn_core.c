// attn_core.c: the materialised attention core (attn_core.h) as a sequence of backend ops.
#include "attn_core.h"
#include <math.h>
#include "common.h"

void attn_core_slot_init(AttnCoreSlot *slot, const Backend *be, const ModelShape *s, int n_layers, int B, int rewrites_logits,
                         size_t *elements) {
    size_t maps = (size_t)B * s->n_head * s->seq_len * s->seq_len, NH = (size_t)s->n_head;
    n_layers = attn_layers_kept(s, n_layers);   // one layer's weights under recomputation, rebuilt in backward
    slot->n_layers = n_layers;
    slot->be = be;
    slot->maps = maps;
    slot->probs = be->alloc((size_t)n_layers * maps);
    slot->scores = be->alloc(maps);
    slot->dprobs = be->alloc(maps);
    slot->dscores = be->alloc(maps);
    slot->dlogits = rewrites_logits ? be->alloc(maps) : NULL;
    slot->adr_gram = be->alloc(NH * NH);
    *elements += (size_t)n_layers * maps + (rewrites_logits ? 4 : 3) * maps + NH * NH;
}

void attn_core_slot_release(AttnCoreSlot *slot, const Backend *be) {
    void *all[] = {slot->probs, slot->scores, slot->dprobs, slot->dscores, slot->dlogits, slot->adr_gram};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) if (all[i]) be->free(all[i]);
}

void *attn_core_slot_create(const Backend *be, const ModelShape *s, int n_layers, int B, size_t *elements) {
    AttnCoreSlot *slot = xcalloc(1, sizeof *slot);
    attn_core_slot_init(slot, be, s, n_layers, B, 0, elements);
    return slot;
}

void attn_core_slot_free(const Backend *be, void *slot) {
    attn_core_slot_release(slot, be);
    free(slot);
}

int attn_core_kept_layer(const AttnCoreSlot *slot, int li) { return li % slot->n_layers; }

const void *attn_core_layer_probs(const void *slot_, int li) {
    const AttnCoreSlot *slot = slot_;
    return be_offset(slot->be, slot->probs, (size_t)attn_core_kept_layer(slot, li) * slot->maps);
}

// Sum over the sequences and head pairs h < h' of cos(A_h, A_h'), the attention maps (T,T) of one
// layer flattened. With dprobs, adds weight x the gradient of that sum instead (and returns it):
// d cos(a, b) / da = b / (|a| |b|) - cos a / |a|^2, applied per sequence as dP (+=) W P with the
// (NH,NH) matrix W built from the Gram matrix G = P P^T.
static double head_map_cosines(const AttnCoreSlot *slot, const AttnCall *c, const void *probs, void *dprobs, double weight) {
    const Backend *be = c->layer.be;
    int NH = c->layer.shape->n_head, T = c->layer.T, TT = T * T;
    double G[ATTN_ADR_MAX_HEADS * ATTN_ADR_MAX_HEADS], W[ATTN_ADR_MAX_HEADS * ATTN_ADR_MAX_HEADS], total = 0;
    float Wf[ATTN_ADR_MAX_HEADS * ATTN_ADR_MAX_HEADS];
    if (NH > ATTN_ADR_MAX_HEADS) die(EXIT_FAILURE_OTHER, "internal: diversity regularisation past %d heads (validation missed it)", ATTN_ADR_MAX_HEADS);
    for (int b = 0; b < c->layer.B; b++) {
        const void *P = be_offset(be, (void *)probs, (size_t)b * NH * TT);   // (NH, T*T)
        be->gemm(0, 1, NH, NH, TT, 1.0, P, TT, P, TT, 0, slot->adr_gram, NH);
        be->download_f64(G, slot->adr_gram, (size_t)NH * NH);
        for (int h = 0; h < NH; h++) W[h * NH + h] = 0;
        for (int h = 0; h < NH; h++)
            for (int g = h + 1; g < NH; g++) {
                double nh = sqrt(G[h * NH + h]), ng = sqrt(G[g * NH + g]);
                double cos = nh > 0 && ng > 0 ? G[h * NH + g] / (nh * ng) : 0;
                total += cos;
                if (!dprobs || nh == 0 || ng == 0) continue;
                W[h * NH + g] = W[g * NH + h] = weight / (nh * ng);
                W[h * NH + h] -= weight * cos / (nh * nh);
                W[g * NH + g] -= weight * cos / (ng * ng);
            }
        if (!dprobs) continue;
        for (int i = 0; i < NH * NH; i++) Wf[i] = (float)W[i];
        be->upload(slot->adr_gram, Wf, (size_t)NH * NH);
        be->gemm(0, 0, NH, TT, NH, 1.0, slot->adr_gram, NH, P, TT, 1.0, be_offset(be, dprobs, (size_t)b * NH * TT), TT);
    }
    return total;
}

void attn_core_forward(const AttentionVariant *self, void *slot_, const AttnCall *c, const void *q, const void *k, const void *v,
                       void *y) {
    AttnCoreSlot *slot = slot_;
    const Backend *be = c->layer.be;
    int BH = c->layer.B * c->layer.shape->n_head, T = c->layer.T, hs = c->layer.shape->head_size;
    void *probs = be_offset(be, slot->probs, (size_t)attn_core_kept_layer(slot, c->layer.li) * slot->maps);
    be->attn_scores(slot->scores, q, k, c->scale, BH, T, hs, 0, T);                   // (B,NH,T,T)
    if (self->probs_forward) {
        self->probs_forward(slot, c, slot->scores, probs);                        // (B,NH,T,T), the softmax fused
    } else {
        if (self->logits_forward) self->logits_forward(slot, c, slot->scores, slot->scores);   // the variant's logits, in place
        be->softmax_causal_forward(probs, slot->scores, BH, T, 0, T);             // (B,NH,T,T)
    }
    // y NULL: a rebuild for backward (train.recompute): the weights are all it needs, and the
    // regularisers' sums were added by the forward pass.
    if (!y) return;
    if (c->reg && c->reg->entropy_weight > 0) c->layer.aux[AUX_ENTROPY_REG] += be->attn_entropy_reg_sum(probs, BH, T);
    if (c->reg && c->reg->adr_weight > 0) c->layer.aux[AUX_ADR] += head_map_cosines(slot, c, probs, NULL, 0);
    be->attn_values(y, probs, v, BH, T, hs, 0, T);                               // (B,NH,T,hs)
}

void attn_core_backward(const AttentionVariant *self, void *slot_, const AttnCall *c, const void *q, const void *k, const void *v,
                        const void *dy, void *dq, void *dk, void *dv) {
    AttnCoreSlot *slot = slot_;
    const Backend *be = c->layer.be;
    int BH = c->layer.B * c->layer.shape->n_head, T = c->layer.T, hs = c->layer.shape->head_size;
    size_t nhead = (size_t)BH * T * hs;
    double loss_scale = c->layer.pass->step.loss_scale;
    const void *probs = be_offset(be, slot->probs, (size_t)attn_core_kept_layer(slot, c->layer.li) * slot->maps);
    be->zero(dv, nhead);
    be->attn_values_backward(slot->dprobs, dv, dy, probs, v, BH, T, hs, 0, T);
    // The regularisers' gradients join the loss's at the attention weights.
    if (c->reg && c->reg->entropy_weight > 0)
        be->attn_entropy_reg_backward(slot->dprobs, probs, -(c->reg->entropy_weight * loss_scale), BH, T);
    if (c->reg && c->reg->adr_weight > 0) head_map_cosines(slot, c, probs, slot->dprobs, c->reg->adr_weight * loss_scale);
    if (self->logits_backward) {
        be->softmax_causal_backward(slot->dlogits, slot->dprobs, probs, BH, T, 0, T);
        self->logits_backward(slot, c, slot->dlogits, slot->dscores);
    } else {
        be->softmax_causal_backward(slot->dscores, slot->dprobs, probs, BH, T, 0, T);
    }
    be->zero(dq, nhead);
    be->zero(dk, nhead);
    be->attn_scores_backward(dq, dk, slot->dscores, q, k, c->scale, BH, T, hs, 0, T);
}
