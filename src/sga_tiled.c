// sga_tiled.c: the tiled form of Spectral Gated Attention (attention.fused = true): the same
// parameters, ops and numbers as sga.c, computed in tiles of (sequence, head) pairs so that no
// (B,NH,T,T) tensor is ever held.
//
// Forward, per tile of nt pairs: scores = scale q k^T, the SGA row chain (sga_rows.h), the causal
// softmax and y = weights v, all in tile-sized scratch; nothing of the tile survives it. Backward
// recomputes each tile's chain from q and k (and the layer's parameters) and runs the backward ops
// on it: FLOPs for memory, as train.recompute does for whole layers. The gate MLP's, e_l's and
// alpha_l's gradients accumulate (+=) tile after tile in a fixed order, so a run is deterministic
// (and differs from the materialised form only in the order of those sums).
//
// Rows never interact in SGA (docs/design.md section 3) and a (sequence, head) pair's rows depend
// on its own q, k, v only, so a tile is any run of consecutive pairs of the (B,NH) order: the ops
// take the pairs as their leading BH dimension, and a tile is a pointer offset into q, k, v, y.
// Tiles do not split a head's query rows: attn_scores and softmax work on whole (T,T) squares.
//
// Per layer the slot keeps only a record of the last core_forward call (q, k, the parameters, the
// scale), no tensor. The traces and head pruning read the attention weights and the SGA rows:
// layer_probs recomputes one layer's weights tile by tile into a (B,NH,T,T) buffer allocated with
// the slot when trace.every > 0 (so the counted allocations include it), else on its first call
// (head-entropy evaluation); kept until the slot is freed. sga_trace_layer recomputes the rows
// tile by tile and sums them on the host.
#include "sga.h"
#include <math.h>
#include "common.h"
#include "sga_rows.h"

// Automatic tile size (attention.tile_heads = 0): as many pairs as fit this much tile scratch.
#define SGA_TILE_BUDGET_BYTES ((size_t)64 << 20)

// The inputs of local layer li's last core_forward call: what layer_probs and the traces
// recompute the layer from (the model keeps q and k alive until the layer's backward, or rebuilds
// them before asking; the parameters do not change before then).
typedef struct {
    const void *q, *k;                  // (B,NH,T,hs)
    void *param[MODULE_MAX_PARAMS];     // the layer's SGA parameters (sga.h's order)
    double scale;
    int B;
    int valid;
} SgaTiledRecord;

typedef struct {
    SgaOptions opt;
    const Backend *be;
    int n_layers, NH, T, hs, B;
    int tile;                  // (sequence, head) pairs per tile
    // Tile scratch: nothing in it outlives one tile.
    void *scores;              // (tile,T,T) scores, then logits; in backward dprobs, then dscores
    void *probs;               // (tile,T,T) the tile's attention weights
    void *dlogits;             // (tile,T,T)
    SgaRows rows;              // raw, spec, gate, zp (tile,T,T); stats (tile T,4); U (tile T,De+4); hpre, h (tile T,Hg)
    SgaScratch w;              // z, y, dspec, dgate (tile,T,T); dU, dh, dhpre, dstats as above
    SgaTiledRecord *rec;       // (n_layers), local layer li at li % n_layers
    void *layer_probs;         // (B,NH,T,T) NULL until the first layer_probs call
    int probs_li;              // the local layer layer_probs holds, -1: none (stale after any core_forward)
} SgaTiledSlot;

// Elements of tile scratch per (sequence, head) pair: 11 (T,T) squares and the rows' gate tensors.
static size_t tile_elements_per_pair(const SgaOptions *o, size_t T) {
    return T * (11 * T + 2 * ((size_t)o->embed + 4) + 4 * (size_t)o->hidden + 8);
}

// Pairs per tile for BH pairs: attention.tile_heads, or as many as fit SGA_TILE_BUDGET_BYTES
// (at least one, whatever one costs), at most BH.
static int tile_pairs(const Config *cfg, const SgaOptions *o, size_t elem_size, int T, int BH) {
    size_t per_pair = tile_elements_per_pair(o, (size_t)T) * elem_size;
    size_t n = cfg->attention_tile_heads > 0 ? (size_t)cfg->attention_tile_heads : SGA_TILE_BUDGET_BYTES / per_pair;
    if (n < 1) n = 1;
    return n > (size_t)BH ? BH : (int)n;
}

static void *sga_tiled_slot_create(const Backend *be, const ModelShape *s, int n_layers, int B, size_t *elements) {
    SgaTiledSlot *slot = xcalloc(1, sizeof *slot);
    slot->opt = sga_options(s->cfg);
    slot->be = be;
    slot->n_layers = n_layers;
    slot->NH = s->n_head;
    slot->T = s->seq_len;
    slot->hs = s->head_size;
    slot->B = B;
    slot->tile = tile_pairs(s->cfg, &slot->opt, be->elem_size, s->seq_len, B * s->n_head);
    slot->rec = xcalloc((size_t)n_layers, sizeof *slot->rec);
    slot->probs_li = -1;
    size_t T = (size_t)s->seq_len, R = (size_t)slot->tile * T, TT = R * T;
    size_t De = (size_t)slot->opt.embed, Hg = (size_t)slot->opt.hidden;
#define ALLOC(field, n) do { slot->field = be->alloc(n); *elements += (n); } while (0)
    ALLOC(scores, TT); ALLOC(probs, TT); ALLOC(dlogits, TT);
    ALLOC(rows.raw, TT); ALLOC(rows.spec, TT); ALLOC(rows.gate, TT); ALLOC(rows.zp, TT);
    ALLOC(rows.stats, R * 4); ALLOC(rows.U, R * (De + 4)); ALLOC(rows.hpre, R * Hg); ALLOC(rows.h, R * Hg);
    ALLOC(w.z, TT); ALLOC(w.y, TT); ALLOC(w.dspec, TT); ALLOC(w.dgate, TT);
    ALLOC(w.dU, R * (De + 4)); ALLOC(w.dh, R * Hg); ALLOC(w.dhpre, R * Hg); ALLOC(w.dstats, R * 4);
    // The traces' one-layer weights: with the slot when trace.every > 0, so the trainer's counted
    // allocations (memory_estimate.c) include them; else at the first layer_probs (evaluation).
    if (s->cfg->trace_every > 0) ALLOC(layer_probs, (size_t)B * s->n_head * T * T);
#undef ALLOC
    return slot;
}

static void sga_tiled_slot_free(const Backend *be, void *slot_) {
    SgaTiledSlot *slot = slot_;
    void *all[] = {slot->scores, slot->probs, slot->dlogits, slot->rows.raw, slot->rows.spec, slot->rows.gate,
                   slot->rows.zp, slot->rows.stats, slot->rows.U, slot->rows.hpre, slot->rows.h, slot->w.z, slot->w.y,
                   slot->w.dspec, slot->w.dgate, slot->w.dU, slot->w.dh, slot->w.dhpre, slot->w.dstats, slot->layer_probs};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) if (all[i]) be->free(all[i]);
    free(slot->rec);
    free(slot);
}

// The forward chain of pairs [p0, p0 + nt) into probs (nt,T,T): scores, the SGA rows (left in
// slot->rows for backward and the traces), logits, causal softmax. c supplies the backend, T and
// the parameters.
static void tile_forward(SgaTiledSlot *slot, const LayerCall *c, double scale, const void *q, const void *k, int p0, int nt,
                         void *probs) {
    const Backend *be = c->be;
    int T = slot->T, hs = slot->hs;
    size_t off = (size_t)p0 * T * hs;
    be->attn_scores(slot->scores, be_offset(be, (void *)q, off), be_offset(be, (void *)k, off), scale, nt, T, hs);   // (nt,T,T)
    sga_rows_forward(&slot->opt, c, nt, &slot->rows, &slot->w, slot->scores, slot->scores, 0);   // logits, in place
    be->softmax_causal_forward(probs, slot->scores, nt, T, 0, T);                             // (nt,T,T)
}

static SgaTiledRecord *record_of(const SgaTiledSlot *slot, int li) {
    SgaTiledRecord *r = &slot->rec[li % slot->n_layers];
    if (!r->valid) die(EXIT_FAILURE_OTHER, "internal: tiled SGA asked for local layer %d before its forward pass", li);
    return r;
}

static void sga_tiled_forward(const AttentionVariant *self, void *slot_, const AttnCall *c, const void *q, const void *k,
                              const void *v, void *y) {
    (void)self;
    SgaTiledSlot *slot = slot_;
    const Backend *be = c->layer.be;
    // Validation refuses the regularisers with attention.fused: they need the whole weights.
    if (c->reg) die(EXIT_FAILURE_OTHER, "internal: attention regularisers with the tiled SGA (validation missed it)");
    SgaTiledRecord *r = &slot->rec[c->layer.li % slot->n_layers];
    r->q = q;
    r->k = k;
    // The declared parameters only (sga_declare_params: the gate's five slots, then alpha_l with the blend).
    for (int i = 0; i < SGA_ALPHA; i++) r->param[i] = c->layer.param[i];
    r->param[SGA_ALPHA] = slot->opt.blend ? c->layer.param[SGA_ALPHA] : NULL;
    r->scale = c->scale;
    r->B = c->layer.B;
    r->valid = 1;
    slot->probs_li = -1;
    // y NULL: a rebuild for backward (train.recompute). Backward recomputes every tile from q and
    // k anyway, so there is nothing to rebuild.
    if (!y) return;
    int T = slot->T, hs = slot->hs, BH = c->layer.B * slot->NH;
    for (int p0 = 0; p0 < BH; p0 += slot->tile) {
        int nt = BH - p0 < slot->tile ? BH - p0 : slot->tile;
        size_t off = (size_t)p0 * T * hs;
        tile_forward(slot, &c->layer, c->scale, q, k, p0, nt, slot->probs);
        be->attn_values(be_offset(be, y, off), slot->probs, be_offset(be, (void *)v, off), nt, T, hs);   // (nt,T,hs)
    }
}

static void sga_tiled_backward(const AttentionVariant *self, void *slot_, const AttnCall *c, const void *q, const void *k,
                               const void *v, const void *dy, void *dq, void *dk, void *dv) {
    (void)self;
    SgaTiledSlot *slot = slot_;
    const Backend *be = c->layer.be;
    int T = slot->T, hs = slot->hs, BH = c->layer.B * slot->NH;
    size_t nhead = (size_t)BH * T * hs;
    be->zero(dq, nhead);
    be->zero(dk, nhead);
    be->zero(dv, nhead);
    for (int p0 = 0; p0 < BH; p0 += slot->tile) {
        int nt = BH - p0 < slot->tile ? BH - p0 : slot->tile;
        size_t off = (size_t)p0 * T * hs;
        const void *qt = be_offset(be, (void *)q, off), *kt = be_offset(be, (void *)k, off);
        tile_forward(slot, &c->layer, c->scale, q, k, p0, nt, slot->probs);   // the tile again, as in forward
        // scores' buffer: dprobs (nt,T,T), then dscores (nt,T,T)
        be->attn_values_backward(slot->scores, be_offset(be, dv, off), be_offset(be, (void *)dy, off), slot->probs,
                                 be_offset(be, (void *)v, off), nt, T, hs);
        be->softmax_causal_backward(slot->dlogits, slot->scores, slot->probs, nt, T, 0, T);    // (nt,T,T)
        sga_rows_backward(&slot->opt, &c->layer, nt, &slot->rows, &slot->w, slot->dlogits, slot->scores);
        be->attn_scores_backward(be_offset(be, dq, off), be_offset(be, dk, off), slot->scores, qt, kt, c->scale, nt, T, hs);
    }
}

// The recorded call of local layer li as a LayerCall for the chain (backend, T, parameters).
static LayerCall record_call(const SgaTiledSlot *slot, const SgaTiledRecord *r) {
    LayerCall c = {.be = slot->be, .B = r->B, .T = slot->T, .param = r->param};
    return c;
}

// The weights of local layer li, recomputed tile by tile from its record into the lazily
// allocated buffer (a cache: the slot is const to the caller, the buffer is not).
static const void *sga_tiled_layer_probs(const void *slot_, int li) {
    SgaTiledSlot *slot = (SgaTiledSlot *)slot_;
    const Backend *be = slot->be;
    const SgaTiledRecord *r = record_of(slot, li);
    if (slot->probs_li == li) return slot->layer_probs;
    int T = slot->T, BH = r->B * slot->NH;
    if (!slot->layer_probs) slot->layer_probs = be->alloc((size_t)slot->B * slot->NH * T * T);   // (B,NH,T,T)
    LayerCall c = record_call(slot, r);
    for (int p0 = 0; p0 < BH; p0 += slot->tile) {
        int nt = BH - p0 < slot->tile ? BH - p0 : slot->tile;
        tile_forward(slot, &c, r->scale, r->q, r->k, p0, nt, be_offset(be, slot->layer_probs, (size_t)p0 * T * T));
    }
    slot->probs_li = li;
    return slot->layer_probs;
}

void sga_tiled_trace_layer(const void *slot_, const LayerCall *c, double *alpha_out, double stats_out[4], double band_out[4]) {
    SgaTiledSlot *slot = (SgaTiledSlot *)slot_;
    const Backend *be = c->be;
    const SgaTiledRecord *r = record_of(slot, c->li);
    int T = slot->T, BH = r->B * slot->NH;
    size_t R = (size_t)BH * T, tile_rows = (size_t)slot->tile * T;
    *alpha_out = sga_trace_alpha(&slot->opt, c);
    LayerCall rc = record_call(slot, r);
    double *stats = xmalloc(sizeof(double) * tile_rows * 4), *gate = xmalloc(sizeof(double) * tile_rows * T);
    double band[4] = {0}, count[4] = {0};
    for (int s = 0; s < 4; s++) stats_out[s] = 0;
    // The rows in the materialised form's order (pairs in order, rows within), so the sums agree.
    for (int p0 = 0; p0 < BH; p0 += slot->tile) {
        int nt = BH - p0 < slot->tile ? BH - p0 : slot->tile;
        size_t rows = (size_t)nt * T;
        tile_forward(slot, &rc, r->scale, r->q, r->k, p0, nt, slot->probs);
        be->download_f64(stats, slot->rows.stats, rows * 4);
        be->download_f64(gate, slot->rows.gate, rows * T);
        sga_trace_rows(stats, gate, rows, T, R, stats_out, band, count);
    }
    for (int b = 0; b < 4; b++) band_out[b] = count[b] > 0 ? band[b] / count[b] : NAN;
    free(stats); free(gate);
}

// cuFFT's DCT scratch (sga.c's rule, 3 R T fp32) for the rows of one tile, not of the whole layer.
static double sga_tiled_gpu_workspace_bytes(const ModelShape *s, int B) {
    SgaOptions o = sga_options(s->cfg);
    double R = (double)tile_pairs(s->cfg, &o, sizeof(float), s->seq_len, B * s->n_head) * s->seq_len;
    return 3 * R * s->seq_len * 4;
}

const AttentionVariant ATTENTION_SGA_TILED = {
    .name = "sga",
    .description = "spectral gated attention, tiled over (sequence, head) pairs and recomputed in backward (attention.fused)",
    .declare_params = sga_declare_params,
    .slot_create = sga_tiled_slot_create,
    .slot_free = sga_tiled_slot_free,
    .core_forward = sga_tiled_forward,
    .core_backward = sga_tiled_backward,
    .layer_probs = sga_tiled_layer_probs,
    // Model FLOPs, as for the materialised form (the recomputation is not counted, as MFU goes).
    .extra_flops_per_token = sga_extra_flops_per_token,
    .gpu_workspace_bytes = sga_tiled_gpu_workspace_bytes,
};
