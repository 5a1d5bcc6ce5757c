// sga.c: the sequence of backend ops of Spectral Gated Attention for one layer (sga.h).
#include "sga.h"
#include <math.h>
#include "sga_rows.h"
#include "attn_core.h"
#include "common.h"

SgaOptions sga_options(const Config *cfg) {
    SgaOptions o = {cfg->sga_spectral, cfg->sga_fixed_filter, cfg->sga_blend, cfg->sga_gate_hidden, cfg->sga_embed_dim,
                    cfg->sga_alpha_init};
    return o;
}

// One micro-batch slot: the materialised core, then per layer (R = B NH T rows of length T)
// what backward needs, and slice-sized scratch. Lc layers of each: the stage's, or one under
// train.recompute (the core's kept layers), except the per-row tensors of the gate's input side
// and hidden layer (Lg layers): under "attention" they are kept for every layer, like the softmax's
// row statistics in a fused attention, and the rebuild before backward skips the spectral
// statistics (two logs per coefficient), the gate's first product and its GELU (read back from
// memory, the GELU cost the rebuild twice its share of the forward pass). They cost R (4 + 2 Hg) per
// layer (2.3 GiB over the 780M job's 48 layers at micro-batch 16), where one more kept row tensor of
// length T would cost 9 GiB.
typedef struct {
    AttnCoreSlot core;
    SgaOptions opt;
    int B, NH, T;
    int gate_layers;             // Lg: the stage's layers under recompute "attention", else Lc
    int gate_inputs_kept;        // Lg is the stage's layers: a rebuild reuses stats, hslope and h
    void *raw;                   // (Lc,R,T) the raw logits a of the causal triangle, zero above it
    void *spec;                  // (Lc,R,T) s, the spectrum of the zero-padded row
    void *stats;                 // (Lg,R,4)
    void *U;                     // (Lc,R,De+4) gate input [e_l; stats], rebuilt from stats
    void *hslope;                // (Lg,R,Hg) GELU's slope at the gate's hidden pre-activation
    void *h;                     // (Lg,R,Hg) after GELU
    void *gate;                  // (Lc,R,T) g
    void *zp;                    // (Lc,R,T) z' = IDCT(g s)
    // U, hslope, h and the scratch dgate, dU, dhpre, dstats are the gate MLP's: NULL with sga.fixed_filter.
    void *z, *y, *dspec, *dgate; // (R,T) scratch
    void *dU;                    // (R,De+4)
    void *dhpre;                 // (R,Hg)
    void *dstats;                // (R,4)
} SgaSlot;

int sga_declare_params(const ModelShape *s, ParamSpec *out) {
    SgaOptions o = sga_options(s->cfg);
    long T = s->seq_len, De = o.embed, Hg = o.hidden;
    int n = 0;
    if (!o.fixed_filter) {
        out[n++] = (ParamSpec){"blocks.sga_e", 1, {De, 0}, INIT_NORMAL, s->init_std, 0, PARAM_STREAM_SGA_E, 0, {0}};
        out[n++] = (ParamSpec){"blocks.sga_w1", 2, {Hg, De + 4}, INIT_NORMAL, s->init_std, 1, PARAM_STREAM_SGA_W1, 0, {0}};
        out[n++] = (ParamSpec){"blocks.sga_b1", 1, {Hg, 0}, INIT_ZERO, 0, 0, PARAM_STREAM_SGA_B1, 0, {0}};
        out[n++] = (ParamSpec){"blocks.sga_w2", 2, {T, Hg}, INIT_NORMAL, s->init_std, 1, PARAM_STREAM_SGA_W2, 0, {0}};
        out[n++] = (ParamSpec){"blocks.sga_b2", 1, {T, 0}, INIT_ZERO, 0, 0, PARAM_STREAM_SGA_B2, 0, {0}};
    } else {
        n = SGA_ALPHA;   // the gate's slots stay empty (NULL tensors)
        for (int i = 0; i < n; i++) out[i] = (ParamSpec){0};
    }
    if (o.blend) out[n++] = (ParamSpec){"blocks.sga_alpha", 1, {1, 0}, INIT_CONSTANT, (double)(float)o.alpha_init, 0,
                                        PARAM_STREAM_SGA_ALPHA, 0, {0}};
    return n;
}

static void *sga_slot_create(const Backend *be, const ModelShape *s, int n_layers, int B, size_t *elements) {
    SgaSlot *slot = xcalloc(1, sizeof *slot);
    attn_core_slot_init(&slot->core, be, s, n_layers, B, 1, elements);
    slot->opt = sga_options(s->cfg);
    slot->B = B;
    slot->NH = s->n_head;
    slot->T = s->seq_len;
    slot->gate_inputs_kept = s->cfg->recompute == RECOMPUTE_ATTENTION;
    slot->gate_layers = slot->gate_inputs_kept ? n_layers : slot->core.n_layers;
    size_t Lc = (size_t)slot->core.n_layers, Lg = (size_t)slot->gate_layers;
    size_t R = (size_t)B * s->n_head * s->seq_len, T = (size_t)s->seq_len;
    size_t De = (size_t)slot->opt.embed, Hg = (size_t)slot->opt.hidden;
#define ALLOC(field, n) do { slot->field = be->alloc(n); *elements += (n); } while (0)
    ALLOC(raw, Lc * R * T); ALLOC(spec, Lc * R * T); ALLOC(stats, Lg * R * 4);
    ALLOC(gate, Lc * R * T); ALLOC(zp, Lc * R * T);
    ALLOC(z, R * T); ALLOC(y, R * T); ALLOC(dspec, R * T);
    if (!slot->opt.fixed_filter) {   // the gate MLP's tensors (the fixed-filter ablation has none: NULL)
        ALLOC(U, Lc * R * (De + 4)); ALLOC(hslope, Lg * R * Hg); ALLOC(h, Lg * R * Hg);
        ALLOC(dgate, R * T); ALLOC(dU, R * (De + 4)); ALLOC(dhpre, R * Hg); ALLOC(dstats, R * 4);
    }
#undef ALLOC
    return slot;
}

static void sga_slot_free(const Backend *be, void *slot_) {
    SgaSlot *slot = slot_;
    attn_core_slot_release(&slot->core, be);
    void *all[] = {slot->raw, slot->spec, slot->stats, slot->U, slot->hslope, slot->h, slot->gate, slot->zp, slot->z, slot->y,
                   slot->dspec, slot->dgate, slot->dU, slot->dhpre, slot->dstats};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) if (all[i]) be->free(all[i]);
    free(slot);
}

// base + off elements, NULL for a tensor the options leave out.
static void *offset_or_null(const Backend *be, void *base, size_t off) { return base ? be_offset(be, base, off) : NULL; }

// The saved tensors of local layer li, from row `row0` on (rows are (B*NH*T) in head-major order).
static SgaRows sga_layer(const SgaSlot *slot, const Backend *be, int li, size_t row0) {
    size_t T = (size_t)slot->T, R = (size_t)slot->B * slot->NH * T;
    size_t De = (size_t)slot->opt.embed, Hg = (size_t)slot->opt.hidden;
    size_t r = (size_t)attn_core_kept_layer(&slot->core, li) * R + row0;   // Lc tensors
    size_t rg = (size_t)(li % slot->gate_layers) * R + row0;                 // Lg tensors
    SgaRows l = {
        .raw = be_offset(be, slot->raw, r * T),
        .spec = be_offset(be, slot->spec, r * T),
        .stats = be_offset(be, slot->stats, rg * 4),
        .U = offset_or_null(be, slot->U, r * (De + 4)),
        .hslope = offset_or_null(be, slot->hslope, rg * Hg),
        .h = offset_or_null(be, slot->h, rg * Hg),
        .gate = be_offset(be, slot->gate, r * T),
        .zp = be_offset(be, slot->zp, r * T),
    };
    return l;
}

// Rows never interact in SGA (docs/design.md section 3: no statistic is pooled over rows), so the chain of
// ops may run over slices of whole heads. On the CPU every (R,T) tensor of a 6-layer T=512 model is
// tens of MB and each op streamed it from DRAM; slices of backend->working_set_bytes per tensor stay
// in cache from one op to the next. Backends that want whole layers (GPUs) set it to 0.
static int heads_per_slice(const Backend *be, int BH, int T) {
    if (be->working_set_bytes == 0) return BH;
    size_t head_bytes = (size_t)T * T * be->elem_size;
    size_t heads = be->working_set_bytes / head_bytes;
    return heads < 1 ? 1 : (heads > (size_t)BH ? BH : (int)heads);
}

// The chain over query rows [q0, q0 + Q) of nh heads (sga_rows.h). Forward: the causal row of a
// (nh,Q,T), zero-padded, into l->raw (the blend reads only the triangle, so the padded row serves
// as the transform's input and the blend's a, one pass instead of a copy and a padded copy), its
// spectrum, statistics, gate, gated inverse, and the blend with its causal softmax into probs.
void sga_rows_forward(const SgaOptions *o, const LayerCall *c, int nh, int q0, int Q, const SgaRows *l, const SgaScratch *w,
                      const void *scores, void *probs, int gate_inputs_kept) {
    const Backend *be = c->be;
    void *const *P = c->param;
    int T = c->T, R = nh * Q, De = o->embed, Hg = o->hidden;
    size_t n = (size_t)R * T;
    be->causal_lower_copy(l->raw, scores, nh, T, q0, Q);          // z: the causal row of a, zero-padded to T
    if (o->spectral) be->dct_rows(l->spec, l->raw, R, T, 0);      // s = DCT-II(z) (R,T)
    else be->copy(l->spec, l->raw, n);                            // ablation: gate the row itself
    // gate_inputs_kept: a rebuild, and stats, hslope and h hold this layer's from the forward pass.
    if (!gate_inputs_kept) be->sga_stats_forward(l->stats, l->spec, R, T);   // (R,4)
    if (o->fixed_filter) {
        be->sga_fixed_gate(l->gate, R, T);                        // ablation: fixed gains
    } else {
        be->sga_gate_input(l->U, P[SGA_E], l->stats, R, De);      // u = [e_l; stats] (R,De+4)
        if (!gate_inputs_kept) be->matmul_gelu_forward(l->hslope, l->h, l->U, P[SGA_W1], P[SGA_B1], R, De + 4, Hg);   // (R,Hg) x2
        be->matmul_forward(l->gate, l->h, P[SGA_W2], P[SGA_B2], R, Hg, T);
    }
    be->sga_gate_apply(w->y, l->gate, l->spec, n, !o->fixed_filter);   // g = sigmoid(W2 h + b2) (R,T); g * s
    if (o->spectral) be->dct_rows(l->zp, w->y, R, T, 1);          // z' = IDCT(g * s)
    else be->copy(l->zp, w->y, n);
    const void *alpha = o->blend ? P[SGA_ALPHA] : NULL;
    be->sga_blend_softmax_forward(probs, l->raw, l->zp, alpha, nh, T, q0, Q);   // softmax of a' = (1 - alpha) a + alpha z'
}

void sga_rows_backward(const SgaOptions *o, const LayerCall *c, int nh, int q0, int Q, const SgaRows *l, const SgaScratch *w,
                       const void *dlogits, void *dscores) {
    const Backend *be = c->be;
    void *const *P = c->param, *const *G = c->grad;
    int T = c->T, R = nh * Q, De = o->embed, Hg = o->hidden;
    size_t n = (size_t)R * T;
    const void *alpha = o->blend ? P[SGA_ALPHA] : NULL;
    void *dalpha = o->blend ? G[SGA_ALPHA] : NULL;
    // z serves as dz' and later dz; y as dy. The blend writes the whole of dscores (nh,Q,T).
    be->sga_blend_backward(dscores, w->z, dalpha, dlogits, l->raw, l->zp, alpha, nh, T, q0, Q);
    if (o->spectral) be->dct_rows(w->y, w->z, R, T, 0);   // dy = DCT(dz'): the inverse's transpose
    else be->copy(w->y, w->z, n);
    // ds = dy g; d(W2 h + b2) = dy s g (1 - g)
    be->sga_gate_backward(o->fixed_filter ? NULL : w->dgate, w->dspec, w->y, l->gate, l->spec, n);
    if (!o->fixed_filter) {
        be->matmul_backward_gelu(w->dhpre, G[SGA_W2], G[SGA_B2], w->dgate, l->h, P[SGA_W2], l->hslope, R, Hg, T);   // (R,Hg)
        be->matmul_backward(w->dU, GRAD_ASSIGN, G[SGA_W1], G[SGA_B1], w->dhpre, l->U, P[SGA_W1], R, De + 4, Hg);
        be->sga_gate_input_backward(G[SGA_E], w->dstats, w->dU, R, De);
        be->sga_stats_backward(w->dspec, w->dstats, l->spec, l->stats, R, T);     // gradient through the statistics
    }
    if (o->spectral) be->dct_rows(w->z, w->dspec, R, T, 1);   // dz = IDCT(ds)
    else be->copy(w->z, w->dspec, n);
    be->causal_lower_accumulate(dscores, w->z, nh, T, q0, Q);   // the padding carries no gradient
}

static SgaScratch sga_scratch(const SgaSlot *slot) {
    SgaScratch w = {slot->z, slot->y, slot->dspec, slot->dgate, slot->dU, slot->dhpre, slot->dstats};
    return w;
}

static void sga_probs_forward(void *slot_, const AttnCall *c, const void *scores, void *probs) {
    SgaSlot *slot = slot_;
    const Backend *be = c->layer.be;
    int T = c->layer.T, BH = c->layer.B * slot->NH, step = heads_per_slice(be, BH, T);
    SgaScratch w = sga_scratch(slot);
    for (int h0 = 0; h0 < BH; h0 += step) {
        int nh = BH - h0 < step ? BH - h0 : step;
        size_t off = (size_t)h0 * T * T;   // slice h0: the rows of heads [h0, h0 + nh)
        SgaRows l = sga_layer(slot, be, c->layer.li, (size_t)h0 * T);
        sga_rows_forward(&slot->opt, &c->layer, nh, 0, T, &l, &w, be_offset(be, (void *)scores, off), be_offset(be, probs, off),
                         c->rebuild && slot->gate_inputs_kept);
    }
}

static void sga_logits_backward(void *slot_, const AttnCall *c, const void *dlogits, void *dscores) {
    SgaSlot *slot = slot_;
    const Backend *be = c->layer.be;
    int T = c->layer.T, BH = c->layer.B * slot->NH, step = heads_per_slice(be, BH, T);
    SgaScratch w = sga_scratch(slot);
    for (int h0 = 0; h0 < BH; h0 += step) {
        int nh = BH - h0 < step ? BH - h0 : step;
        size_t off = (size_t)h0 * T * T;
        SgaRows l = sga_layer(slot, be, c->layer.li, (size_t)h0 * T);
        sga_rows_backward(&slot->opt, &c->layer, nh, 0, T, &l, &w, be_offset(be, (void *)dlogits, off), be_offset(be, dscores, off));
    }
}

double sga_trace_alpha(const SgaOptions *o, const LayerCall *c) {
    if (!o->blend) return 1;
    float alpha;
    c->be->download(&alpha, c->param[SGA_ALPHA], 1);
    return alpha < 0 ? 0 : (alpha > 1 ? 1 : alpha);
}

void sga_trace_rows(const double *stats, const double *gate, size_t rows, int T, size_t R_total, double stats_sum[4],
                    double band_sum[4], double band_count[4]) {
    for (size_t row = 0; row < rows; row++) {
        for (int s = 0; s < 4; s++) stats_sum[s] += stats[row * 4 + s] / R_total;
        for (int k = 0; k < T; k++) {
            // DC, then the low, middle and high thirds of the remaining frequencies
            int b = k == 0 ? 0 : 1 + (3 * (k - 1)) / (T > 1 ? T - 1 : 1);
            if (b > 3) b = 3;
            band_sum[b] += gate[row * T + k];
            band_count[b] += 1;
        }
    }
}

void sga_trace_layer(const void *slot_, const LayerCall *c, double *alpha_out, double stats_out[4], double band_out[4]) {
    // The tiled form keeps no rows: it recomputes them (sga_tiled.c).
    if (c->shape->attention == &ATTENTION_SGA_TILED) {
        sga_tiled_trace_layer(slot_, c, alpha_out, stats_out, band_out);
        return;
    }
    const SgaSlot *slot = slot_;
    const Backend *be = c->be;
    int T = c->T;
    size_t R = (size_t)c->B * slot->NH * T;
    *alpha_out = sga_trace_alpha(&slot->opt, c);
    SgaRows l = sga_layer(slot, be, c->li, 0);
    double *stats = xmalloc(sizeof(double) * R * 4), *gate = xmalloc(sizeof(double) * R * T);
    be->download_f64(stats, l.stats, R * 4);
    be->download_f64(gate, l.gate, R * T);
    double band[4] = {0}, count[4] = {0};
    for (int s = 0; s < 4; s++) stats_out[s] = 0;
    sga_trace_rows(stats, gate, R, T, R, stats_out, band, count);
    for (int b = 0; b < 4; b++) band_out[b] = count[b] > 0 ? band[b] / count[b] : NAN;
    free(stats); free(gate);
}

double sga_extra_flops_per_token(const ModelShape *s) {
    SgaOptions o = sga_options(s->cfg);
    // Per token and head there is one logit row of length T. Forward: two DCTs at the cost of the
    // FFT that computes them (2.5 T log2 T each: what runs, not the 2 T^2 of a dense product), the
    // gate MLP 2 (De+4) Hg + 2 Hg T, and ~20 T elementwise work; backward twice the forward.
    double T = s->seq_len, De = o.embed, Hg = o.hidden;
    double dct = o.spectral ? 2 * 2.5 * T * log2(T) : 0;
    double mlp = o.fixed_filter ? 0 : 2 * (De + 4) * Hg + 2 * Hg * T;
    return 3.0 * s->n_layer * s->n_head * (dct + mlp + 20 * T);
}

// On CUDA the DCT of one layer's R = B NH T rows runs as one batched real FFT (cuda/dct.cu,
// dct_fft) in a scratch buffer of the reordered rows (R T floats), their half spectra (R (T/2+1)
// complex, about R T floats) and cuFFT's work area (taken as the same again): 3 R T fp32.
static double sga_gpu_workspace_bytes(const ModelShape *s, int B) {
    double R = (double)B * s->n_head * s->seq_len;
    return 3 * R * s->seq_len * 4;
}

const AttentionVariant ATTENTION_SGA = {
    .name = "sga",
    .description = "spectral gated attention (docs/design.md section 3)",
    .declare_params = sga_declare_params,
    .slot_create = sga_slot_create,
    .slot_free = sga_slot_free,
    .probs_forward = sga_probs_forward,
    .logits_backward = sga_logits_backward,
    .core_forward = attn_core_forward,
    .core_backward = attn_core_backward,
    .layer_probs = attn_core_layer_probs,
    .extra_flops_per_token = sga_extra_flops_per_token,
    .gpu_workspace_bytes = sga_gpu_workspace_bytes,
    .fused_form = &ATTENTION_SGA_TILED,
};
