// sga_tiled.c: the tiled form of Spectral Gated Attention (attention.fused = true): the same
// parameters, ops and numbers as sga.c, computed in tiles so that no (B,NH,T,T) tensor is ever held.
//
// Forward, per tile: scores = scale q k^T, the SGA row chain (sga_rows.h), the causal softmax and
// y = weights v, all in tile-sized scratch; nothing of the tile survives it. Backward recomputes
// each tile's chain from q and k (and the layer's parameters) and runs the backward ops on it:
// FLOPs for memory, as train.recompute does for whole layers. The gate MLP's, e_l's and alpha_l's
// gradients, and dk and dv under query blocks, accumulate (+=) tile after tile in a fixed order,
// so a run is deterministic (and differs from the materialised form only in the order of sums).
//
// Rows never interact in SGA (docs/design.md section 3): row i of a (sequence, head) pair depends
// on its q_i and the pair's k only. So a tile is either a run of consecutive whole pairs of the
// (B,NH) order (the batched attention ops take them as their BH dimension; a tile is a pointer
// offset into q, k, v, y), or, when one pair's (T,T) chain would not fit the tile budget
// (T = 2048: 11 squares of 16 MiB) or attention.tile_rows asks for it, a block of Q consecutive
// query rows of one pair: the attention ops take the block's (q0, Q), scores (Q,T) = scale
// q[q0:q0+Q] k^T against all the pair's keys, and each row stays the zero-padded row of design
// length T (the DCT needs all of it).
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
    int tile_pairs;            // (sequence, head) pairs per tile of whole pairs; 1 with query blocks
    int tile_rows;             // query rows per tile: T for whole pairs, fewer for blocks of one pair
    // Tile scratch of rows = tile_pairs x tile_rows rows of length T: nothing in it outlives one tile.
    void *scores;              // (rows,T) scores, then logits; in backward dprobs, then dscores
    void *probs;               // (rows,T) the tile's attention weights
    void *dlogits;             // (rows,T)
    SgaRows rows;              // raw, spec, gate, zp (rows,T); stats (rows,4); U (rows,De+4); hslope, h (rows,Hg)
    SgaScratch w;              // z, y, dspec, dgate (rows,T); dU, dhpre, dstats as above
    SgaTiledRecord *rec;       // (n_layers), local layer li at li % n_layers
    void *layer_probs;         // (B,NH,T,T) NULL until the first layer_probs call
    int probs_li;              // the local layer layer_probs holds, -1: none (stale after any core_forward)
} SgaTiledSlot;

// Elements of tile scratch per query row: 11 rows of length T and the row's gate tensors.
static size_t tile_elements_per_row(const SgaOptions *o, size_t T) {
    return 11 * T + 2 * ((size_t)o->embed + 4) + 4 * (size_t)o->hidden + 8;
}

// The tile shape for BH pairs of T query rows: attention.tile_rows (one pair's block of that many
// rows), else attention.tile_heads whole pairs, else as many whole pairs as fit
// SGA_TILE_BUDGET_BYTES (at most BH), or, when not even one does, one pair's block of as many
// query rows as fit (at least one).
static void tile_shape(const Config *cfg, const SgaOptions *o, size_t elem_size, int T, int BH, int *pairs, int *rows) {
    size_t per_row = tile_elements_per_row(o, (size_t)T) * elem_size, per_pair = per_row * (size_t)T;
    *pairs = 1;
    *rows = T;
    if (cfg->attention_tile_rows > 0) {
        *rows = cfg->attention_tile_rows < T ? cfg->attention_tile_rows : T;
    } else if (cfg->attention_tile_heads > 0) {
        *pairs = cfg->attention_tile_heads < BH ? cfg->attention_tile_heads : BH;
    } else if (per_pair <= SGA_TILE_BUDGET_BYTES) {
        size_t n = SGA_TILE_BUDGET_BYTES / per_pair;
        *pairs = n > (size_t)BH ? BH : (int)n;
    } else {
        size_t n = SGA_TILE_BUDGET_BYTES / per_row;
        *rows = n < 1 ? 1 : (int)n;   // < T here
    }
}

// One tile: nt consecutive pairs from p0, query rows [q0, q0 + Q) of each (whole pairs: 0, T).
typedef struct {
    int p0, nt, q0, Q;
} SgaTile;

// The first tile over BH pairs, and the one after t; nt = 0: no more. Pairs in order, a pair's
// query blocks in order within it: the order of the rows of the materialised form.
static SgaTile first_tile(const SgaTiledSlot *slot, int BH) {
    SgaTile t = {0, slot->tile_pairs < BH ? slot->tile_pairs : BH, 0, slot->tile_rows};
    return t;
}

static SgaTile next_tile(const SgaTiledSlot *slot, SgaTile t, int BH) {
    int T = slot->T;
    if (t.Q < T) {   // a block of one pair's query rows
        t.q0 += t.Q;
        if (t.q0 >= T) { t.p0++; t.q0 = 0; }
        t.Q = T - t.q0 < slot->tile_rows ? T - t.q0 : slot->tile_rows;
        if (t.p0 >= BH) t.nt = 0;
        return t;
    }
    t.p0 += t.nt;
    t.nt = BH - t.p0 < slot->tile_pairs ? BH - t.p0 : slot->tile_pairs;
    return t;
}

// The tile's first pair in (B,NH,T,hs) tensors (q, k, v, y and their gradients); the ops address
// the query rows q0..q0+Q-1 within it.
static size_t tile_offset(const SgaTiledSlot *slot, SgaTile t) { return (size_t)t.p0 * slot->T * slot->hs; }

static void *sga_tiled_slot_create(const Backend *be, const ModelShape *s, int n_layers, int B, size_t *elements) {
    SgaTiledSlot *slot = xcalloc(1, sizeof *slot);
    slot->opt = sga_options(s->cfg);
    slot->be = be;
    slot->n_layers = n_layers;
    slot->NH = s->n_head;
    slot->T = s->seq_len;
    slot->hs = s->head_size;
    slot->B = B;
    tile_shape(s->cfg, &slot->opt, be->elem_size, s->seq_len, B * s->n_head, &slot->tile_pairs, &slot->tile_rows);
    slot->rec = xcalloc((size_t)n_layers, sizeof *slot->rec);
    slot->probs_li = -1;
    size_t T = (size_t)s->seq_len, R = (size_t)slot->tile_pairs * slot->tile_rows, TT = R * T;
    size_t De = (size_t)slot->opt.embed, Hg = (size_t)slot->opt.hidden;
#define ALLOC(field, n) do { slot->field = be->alloc(n); *elements += (n); } while (0)
    ALLOC(scores, TT); ALLOC(probs, TT); ALLOC(dlogits, TT);
    ALLOC(rows.raw, TT); ALLOC(rows.spec, TT); ALLOC(rows.gate, TT); ALLOC(rows.zp, TT);
    ALLOC(rows.stats, R * 4); ALLOC(rows.U, R * (De + 4)); ALLOC(rows.hslope, R * Hg); ALLOC(rows.h, R * Hg);
    ALLOC(w.z, TT); ALLOC(w.y, TT); ALLOC(w.dspec, TT); ALLOC(w.dgate, TT);
    ALLOC(w.dU, R * (De + 4)); ALLOC(w.dhpre, R * Hg); ALLOC(w.dstats, R * 4);
    // The traces' one-layer weights: with the slot when trace.every > 0, so the trainer's counted
    // allocations (memory_estimate.c) include them; else at the first layer_probs (evaluation).
    if (s->cfg->trace_every > 0) ALLOC(layer_probs, (size_t)B * s->n_head * T * T);
#undef ALLOC
    return slot;
}

static void sga_tiled_slot_free(const Backend *be, void *slot_) {
    SgaTiledSlot *slot = slot_;
    void *all[] = {slot->scores, slot->probs, slot->dlogits, slot->rows.raw, slot->rows.spec, slot->rows.gate,
                   slot->rows.zp, slot->rows.stats, slot->rows.U, slot->rows.hslope, slot->rows.h, slot->w.z, slot->w.y,
                   slot->w.dspec, slot->w.dgate, slot->w.dU, slot->w.dhpre, slot->w.dstats, slot->layer_probs};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) if (all[i]) be->free(all[i]);
    free(slot->rec);
    free(slot);
}

// The forward chain of tile t into probs (nt,Q,T): scores, the SGA rows (left in slot->rows for
// backward and the traces) ending in the causal softmax of the blended logits. c supplies the
// backend, T and the parameters.
static void tile_forward(SgaTiledSlot *slot, const LayerCall *c, double scale, const void *q, const void *k, SgaTile t,
                         void *probs) {
    const Backend *be = c->be;
    int T = slot->T, hs = slot->hs;
    size_t off = tile_offset(slot, t);
    const void *qt = be_offset(be, (void *)q, off), *kt = be_offset(be, (void *)k, off);
    be->attn_scores(slot->scores, qt, kt, scale, t.nt, T, hs, t.q0, t.Q);                                    // (nt,Q,T)
    sga_rows_forward(&slot->opt, c, t.nt, t.q0, t.Q, &slot->rows, &slot->w, slot->scores, probs, 0);   // (nt,Q,T)
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
    for (SgaTile t = first_tile(slot, BH); t.nt; t = next_tile(slot, t, BH)) {
        size_t off = tile_offset(slot, t);
        tile_forward(slot, &c->layer, c->scale, q, k, t, slot->probs);
        // rows q0..q0+Q-1 of the tile's (nt,T,hs)
        be->attn_values(be_offset(be, y, off), slot->probs, be_offset(be, (void *)v, off), t.nt, T, hs, t.q0, t.Q);
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
    for (SgaTile t = first_tile(slot, BH); t.nt; t = next_tile(slot, t, BH)) {
        size_t off = tile_offset(slot, t);
        const void *qt = be_offset(be, (void *)q, off), *kt = be_offset(be, (void *)k, off), *vt = be_offset(be, (void *)v, off);
        tile_forward(slot, &c->layer, c->scale, q, k, t, slot->probs);   // the tile again, as in forward
        // scores' buffer: dprobs (nt,Q,T), then dscores (nt,Q,T); dk and dv (+=) over a pair's blocks
        be->attn_values_backward(slot->scores, be_offset(be, dv, off), be_offset(be, (void *)dy, off), slot->probs, vt, t.nt, T,
                                 hs, t.q0, t.Q);
        be->softmax_causal_backward(slot->dlogits, slot->scores, slot->probs, t.nt, T, t.q0, t.Q);   // (nt,Q,T)
        sga_rows_backward(&slot->opt, &c->layer, t.nt, t.q0, t.Q, &slot->rows, &slot->w, slot->dlogits, slot->scores);
        be->attn_scores_backward(be_offset(be, dq, off), be_offset(be, dk, off), slot->scores, qt, kt, c->scale, t.nt, T, hs,
                                 t.q0, t.Q);
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
    for (SgaTile t = first_tile(slot, BH); t.nt; t = next_tile(slot, t, BH))
        tile_forward(slot, &c, r->scale, r->q, r->k, t, be_offset(be, slot->layer_probs, ((size_t)t.p0 * T + t.q0) * T));
    slot->probs_li = li;
    return slot->layer_probs;
}

void sga_tiled_trace_layer(const void *slot_, const LayerCall *c, double *alpha_out, double stats_out[4], double band_out[4]) {
    SgaTiledSlot *slot = (SgaTiledSlot *)slot_;
    const Backend *be = c->be;
    const SgaTiledRecord *r = record_of(slot, c->li);
    int T = slot->T, BH = r->B * slot->NH;
    size_t R = (size_t)BH * T, tile_rows = (size_t)slot->tile_pairs * slot->tile_rows;
    *alpha_out = sga_trace_alpha(&slot->opt, c);
    LayerCall rc = record_call(slot, r);
    double *stats = xmalloc(sizeof(double) * tile_rows * 4), *gate = xmalloc(sizeof(double) * tile_rows * T);
    double band[4] = {0}, count[4] = {0};
    for (int s = 0; s < 4; s++) stats_out[s] = 0;
    // The rows in the materialised form's order (pairs in order, rows within), so the sums agree.
    for (SgaTile t = first_tile(slot, BH); t.nt; t = next_tile(slot, t, BH)) {
        size_t rows = (size_t)t.nt * t.Q;
        tile_forward(slot, &rc, r->scale, r->q, r->k, t, slot->probs);
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
    int pairs, rows;
    tile_shape(s->cfg, &o, sizeof(float), s->seq_len, B * s->n_head, &pairs, &rows);
    return 3 * (double)pairs * rows * s->seq_len * 4;
}

const AttentionVariant ATTENTION_SGA_TILED = {
    .name = "sga",
    .description = "spectral gated attention, tiled over (sequence, head) pairs or query rows, recomputed in backward (attention.fused)",
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
