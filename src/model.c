// model.c: parameter table, initialisation and the forward/backward passes of the GPT decoder.
// Every line of the passes is one backend op; the math is in the backends.
#include "model.h"
#include <math.h>
#include <string.h>
#include "common.h"
#include "rng.h"
#include "r3si.h"
#include "sga.h"

ModelShape model_shape_from_config(const Config *cfg) {
    ModelShape s = {
        .n_layer = cfg->n_layer,
        .n_head = cfg->n_head,
        .d_model = cfg->d_model,
        .head_size = cfg->d_model / cfg->n_head,
        .seq_len = cfg->seq_len,
        .vocab_size = cfg->vocab_size,
        .mlp_hidden = (int)lround(cfg->mlp_ratio * cfg->d_model),
        .norm = cfg->norm,
        .tie_embeddings = cfg->tie_embeddings,
        .init_std = cfg->init_std,
        .scaled_init = cfg->scaled_init,
        .sga = strcmp(cfg->attention_kind, "sga") == 0,
        .sga_spectral = cfg->sga_spectral,
        .sga_fixed_filter = cfg->sga_fixed_filter,
        .sga_blend = cfg->sga_blend,
        .sga_hidden = cfg->sga_gate_hidden,
        .sga_embed = cfg->sga_embed_dim,
        .sga_alpha_init = cfg->sga_alpha_init,
        .r3si = cfg->r3si_enabled,
        .r3si_inject = cfg->r3si_enabled && cfg->r3si_inject,
        .r3si_ds = cfg->r3si_ds,
        .r3si_k = cfg->r3si_k,
    };
    for (int i = 0; cfg->r3si_enabled && i < cfg->r3si_n_layers; i++)
        if (cfg->r3si_layers[i] >= 0 && cfg->r3si_layers[i] < 1024) s.r3si_is_checkpoint[cfg->r3si_layers[i]] = 1;
    return s;
}

// Which parameters a model has beyond the always-present ones.
typedef enum { NEEDS_NOTHING, NEEDS_UNTIED_HEAD, NEEDS_SGA_GATE, NEEDS_SGA_ALPHA, NEEDS_R3SI_INJECT } Requirement;

static int requirement_met(const ModelShape *s, Requirement r) {
    switch (r) {
    case NEEDS_NOTHING: return 1;
    case NEEDS_UNTIED_HEAD: return !s->tie_embeddings;
    case NEEDS_SGA_GATE: return s->sga && !s->sga_fixed_filter;
    case NEEDS_SGA_ALPHA: return s->sga && s->sga_blend;
    case NEEDS_R3SI_INJECT: return s->r3si_inject;
    }
    return 0;
}

// The table of every parameter: name, role, slice shape, decay, initialisation, and whether this
// model has it at all (`exists`).
static void describe_params(const ModelShape *s, ParamInfo p[NUM_PARAMS], int exists[NUM_PARAMS]) {
    long C = s->d_model, V = s->vocab_size, T = s->seq_len, H = s->mlp_hidden;
    long De = s->sga_embed, Hg = s->sga_hidden;
    // Residual projections write into the residual stream once per block; GPT-2 scales their
    // init by 1/sqrt(2 L) so the stream's variance does not grow with depth.
    double resid_std = s->scaled_init ? s->init_std / sqrt(2.0 * s->n_layer) : s->init_std;
    struct { ParamId id; const char *name; ParamRole role; int ndim; long d0, d1; ParamInit init; double std; Requirement needs; } rows[] = {
        {PARAM_WTE, "wte", ROLE_EMBEDDING, 2, V, C, INIT_NORMAL, s->init_std, NEEDS_NOTHING},
        {PARAM_WPE, "wpe", ROLE_EMBEDDING, 2, T, C, INIT_NORMAL, s->init_std, NEEDS_NOTHING},
        {PARAM_LN1_W, "blocks.ln1_w", ROLE_BLOCK, 1, C, 0, INIT_ONE, 0, NEEDS_NOTHING},
        {PARAM_LN1_B, "blocks.ln1_b", ROLE_BLOCK, 1, C, 0, INIT_ZERO, 0, NEEDS_NOTHING},
        {PARAM_QKV_W, "blocks.qkv_w", ROLE_BLOCK, 2, 3 * C, C, INIT_NORMAL, s->init_std, NEEDS_NOTHING},
        {PARAM_QKV_B, "blocks.qkv_b", ROLE_BLOCK, 1, 3 * C, 0, INIT_ZERO, 0, NEEDS_NOTHING},
        {PARAM_ATTPROJ_W, "blocks.attproj_w", ROLE_BLOCK, 2, C, C, INIT_NORMAL, resid_std, NEEDS_NOTHING},
        {PARAM_ATTPROJ_B, "blocks.attproj_b", ROLE_BLOCK, 1, C, 0, INIT_ZERO, 0, NEEDS_NOTHING},
        {PARAM_LN2_W, "blocks.ln2_w", ROLE_BLOCK, 1, C, 0, INIT_ONE, 0, NEEDS_NOTHING},
        {PARAM_LN2_B, "blocks.ln2_b", ROLE_BLOCK, 1, C, 0, INIT_ZERO, 0, NEEDS_NOTHING},
        {PARAM_FC_W, "blocks.fc_w", ROLE_BLOCK, 2, H, C, INIT_NORMAL, s->init_std, NEEDS_NOTHING},
        {PARAM_FC_B, "blocks.fc_b", ROLE_BLOCK, 1, H, 0, INIT_ZERO, 0, NEEDS_NOTHING},
        {PARAM_FCPROJ_W, "blocks.fcproj_w", ROLE_BLOCK, 2, C, H, INIT_NORMAL, resid_std, NEEDS_NOTHING},
        {PARAM_FCPROJ_B, "blocks.fcproj_b", ROLE_BLOCK, 1, C, 0, INIT_ZERO, 0, NEEDS_NOTHING},
        {PARAM_LNF_W, "lnf_w", ROLE_HEAD, 1, C, 0, INIT_ONE, 0, NEEDS_NOTHING},
        {PARAM_LNF_B, "lnf_b", ROLE_HEAD, 1, C, 0, INIT_ZERO, 0, NEEDS_NOTHING},
        {PARAM_LM_HEAD, "lm_head", ROLE_HEAD, 2, V, C, INIT_NORMAL, s->init_std, NEEDS_UNTIED_HEAD},
        {PARAM_SGA_E, "blocks.sga_e", ROLE_BLOCK, 1, De, 0, INIT_NORMAL, s->init_std, NEEDS_SGA_GATE},
        {PARAM_SGA_W1, "blocks.sga_w1", ROLE_BLOCK, 2, Hg, De + 4, INIT_NORMAL, s->init_std, NEEDS_SGA_GATE},
        {PARAM_SGA_B1, "blocks.sga_b1", ROLE_BLOCK, 1, Hg, 0, INIT_ZERO, 0, NEEDS_SGA_GATE},
        {PARAM_SGA_W2, "blocks.sga_w2", ROLE_BLOCK, 2, T, Hg, INIT_NORMAL, s->init_std, NEEDS_SGA_GATE},
        {PARAM_SGA_B2, "blocks.sga_b2", ROLE_BLOCK, 1, T, 0, INIT_ZERO, 0, NEEDS_SGA_GATE},
        {PARAM_SGA_ALPHA, "blocks.sga_alpha", ROLE_BLOCK, 1, 1, 0, INIT_SGA_ALPHA, 0, NEEDS_SGA_ALPHA},
        {PARAM_R3SI_WS, "blocks.r3si_ws", ROLE_BLOCK, 2, s->r3si_ds, C, INIT_NORMAL, s->init_std, NEEDS_R3SI_INJECT},
    };
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        ParamInfo *pi = &p[rows[r].id];
        memset(pi, 0, sizeof *pi);
        pi->name = rows[r].name;
        pi->role = rows[r].role;
        pi->slice_ndim = rows[r].ndim;
        pi->slice_shape[0] = rows[r].d0;
        pi->slice_shape[1] = rows[r].d1;
        pi->slice_numel = (size_t)rows[r].d0 * (rows[r].ndim == 2 ? (size_t)rows[r].d1 : 1);
        pi->decay = rows[r].ndim == 2;
        pi->init = rows[r].init;
        pi->init_std = rows[r].std;
        exists[rows[r].id] = pi->exists = requirement_met(s, rows[r].needs);
    }
}

size_t model_count_params(const ModelShape *s) {
    ParamInfo p[NUM_PARAMS];
    int exists[NUM_PARAMS];
    describe_params(s, p, exists);
    size_t total = 0;
    for (int i = 0; i < NUM_PARAMS; i++) {
        if (!exists[i]) continue;
        total += p[i].slice_numel * (p[i].role == ROLE_BLOCK ? (size_t)s->n_layer : 1);
    }
    return total;
}

// Arena layout, chosen so that data-parallel reduction works on contiguous buckets:
//   [embedding region: wte, wpe | layer 0 region | layer 1 region | ... | head region: lnf, lm_head]
// Each layer region holds that layer's slice of every block parameter. Every slice starts on a
// 16-element (64-byte) boundary for vector loads.
#define ALIGN_ELEMS(n) (((n) + 15) / 16 * 16)

void model_init(Model *m, const Backend *be, ModelShape shape, int layer_begin, int layer_end, int has_embedding, int has_head,
                size_t arena_multiple) {
    memset(m, 0, sizeof *m);
    m->shape = shape;
    m->be = be;
    m->layer_begin = layer_begin;
    m->layer_end = layer_end;
    m->has_embedding = has_embedding;
    m->has_head = has_head;
    int exists[NUM_PARAMS];
    describe_params(&shape, m->params, exists);
    for (int i = 0; i < NUM_PARAMS; i++) {
        ParamInfo *p = &m->params[i];
        switch (p->role) {
        case ROLE_EMBEDDING:
            // The tied LM head reads wte, so the last stage holds (a copy of) it too.
            p->present = has_embedding || (i == PARAM_WTE && has_head && shape.tie_embeddings);
            break;
        case ROLE_BLOCK: p->present = layer_end > layer_begin; break;
        case ROLE_HEAD: p->present = has_head; break;
        }
        p->present = p->present && exists[i];
        p->numel = p->present ? p->slice_numel * (p->role == ROLE_BLOCK ? (size_t)(layer_end - layer_begin) : 1) : 0;
    }
    // Block parameters: offsets within one layer region.
    size_t in_layer = 0;
    for (int i = 0; i < NUM_PARAMS; i++) {
        ParamInfo *p = &m->params[i];
        if (!p->present || p->role != ROLE_BLOCK) continue;
        p->offset = in_layer;
        in_layer += ALIGN_ELEMS(p->slice_numel);
    }
    m->layer_stride = in_layer;
    size_t offset = 0;
    m->regions[REGION_EMBEDDING].offset = offset;
    for (int i = 0; i < NUM_PARAMS; i++) {
        ParamInfo *p = &m->params[i];
        if (!p->present || p->role != ROLE_EMBEDDING) continue;
        p->offset = offset;
        offset += ALIGN_ELEMS(p->numel);
    }
    m->regions[REGION_EMBEDDING].numel = offset - m->regions[REGION_EMBEDDING].offset;
    m->layers_offset = offset;
    offset += m->layer_stride * (size_t)(layer_end - layer_begin);
    m->regions[REGION_HEAD].offset = offset;
    for (int i = 0; i < NUM_PARAMS; i++) {
        ParamInfo *p = &m->params[i];
        if (!p->present || p->role != ROLE_HEAD) continue;
        p->offset = offset;
        offset += ALIGN_ELEMS(p->numel);
    }
    m->regions[REGION_HEAD].numel = offset - m->regions[REGION_HEAD].offset;
    if (arena_multiple > 1) offset = (offset + arena_multiple - 1) / arena_multiple * arena_multiple;
    m->num_params = offset;
    m->attn_temperature = 1.0;
    m->params_mem = be->alloc(offset);
    m->grads_mem = be->alloc(offset);
}

void model_free(Model *m) {
    m->be->free(m->params_mem);
    m->be->free(m->grads_mem);
    memset(m, 0, sizeof *m);
}

size_t model_param_offset(const Model *m, ParamId id, int layer) {
    const ParamInfo *p = &m->params[id];
    if (!p->present) die(EXIT_FAILURE_OTHER, "internal: parameter %s is not on this stage", p->name);
    if (p->role != ROLE_BLOCK) return p->offset;
    if (layer < m->layer_begin || layer >= m->layer_end)
        die(EXIT_FAILURE_OTHER, "internal: layer %d of %s is not on this stage", layer, p->name);
    return m->layers_offset + (size_t)(layer - m->layer_begin) * m->layer_stride + p->offset;
}

ModelRegion model_layer_region(const Model *m, int layer) {
    ModelRegion r = {m->layers_offset + (size_t)(layer - m->layer_begin) * m->layer_stride, m->layer_stride};
    return r;
}

void *model_param(const Model *m, ParamId id, int layer) { return be_offset(m->be, m->params_mem, model_param_offset(m, id, layer)); }
void *model_grad(const Model *m, ParamId id, int layer) { return be_offset(m->be, m->grads_mem, model_param_offset(m, id, layer)); }

void model_init_weights(Model *m, uint64_t seed) {
    for (int i = 0; i < NUM_PARAMS; i++) {
        const ParamInfo *p = &m->params[i];
        if (!p->present) continue;
        int first = p->role == ROLE_BLOCK ? m->layer_begin : 0;
        int last = p->role == ROLE_BLOCK ? m->layer_end : 1;
        double *host = xmalloc(p->slice_numel * sizeof(double));
        for (int layer = first; layer < last; layer++) {
            // The tied head's copy of wte on the last stage draws the same stream as the first stage's.
            uint64_t stream = ((uint64_t)i << 32) | (uint64_t)layer;
            for (size_t e = 0; e < p->slice_numel; e++) {
                switch (p->init) {
                case INIT_NORMAL: host[e] = (double)(float)(p->init_std * rng_normal(seed, stream, e)); break;
                case INIT_ZERO: host[e] = 0; break;
                case INIT_ONE: host[e] = 1; break;
                case INIT_SGA_ALPHA: host[e] = (double)(float)m->shape.sga_alpha_init; break;
                }
            }
            m->be->upload_f64(model_param(m, (ParamId)i, layer), host, p->slice_numel);
        }
        free(host);
    }
}

// ---- activations ------------------------------------------------------------------------------

void activations_init(Activations *a, const Model *m, int B) {
    const Backend *be = m->be;
    const ModelShape *s = &m->shape;
    memset(a, 0, sizeof *a);
    size_t T = s->seq_len, C = s->d_model, H = s->mlp_hidden, NH = s->n_head, V = s->vocab_size;
    size_t N = (size_t)B * T, Lc = (size_t)(m->layer_end - m->layer_begin);
    a->B = B;
    a->T = (int)T;
    a->n_local = (int)Lc;
    size_t floats = 0;
#define ALLOC(field, n) do { a->field = be->alloc(n); floats += (n); } while (0)
    a->tokens = be->alloc_i32(N);
    a->targets = be->alloc_i32(N);
    ALLOC(input, N * C);
    ALLOC(ln1, Lc * N * C); ALLOC(ln1_mean, Lc * N); ALLOC(ln1_rstd, Lc * N);
    ALLOC(qkv, Lc * N * 3 * C);
    ALLOC(q, Lc * N * C); ALLOC(k, Lc * N * C); ALLOC(v, Lc * N * C);
    ALLOC(probs, Lc * B * NH * T * T);
    ALLOC(atty, Lc * N * C);
    ALLOC(attmerged, Lc * N * C);
    ALLOC(resid_mid, Lc * N * C);
    ALLOC(ln2, Lc * N * C); ALLOC(ln2_mean, Lc * N); ALLOC(ln2_rstd, Lc * N);
    ALLOC(fch, Lc * N * H); ALLOC(fch_gelu, Lc * N * H);
    ALLOC(resid_out, Lc * N * C);
    if (m->has_head) {
        ALLOC(lnf, N * C); ALLOC(lnf_mean, N); ALLOC(lnf_rstd, N);
        ALLOC(logits, N * V);
        ALLOC(losses, N);
    }
    ALLOC(scores, B * NH * T * T);
    ALLOC(dresidual, N * C); ALLOC(dtmp, N * C); ALLOC(dln, N * C);
    ALLOC(dqkv, N * 3 * C);
    ALLOC(dq, N * C); ALLOC(dk, N * C); ALLOC(dv, N * C); ALLOC(datty, N * C);
    ALLOC(dprobs, B * NH * T * T); ALLOC(dscores, B * NH * T * T);
    ALLOC(dattmerged, N * C);
    ALLOC(dfch, N * H); ALLOC(dfch_gelu, N * H);
    if (s->r3si) {
        size_t ds = s->r3si_ds, k = s->r3si_k;
        if (s->r3si_inject) { ALLOC(r3si_in, Lc * N * C); ALLOC(r3si_z, Lc * N * ds); }
        ALLOC(r3si_u, N * C); ALLOC(r3si_g, N * C); ALLOC(r3si_hc, N * C); ALLOC(r3si_p, N * k); ALLOC(r3si_dz, N * ds);
        ALLOC(r3si_cov, C * C);
    }
    ALLOC(adr_gram, NH * NH);
    ALLOC(sd_factor, Lc * B);
    if (s->sga) {
        size_t R = (size_t)B * NH * T, De = s->sga_embed, Hg = s->sga_hidden;
        ALLOC(sga_raw, Lc * R * T); ALLOC(sga_spec, Lc * R * T); ALLOC(sga_stats, Lc * R * 4);
        ALLOC(sga_U, Lc * R * (De + 4)); ALLOC(sga_hpre, Lc * R * Hg); ALLOC(sga_h, Lc * R * Hg);
        ALLOC(sga_gate, Lc * R * T); ALLOC(sga_zp, Lc * R * T);
        ALLOC(sga_z, R * T); ALLOC(sga_y, R * T); ALLOC(sga_dspec, R * T); ALLOC(sga_dgate, R * T); ALLOC(sga_dlogits, R * T);
        ALLOC(sga_dU, R * (De + 4)); ALLOC(sga_dh, R * Hg); ALLOC(sga_dhpre, R * Hg); ALLOC(sga_dstats, R * 4);
    }
#undef ALLOC
    a->bytes = floats * be->elem_size + 2 * N * sizeof(int32_t);
}

void activations_free(Activations *a, const Backend *be) {
    void *ptrs[] = {a->tokens, a->targets, a->input, a->ln1, a->ln1_mean, a->ln1_rstd, a->qkv, a->q, a->k, a->v,
                    a->probs, a->atty, a->attmerged, a->resid_mid, a->ln2, a->ln2_mean, a->ln2_rstd, a->fch,
                    a->fch_gelu, a->resid_out, a->lnf, a->lnf_mean, a->lnf_rstd, a->logits, a->losses, a->scores,
                    a->dresidual, a->dtmp, a->dln, a->dqkv, a->dq, a->dk, a->dv, a->datty, a->dprobs, a->dscores,
                    a->dattmerged, a->dfch, a->dfch_gelu, a->sga_raw, a->sga_spec, a->sga_stats, a->sga_U, a->sga_hpre,
                    a->sga_h, a->sga_gate, a->sga_zp, a->sga_z, a->sga_y, a->sga_dspec, a->sga_dgate, a->sga_dlogits,
                    a->sga_dU, a->sga_dh, a->sga_dhpre, a->sga_dstats, a->r3si_in, a->r3si_z, a->r3si_u, a->r3si_g,
                    a->r3si_hc, a->r3si_p, a->r3si_dz, a->r3si_cov, a->adr_gram, a->sd_factor};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++) if (ptrs[i]) be->free(ptrs[i]);
    memset(a, 0, sizeof *a);
}

// Slices of the layer-stacked activations for local layer li.
typedef struct {
    void *ln1, *ln1_mean, *ln1_rstd, *qkv, *q, *k, *v, *probs, *atty, *attmerged, *resid_mid;
    void *ln2, *ln2_mean, *ln2_rstd, *fch, *fch_gelu, *resid_out;
} LayerActs;

static LayerActs layer_acts(const Model *m, const Activations *a, int li) {
    const Backend *be = m->be;
    const ModelShape *s = &m->shape;
    size_t N = (size_t)a->B * a->T, C = s->d_model, H = s->mlp_hidden, T = a->T;
    size_t att = (size_t)a->B * s->n_head * T * T;
    LayerActs l = {
        .ln1 = be_offset(be, a->ln1, li * N * C),
        .ln1_mean = be_offset(be, a->ln1_mean, li * N),
        .ln1_rstd = be_offset(be, a->ln1_rstd, li * N),
        .qkv = be_offset(be, a->qkv, li * N * 3 * C),
        .q = be_offset(be, a->q, li * N * C),
        .k = be_offset(be, a->k, li * N * C),
        .v = be_offset(be, a->v, li * N * C),
        .probs = be_offset(be, a->probs, li * att),
        .atty = be_offset(be, a->atty, li * N * C),
        .attmerged = be_offset(be, a->attmerged, li * N * C),
        .resid_mid = be_offset(be, a->resid_mid, li * N * C),
        .ln2 = be_offset(be, a->ln2, li * N * C),
        .ln2_mean = be_offset(be, a->ln2_mean, li * N),
        .ln2_rstd = be_offset(be, a->ln2_rstd, li * N),
        .fch = be_offset(be, a->fch, li * N * H),
        .fch_gelu = be_offset(be, a->fch_gelu, li * N * H),
        .resid_out = be_offset(be, a->resid_out, li * N * C),
    };
    return l;
}

void *model_block_output(const Model *m, const Activations *a, int li) {
    LayerActs l = layer_acts(m, a, li);
    // Post-norm blocks end with their second LayerNorm; pre-norm blocks with the residual sum.
    return m->shape.norm == NORM_POST ? l.ln2 : l.resid_out;
}

// The residual stream entering block li: the previous block's output (or the stage's input).
static const void *block_input_raw(const Model *m, const Activations *a, int li) {
    return li == 0 ? a->input : model_block_output(m, a, li - 1);
}

const void *model_block_input(const Model *m, const Activations *a, int li) { return block_input_raw(m, a, li); }

const void *model_layer_probs(const Model *m, const Activations *a, int li) { return layer_acts(m, a, li).probs; }

// What block li reads: the stream, or at an R3SI checkpoint block its injected copy.
static const void *block_input(const Model *m, const Activations *a, int li) {
    if (m->shape.r3si_inject && m->shape.r3si_is_checkpoint[m->layer_begin + li])
        return be_offset(m->be, a->r3si_in, (size_t)li * a->B * a->T * m->shape.d_model);
    return block_input_raw(m, a, li);
}

// ---- forward ----------------------------------------------------------------------------------

// Sum over the sequences and head pairs h < h' of cos(A_h, A_h'), the attention maps (T,T) of one
// layer flattened. With dprobs, adds weight x the gradient of that sum instead (and returns it):
// d cos(a, b) / da = b / (|a| |b|) - cos a / |a|^2, applied per sequence as dP (+=) W P with the
// (NH,NH) matrix W built from the Gram matrix G = P P^T.
static double head_map_cosines(const Model *m, Activations *a, const void *probs, void *dprobs, double weight) {
    const Backend *be = m->be;
    int NH = m->shape.n_head, T = a->T, TT = T * T;
    double G[64 * 64], W[64 * 64], total = 0;
    float Wf[64 * 64];
    if (NH > 64) die(EXIT_FAILURE_OTHER, "attention diversity regularisation supports up to 64 heads");
    for (int b = 0; b < a->B; b++) {
        const void *P = be_offset(be, (void *)probs, (size_t)b * NH * TT);   // (NH, T*T)
        be->gemm(0, 1, NH, NH, TT, 1.0, P, TT, P, TT, 0, a->adr_gram, NH);
        be->download_f64(G, a->adr_gram, (size_t)NH * NH);
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
        be->upload(a->adr_gram, Wf, (size_t)NH * NH);
        be->gemm(0, 0, NH, TT, NH, 1.0, a->adr_gram, NH, P, TT, 1.0, be_offset(be, dprobs, (size_t)b * NH * TT), TT);
    }
    return total;
}

// Causal multi-head self-attention of x (B,T,C) into out (B,T,C), before the output projection's
// residual add. Leaves q, k, v, probs, atty and attmerged for the backward pass.
static void attention_forward(Model *m, Activations *a, LayerActs *l, int layer, const void *x, void *out) {
    const Backend *be = m->be;
    const ModelShape *s = &m->shape;
    int B = a->B, T = a->T, C = s->d_model, NH = s->n_head, hs = s->head_size, N = B * T;
    be->matmul_forward(l->qkv, x, model_param(m, PARAM_QKV_W, layer), model_param(m, PARAM_QKV_B, layer), N, C, 3 * C); // (B,T,3C)
    be->heads_split(l->q, l->k, l->v, l->qkv, B, T, NH, hs);                 // (B,NH,T,hs) each
    be->attn_scores(a->scores, l->q, l->k, 1.0 / (sqrt((double)hs) * m->attn_temperature), B * NH, T, hs); // (B,NH,T,T)
    if (s->sga) sga_forward(m, a, layer - m->layer_begin, a->scores, a->scores);  // gated logits, in place
    be->softmax_causal_forward(l->probs, a->scores, B * NH, T);              // (B,NH,T,T)
    if (m->entropy_reg_weight > 0) a->entropy_reg_sum += be->attn_entropy_reg_sum(l->probs, B * NH, T);
    if (m->adr_weight > 0) a->adr_sum += head_map_cosines(m, a, l->probs, NULL, 0);
    be->attn_values(l->atty, l->probs, l->v, B * NH, T, hs);                 // (B,NH,T,hs)
    if (m->head_mask) be->head_mask_apply(l->atty, be_offset(be, m->head_mask, (size_t)(layer - m->layer_begin) * NH), B, NH, T, hs);
    be->heads_merge(l->attmerged, l->atty, B, T, NH, hs);                    // (B,T,C)
    be->matmul_forward(out, l->attmerged, model_param(m, PARAM_ATTPROJ_W, layer), model_param(m, PARAM_ATTPROJ_B, layer), N, C, C);
}

// GELU MLP of x (B,T,C) into out (B,T,C).
static void mlp_forward(Model *m, LayerActs *l, int layer, int N, const void *x, void *out) {
    const Backend *be = m->be;
    int C = m->shape.d_model, H = m->shape.mlp_hidden;
    be->matmul_forward(l->fch, x, model_param(m, PARAM_FC_W, layer), model_param(m, PARAM_FC_B, layer), N, C, H); // (B,T,H)
    be->gelu_forward(l->fch_gelu, l->fch, (size_t)N * H);                                                        // (B,T,H)
    be->matmul_forward(out, l->fch_gelu, model_param(m, PARAM_FCPROJ_W, layer), model_param(m, PARAM_FCPROJ_B, layer), N, H, C);
}

// Stochastic depth: the gain of each sequence's branches in block li this step, 0 (dropped) or
// 1 / (1 - p), drawn from (seed, step, layer, global sequence index); NULL when off.
static const void *branch_gains(Model *m, Activations *a, int li, int draw) {
    if (m->stochastic_depth_p <= 0 || !a->training) return NULL;
    void *gains = be_offset(m->be, a->sd_factor, (size_t)li * a->B);
    if (draw) {
        float g[4096];
        if (a->B > 4096) die(EXIT_FAILURE_OTHER, "stochastic depth supports micro-batches of up to 4096 sequences");
        for (int b = 0; b < a->B; b++) {
            uint64_t counter = ((uint64_t)m->step * (uint64_t)m->shape.n_layer + (uint64_t)(m->layer_begin + li)) * 1048576u +
                               (uint64_t)(a->first_sequence + b);
            double u = rng_uniform(m->stochastic_depth_seed, 0x5354444550ull, counter);
            g[b] = u < m->stochastic_depth_p ? 0.0f : (float)(1.0 / (1.0 - m->stochastic_depth_p));
        }
        m->be->upload(gains, g, (size_t)a->B);
    }
    return gains;
}

// dst = src with each sequence's rows multiplied by its gain (the gradient of a gained branch).
static const void *gained(Model *m, Activations *a, const void *gains, void *dst, const void *src) {
    if (!gains) return src;
    size_t n = (size_t)a->T * m->shape.d_model;
    m->be->copy(dst, src, (size_t)a->B * n);
    m->be->scale_rows(dst, gains, a->B, n);
    return dst;
}

static void block_forward(Model *m, Activations *a, int li) {
    const Backend *be = m->be;
    int layer = m->layer_begin + li, C = m->shape.d_model, N = a->B * a->T;
    LayerActs l = layer_acts(m, a, li);
    const void *x = block_input(m, a, li);  // (B,T,C)
    if (m->layer_skip && m->layer_skip[layer]) {   // LayerDrop: the block is the identity this step
        be->copy(model_block_output(m, a, li), x, (size_t)N * C);
        return;
    }
    const void *gains = branch_gains(m, a, li, 1);
    size_t row = (size_t)a->T * C;
    // The attention and MLP outputs are staged in the dtmp scratch before their residual add.
    if (m->shape.norm == NORM_PRE) {
        // x' = x + Attn(LN1(x)); out = x' + MLP(LN2(x'))
        be->layernorm_forward(l.ln1, l.ln1_mean, l.ln1_rstd, x, model_param(m, PARAM_LN1_W, layer), model_param(m, PARAM_LN1_B, layer), N, C);
        attention_forward(m, a, &l, layer, l.ln1, a->dtmp);
        if (gains) be->scale_rows(a->dtmp, gains, a->B, row);
        be->add(l.resid_mid, x, a->dtmp, (size_t)N * C);
        be->layernorm_forward(l.ln2, l.ln2_mean, l.ln2_rstd, l.resid_mid, model_param(m, PARAM_LN2_W, layer), model_param(m, PARAM_LN2_B, layer), N, C);
        mlp_forward(m, &l, layer, N, l.ln2, a->dtmp);
        if (gains) be->scale_rows(a->dtmp, gains, a->B, row);
        be->add(l.resid_out, l.resid_mid, a->dtmp, (size_t)N * C);
    } else {
        // x' = LN1(x + Attn(x)); out = LN2(x' + MLP(x'))
        attention_forward(m, a, &l, layer, x, a->dtmp);
        if (gains) be->scale_rows(a->dtmp, gains, a->B, row);
        be->add(l.resid_mid, x, a->dtmp, (size_t)N * C);
        be->layernorm_forward(l.ln1, l.ln1_mean, l.ln1_rstd, l.resid_mid, model_param(m, PARAM_LN1_W, layer), model_param(m, PARAM_LN1_B, layer), N, C);
        mlp_forward(m, &l, layer, N, l.ln1, a->dtmp);
        if (gains) be->scale_rows(a->dtmp, gains, a->B, row);
        be->add(l.resid_out, l.ln1, a->dtmp, (size_t)N * C);
        be->layernorm_forward(l.ln2, l.ln2_mean, l.ln2_rstd, l.resid_out, model_param(m, PARAM_LN2_W, layer), model_param(m, PARAM_LN2_B, layer), N, C);
    }
}

static const void *lm_head_weight(const Model *m) {
    return model_param(m, m->shape.tie_embeddings ? PARAM_WTE : PARAM_LM_HEAD, 0);
}

void model_forward(Model *m, Activations *a) {
    const Backend *be = m->be;
    const ModelShape *s = &m->shape;
    int B = a->B, T = a->T, C = s->d_model, V = s->vocab_size, N = B * T;
    a->entropy_reg_sum = 0;
    a->lsd_sum = 0;
    a->adr_sum = 0;
    if (m->has_embedding)
        be->encoder_forward(a->input, a->tokens, model_param(m, PARAM_WTE, 0), model_param(m, PARAM_WPE, 0), B, T, C); // (B,T,C)
    for (int li = 0; li < a->n_local; li++) {
        if (m->r3si) r3si_block_forward(m, a, li, block_input_raw(m, a, li));   // monitor, L_SD, injection
        block_forward(m, a, li);
    }
    if (!m->has_head) return;
    const void *x = model_stage_output(m, a);
    be->layernorm_forward(a->lnf, a->lnf_mean, a->lnf_rstd, x, model_param(m, PARAM_LNF_W, 0), model_param(m, PARAM_LNF_B, 0), N, C);
    be->matmul_forward(a->logits, a->lnf, lm_head_weight(m), NULL, N, C, V);    // (B,T,V)
    be->crossentropy_forward(a->losses, a->logits, a->logits, a->targets, N, V); // logits -> probs in place
}

void model_head_entropies(const Model *m, const Activations *a, double *out) {
    const Backend *be = m->be;
    int B = a->B, NH = m->shape.n_head, T = a->T, BH = B * NH;
    void *ent = be->alloc((size_t)BH * T);
    double *host = xmalloc((size_t)BH * T * sizeof(double));
    for (int li = 0; li < a->n_local; li++) {
        LayerActs l = layer_acts(m, a, li);
        be->attn_row_entropy(ent, l.probs, BH, T);   // (B,NH,T)
        be->download_f64(host, ent, (size_t)BH * T);
        for (int bh = 0; bh < BH; bh++) {
            double sum = 0;
            for (int i = 0; i < T; i++) sum += host[(size_t)bh * T + i];
            out[(size_t)li * BH + bh] = sum / T;
        }
    }
    free(host);
    be->free(ent);
}

double model_loss_sum(const Model *m, const Activations *a) {
    return m->be->sum(a->losses, (size_t)a->B * a->T);
}

// ---- backward ---------------------------------------------------------------------------------

// Backward of attention_forward: dout (B,T,C) is the gradient of its output; dx (+=) (B,T,C) gets
// the gradient of its input x.
static void attention_backward(Model *m, Activations *a, LayerActs *l, int layer, const void *x, const void *dout, void *dx) {
    const Backend *be = m->be;
    const ModelShape *s = &m->shape;
    int B = a->B, T = a->T, C = s->d_model, NH = s->n_head, hs = s->head_size, N = B * T;
    size_t nhead = (size_t)N * C;
    be->zero(a->dattmerged, nhead);
    be->matmul_backward(a->dattmerged, model_grad(m, PARAM_ATTPROJ_W, layer), model_grad(m, PARAM_ATTPROJ_B, layer), dout,
                        l->attmerged, model_param(m, PARAM_ATTPROJ_W, layer), N, C, C);
    be->heads_merge_backward(a->datty, a->dattmerged, B, T, NH, hs);
    be->zero(a->dv, nhead);
    be->attn_values_backward(a->dprobs, a->dv, a->datty, l->probs, l->v, B * NH, T, hs);
    // The regulariser's gradient joins the loss's at the attention weights.
    if (m->entropy_reg_weight > 0) be->attn_entropy_reg_backward(a->dprobs, l->probs, -m->entropy_reg_weight, B * NH, T);
    if (m->adr_weight > 0) head_map_cosines(m, a, l->probs, a->dprobs, m->adr_weight);
    if (s->sga) {
        be->softmax_causal_backward(a->sga_dlogits, a->dprobs, l->probs, B * NH, T);
        sga_backward(m, a, layer - m->layer_begin, a->sga_dlogits, a->dscores);
    } else {
        be->softmax_causal_backward(a->dscores, a->dprobs, l->probs, B * NH, T);
    }
    be->zero(a->dq, nhead);
    be->zero(a->dk, nhead);
    be->attn_scores_backward(a->dq, a->dk, a->dscores, l->q, l->k, 1.0 / (sqrt((double)hs) * m->attn_temperature), B * NH, T, hs);
    be->zero(a->dqkv, 3 * nhead);
    be->heads_split_backward(a->dqkv, a->dq, a->dk, a->dv, B, T, NH, hs);
    be->matmul_backward(dx, model_grad(m, PARAM_QKV_W, layer), model_grad(m, PARAM_QKV_B, layer), a->dqkv, x,
                        model_param(m, PARAM_QKV_W, layer), N, C, 3 * C);
}

// Backward of mlp_forward: dx (+=) gets the gradient of its input x.
static void mlp_backward(Model *m, Activations *a, LayerActs *l, int layer, const void *x, const void *dout, void *dx) {
    const Backend *be = m->be;
    int C = m->shape.d_model, H = m->shape.mlp_hidden, N = a->B * a->T;
    be->zero(a->dfch_gelu, (size_t)N * H);
    be->matmul_backward(a->dfch_gelu, model_grad(m, PARAM_FCPROJ_W, layer), model_grad(m, PARAM_FCPROJ_B, layer), dout,
                        l->fch_gelu, model_param(m, PARAM_FCPROJ_W, layer), N, H, C);
    be->zero(a->dfch, (size_t)N * H);
    be->gelu_backward(a->dfch, l->fch, a->dfch_gelu, (size_t)N * H);
    be->matmul_backward(dx, model_grad(m, PARAM_FC_W, layer), model_grad(m, PARAM_FC_B, layer), a->dfch, x,
                        model_param(m, PARAM_FC_W, layer), N, C, H);
}

// On entry a->dresidual holds the gradient of the block's output; on exit, of its input.
static void block_backward(Model *m, Activations *a, int li) {
    const Backend *be = m->be;
    int layer = m->layer_begin + li, C = m->shape.d_model, N = a->B * a->T;
    size_t n = (size_t)N * C;
    LayerActs l = layer_acts(m, a, li);
    const void *x = block_input(m, a, li);
    if (m->layer_skip && m->layer_skip[layer]) return;   // identity: the gradient passes unchanged
    const void *gains = branch_gains(m, a, li, 0);
    if (m->shape.norm == NORM_PRE) {
        // The residual gradient passes straight through both adds; each branch adds its share.
        be->zero(a->dln, n);
        mlp_backward(m, a, &l, layer, l.ln2, gained(m, a, gains, a->dtmp, a->dresidual), a->dln);
        be->layernorm_backward(a->dresidual, model_grad(m, PARAM_LN2_W, layer), model_grad(m, PARAM_LN2_B, layer), a->dln,
                               l.resid_mid, model_param(m, PARAM_LN2_W, layer), l.ln2_mean, l.ln2_rstd, N, C);
        be->zero(a->dln, n);
        attention_backward(m, a, &l, layer, l.ln1, gained(m, a, gains, a->dtmp, a->dresidual), a->dln);
        be->layernorm_backward(a->dresidual, model_grad(m, PARAM_LN1_W, layer), model_grad(m, PARAM_LN1_B, layer), a->dln,
                               x, model_param(m, PARAM_LN1_W, layer), l.ln1_mean, l.ln1_rstd, N, C);
    } else {
        // dtmp: gradient of resid_out = x' + MLP(x'), which is also the direct part of dx'.
        be->zero(a->dtmp, n);
        be->layernorm_backward(a->dtmp, model_grad(m, PARAM_LN2_W, layer), model_grad(m, PARAM_LN2_B, layer), a->dresidual,
                               l.resid_out, model_param(m, PARAM_LN2_W, layer), l.ln2_mean, l.ln2_rstd, N, C);
        // dtmp is read before it is accumulated into
        mlp_backward(m, a, &l, layer, l.ln1, gained(m, a, gains, a->dln, a->dtmp), a->dtmp);
        be->zero(a->dresidual, n);
        be->layernorm_backward(a->dresidual, model_grad(m, PARAM_LN1_W, layer), model_grad(m, PARAM_LN1_B, layer), a->dtmp,
                               l.resid_mid, model_param(m, PARAM_LN1_W, layer), l.ln1_mean, l.ln1_rstd, N, C);
        attention_backward(m, a, &l, layer, x, gained(m, a, gains, a->dln, a->dresidual), a->dresidual);
    }
}

void *model_stage_output(const Model *m, const Activations *a) {
    return a->n_local > 0 ? model_block_output(m, a, a->n_local - 1) : a->input;
}

void model_backward(Model *m, Activations *a, double dloss, GradReadyFn ready, void *ready_ctx) {
    const Backend *be = m->be;
    const ModelShape *s = &m->shape;
    int B = a->B, T = a->T, C = s->d_model, V = s->vocab_size, N = B * T;
    size_t n = (size_t)N * C;
    if (m->has_head) {
        const void *x = model_stage_output(m, a);
        be->crossentropy_backward(a->logits, a->logits, a->targets, dloss, N, V);   // probs -> dlogits in place
        be->zero(a->dln, n);
        be->matmul_backward(a->dln, model_grad(m, s->tie_embeddings ? PARAM_WTE : PARAM_LM_HEAD, 0), NULL, a->logits, a->lnf,
                            lm_head_weight(m), N, C, V);
        be->zero(a->dresidual, n);
        be->layernorm_backward(a->dresidual, model_grad(m, PARAM_LNF_W, 0), model_grad(m, PARAM_LNF_B, 0), a->dln, x,
                               model_param(m, PARAM_LNF_W, 0), a->lnf_mean, a->lnf_rstd, N, C);
        if (ready) ready(ready_ctx, m->regions[REGION_HEAD], 0);
    }
    for (int li = a->n_local - 1; li >= 0; li--) {
        block_backward(m, a, li);
        if (m->r3si) r3si_block_backward(m, a, li, block_input_raw(m, a, li));
        if (ready) ready(ready_ctx, model_layer_region(m, m->layer_begin + li), 0);
    }
    if (m->has_embedding)
        be->encoder_backward(model_grad(m, PARAM_WTE, 0), model_grad(m, PARAM_WPE, 0), a->dresidual, a->tokens, B, T, C);
    // The embedding region is complete here on the first stage; on the last stage it holds the
    // tied head's share of wte, complete since the head's backward.
    if (ready && m->regions[REGION_EMBEDDING].numel > 0) ready(ready_ctx, m->regions[REGION_EMBEDDING], 1);
}

void model_head_gradients(const Model *m, int layer, double *out) {
    const Backend *be = m->be;
    int C = m->shape.d_model, NH = m->shape.n_head, hs = m->shape.head_size;
    double *qkv = xmalloc(sizeof(double) * 3 * C * C), *proj = xmalloc(sizeof(double) * C * C);
    be->download_f64(qkv, model_grad(m, PARAM_QKV_W, layer), (size_t)3 * C * C);       // (3C, C)
    be->download_f64(proj, model_grad(m, PARAM_ATTPROJ_W, layer), (size_t)C * C);      // (C, C)
    size_t n = (size_t)4 * hs * C;
    for (int h = 0; h < NH; h++) {
        double *g = out + (size_t)h * n;
        // rows h hs .. (h+1) hs of W_q, W_k and W_v: the head's query, key and value maps
        for (int part = 0; part < 3; part++)
            memcpy(g + (size_t)part * hs * C, qkv + ((size_t)part * C + (size_t)h * hs) * C, sizeof(double) * hs * C);
        // columns h hs .. (h+1) hs of W_o: where the head's output enters the projection
        for (int row = 0; row < C; row++)
            for (int d = 0; d < hs; d++) g[(size_t)3 * hs * C + (size_t)row * hs + d] = proj[(size_t)row * C + h * hs + d];
    }
    free(qkv); free(proj);
}
