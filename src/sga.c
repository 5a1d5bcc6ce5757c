// sga.c: the sequence of backend ops of Spectral Gated Attention for one layer.
#include "sga.h"
#include <math.h>

typedef struct {
    void *raw, *spec, *stats, *U, *hpre, *h, *gate, *zp;
} SgaLayer;

// The saved tensors of layer li, from row `row0` on (rows are (B*NH*T) in head-major order).
static SgaLayer sga_layer(const Model *m, const Activations *a, int li, size_t row0) {
    const Backend *be = m->be;
    const ModelShape *s = &m->shape;
    size_t T = a->T, R = (size_t)a->B * s->n_head * T, De = s->sga_embed, Hg = s->sga_hidden;
    size_t r = li * R + row0;
    SgaLayer l = {
        .raw = be_offset(be, a->sga_raw, r * T),
        .spec = be_offset(be, a->sga_spec, r * T),
        .stats = be_offset(be, a->sga_stats, r * 4),
        .U = be_offset(be, a->sga_U, r * (De + 4)),
        .hpre = be_offset(be, a->sga_hpre, r * Hg),
        .h = be_offset(be, a->sga_h, r * Hg),
        .gate = be_offset(be, a->sga_gate, r * T),
        .zp = be_offset(be, a->sga_zp, r * T),
    };
    return l;
}

// Rows never interact in SGA (DESIGN section 4: no statistic is pooled over rows), so the chain of
// ops may run over slices of whole heads. On the CPU every (R,T) tensor of a 6-layer T=512 model is
// tens of MB and each op streamed it from DRAM; slices of backend->working_set_bytes per tensor stay
// in cache from one op to the next. Backends that want whole layers (GPUs) set it to 0.
static int heads_per_slice(const Backend *be, int BH, int T) {
    if (be->working_set_bytes == 0) return BH;
    size_t head_bytes = (size_t)T * T * be->elem_size;
    size_t heads = be->working_set_bytes / head_bytes;
    return heads < 1 ? 1 : (heads > (size_t)BH ? BH : (int)heads);
}

// One slice of `nh` heads (R = nh T rows) starting at head h0; scratch tensors are slice-sized.
static void sga_forward_slice(Model *m, Activations *a, int li, int h0, int nh, const void *scores, void *logits) {
    const Backend *be = m->be;
    const ModelShape *s = &m->shape;
    int layer = m->layer_begin + li, T = a->T, R = nh * T;
    int De = s->sga_embed, Hg = s->sga_hidden;
    size_t n = (size_t)R * T, off = (size_t)h0 * T * T;
    scores = be_offset(be, (void *)scores, off);
    logits = be_offset(be, logits, off);
    SgaLayer l = sga_layer(m, a, li, (size_t)h0 * T);
    be->copy(l.raw, scores, n);                                    // a (nh,T,T), kept for the blend's gradient
    be->causal_lower_copy(a->sga_z, scores, nh, T);                // z: the causal row, zero-padded to T
    if (s->sga_spectral) be->dct_rows(l.spec, a->sga_z, R, T, 0);  // s = DCT-II(z) (R,T)
    else be->copy(l.spec, a->sga_z, n);                            // ablation: gate the row itself
    be->sga_stats_forward(l.stats, l.spec, R, T);                  // (R,4)
    if (s->sga_fixed_filter) {
        be->sga_fixed_gate(l.gate, R, T);                          // ablation: fixed gains
    } else {
        be->sga_gate_input(l.U, model_param(m, PARAM_SGA_E, layer), l.stats, R, De);       // u = [e_l; stats] (R,De+4)
        be->matmul_forward(l.hpre, l.U, model_param(m, PARAM_SGA_W1, layer), model_param(m, PARAM_SGA_B1, layer), R, De + 4, Hg);
        be->gelu_forward(l.h, l.hpre, (size_t)R * Hg);                                     // (R,Hg)
        be->matmul_forward(l.gate, l.h, model_param(m, PARAM_SGA_W2, layer), model_param(m, PARAM_SGA_B2, layer), R, Hg, T);
    }
    be->sga_gate_apply(a->sga_y, l.gate, l.spec, n, !s->sga_fixed_filter);   // g = sigmoid(W2 h + b2) (R,T); g * s
    if (s->sga_spectral) be->dct_rows(l.zp, a->sga_y, R, T, 1);    // z' = IDCT(g * s)
    else be->copy(l.zp, a->sga_y, n);
    const void *alpha = s->sga_blend ? model_param(m, PARAM_SGA_ALPHA, layer) : NULL;
    be->sga_blend_forward(logits, l.raw, l.zp, alpha, nh, T);      // a' = (1 - alpha) a + alpha z'
}

void sga_forward(Model *m, Activations *a, int li, const void *scores, void *logits) {
    int T = a->T, BH = a->B * m->shape.n_head, step = heads_per_slice(m->be, BH, T);
    for (int h0 = 0; h0 < BH; h0 += step) sga_forward_slice(m, a, li, h0, BH - h0 < step ? BH - h0 : step, scores, logits);
}

static void sga_backward_slice(Model *m, Activations *a, int li, int h0, int nh, const void *dlogits, void *dscores) {
    const Backend *be = m->be;
    const ModelShape *s = &m->shape;
    int layer = m->layer_begin + li, T = a->T, R = nh * T;
    int De = s->sga_embed, Hg = s->sga_hidden;
    size_t n = (size_t)R * T, off = (size_t)h0 * T * T;
    dlogits = be_offset(be, (void *)dlogits, off);
    dscores = be_offset(be, dscores, off);
    SgaLayer l = sga_layer(m, a, li, (size_t)h0 * T);
    const void *alpha = s->sga_blend ? model_param(m, PARAM_SGA_ALPHA, layer) : NULL;
    void *dalpha = s->sga_blend ? model_grad(m, PARAM_SGA_ALPHA, layer) : NULL;
    // sga_z serves as dz' and later dz; sga_y as dy. The blend writes the whole of dscores' slice.
    be->sga_blend_backward(dscores, a->sga_z, dalpha, dlogits, l.raw, l.zp, alpha, nh, T);
    if (s->sga_spectral) be->dct_rows(a->sga_y, a->sga_z, R, T, 0);   // dy = DCT(dz'): the inverse's transpose
    else be->copy(a->sga_y, a->sga_z, n);
    // ds = dy g; d(W2 h + b2) = dy s g (1 - g)
    be->sga_gate_backward(s->sga_fixed_filter ? NULL : a->sga_dgate, a->sga_dspec, a->sga_y, l.gate, l.spec, n);
    if (!s->sga_fixed_filter) {
        be->zero(a->sga_dh, (size_t)R * Hg);
        be->matmul_backward(a->sga_dh, model_grad(m, PARAM_SGA_W2, layer), model_grad(m, PARAM_SGA_B2, layer), a->sga_dgate,
                            l.h, model_param(m, PARAM_SGA_W2, layer), R, Hg, T);
        be->zero(a->sga_dhpre, (size_t)R * Hg);
        be->gelu_backward(a->sga_dhpre, l.hpre, a->sga_dh, (size_t)R * Hg);
        be->zero(a->sga_dU, (size_t)R * (De + 4));
        be->matmul_backward(a->sga_dU, model_grad(m, PARAM_SGA_W1, layer), model_grad(m, PARAM_SGA_B1, layer), a->sga_dhpre,
                            l.U, model_param(m, PARAM_SGA_W1, layer), R, De + 4, Hg);
        be->sga_gate_input_backward(model_grad(m, PARAM_SGA_E, layer), a->sga_dstats, a->sga_dU, R, De);
        be->sga_stats_backward(a->sga_dspec, a->sga_dstats, l.spec, R, T);              // gradient through the statistics
    }
    if (s->sga_spectral) be->dct_rows(a->sga_z, a->sga_dspec, R, T, 1);   // dz = IDCT(ds)
    else be->copy(a->sga_z, a->sga_dspec, n);
    be->causal_lower_accumulate(dscores, a->sga_z, nh, T);                // the padding carries no gradient
}

void sga_backward(Model *m, Activations *a, int li, const void *dlogits, void *dscores) {
    int T = a->T, BH = a->B * m->shape.n_head, step = heads_per_slice(m->be, BH, T);
    for (int h0 = 0; h0 < BH; h0 += step) sga_backward_slice(m, a, li, h0, BH - h0 < step ? BH - h0 : step, dlogits, dscores);
}

void sga_download_layer(const Model *m, const Activations *a, int li, double *stats, double *gate) {
    SgaLayer l = sga_layer(m, a, li, 0);
    size_t R = (size_t)a->B * m->shape.n_head * a->T;
    m->be->download_f64(stats, l.stats, R * 4);
    m->be->download_f64(gate, l.gate, R * a->T);
}

size_t sga_params_per_layer(const ModelShape *s) {
    if (!s->sga) return 0;
    size_t De = s->sga_embed, Hg = s->sga_hidden, T = s->seq_len;
    size_t gate = s->sga_fixed_filter ? 0 : De + Hg * (De + 4) + Hg + T * Hg + T;
    return gate + (s->sga_blend ? 1 : 0);
}

double sga_flops_per_token(const ModelShape *s) {
    if (!s->sga) return 0;
    // Per token and head there is one logit row of length T. Forward: two DCTs at the cost of the
    // FFT that computes them (2.5 T log2 T each: what runs, not the 2 T^2 of a dense product), the
    // gate MLP 2 (De+4) Hg + 2 Hg T, and ~20 T elementwise work; backward twice the forward.
    double T = s->seq_len, De = s->sga_embed, Hg = s->sga_hidden;
    double dct = s->sga_spectral ? 2 * 2.5 * T * log2(T) : 0;
    double mlp = s->sga_fixed_filter ? 0 : 2 * (De + 4) * Hg + 2 * Hg * T;
    return 3.0 * s->n_layer * s->n_head * (dct + mlp + 20 * T);
}
