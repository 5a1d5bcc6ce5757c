// model.c: parameter table, initialisation and the forward/backward passes of the GPT decoder.
// Every line of the passes is one backend op or one call into a module; the math is in the
// backends and the modules.
#include "model.h"
#include <math.h>
#include <string.h>
#include "common.h"
#include "rng.h"

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
        .attention = attention_variant_find(cfg->attention_kind),
        .cfg = cfg,
    };
    if (!s.attention) die(EXIT_BAD_INPUT, "attention.kind: \"%s\" is not an attention variant", cfg->attention_kind);
    if (cfg->attention_fused) {
        if (!s.attention->fused_form) die(EXIT_BAD_INPUT, "attention.fused: attention.kind \"%s\" has no fused form", cfg->attention_kind);
        s.attention = s.attention->fused_form;
    }
    return s;
}

// A shape built by hand (tests) may leave the options out: the defaults, plain SDPA.
static ModelShape with_defaults(ModelShape s) {
    static Config defaults;
    static int have_defaults;
    if (!s.cfg) {
        if (!have_defaults) { config_defaults(&defaults); have_defaults = 1; }
        s.cfg = &defaults;
    }
    if (!s.attention) s.attention = attention_variant_find(s.cfg->attention_kind);
    return s;
}

int param_in_layer(const ParamInfo *p, int layer) {
    if (p->n_listed == 0) return 1;
    for (int i = 0; i < p->n_listed; i++) if (p->listed[i] == layer) return 1;
    return 0;
}

int param_row(const ParamInfo *p, int layer) {
    if (p->n_listed == 0) return layer;
    for (int i = 0; i < p->n_listed; i++) if (p->listed[i] == layer) return i;
    return -1;
}

int param_rows(const ParamInfo *p, int n_layer) { return p->n_listed ? p->n_listed : n_layer; }

static ParamInfo param_from_spec(const ParamSpec *spec, ParamRole role) {
    ParamInfo p = {0};
    p.name = spec->name;
    p.role = role;
    p.slice_ndim = spec->ndim;
    p.slice_shape[0] = spec->shape[0];
    p.slice_shape[1] = spec->shape[1];
    p.slice_numel = (size_t)spec->shape[0] * (spec->ndim == 2 ? (size_t)spec->shape[1] : 1);
    p.decay = spec->decay;
    p.init = spec->init;
    p.init_value = spec->init_value;
    p.stream = spec->stream;
    p.n_listed = spec->n_layers;
    memcpy(p.listed, spec->layers, sizeof p.listed);
    p.exists = spec->name != NULL;   // a module may hold an index open without a tensor
    return p;
}

// The model's own parameters, in ParamId order.
static void describe_core_params(const ModelShape *s, ParamInfo p[NUM_CORE_PARAMS]) {
    long C = s->d_model, V = s->vocab_size, T = s->seq_len, H = s->mlp_hidden;
    double std = s->init_std;
    // Residual projections write into the residual stream once per block; GPT-2 scales their
    // init by 1/sqrt(2 L) so the stream's variance does not grow with depth.
    double resid_std = s->scaled_init ? std / sqrt(2.0 * s->n_layer) : std;
    struct { ParamId id; ParamRole role; ParamSpec spec; } rows[] = {
        {PARAM_WTE, ROLE_EMBEDDING, {"wte", 2, {V, C}, INIT_NORMAL, std, 1, PARAM_STREAM_WTE, 0, {0}}},
        {PARAM_WPE, ROLE_EMBEDDING, {"wpe", 2, {T, C}, INIT_NORMAL, std, 1, PARAM_STREAM_WPE, 0, {0}}},
        {PARAM_LN1_W, ROLE_BLOCK, {"blocks.ln1_w", 1, {C, 0}, INIT_ONE, 0, 0, PARAM_STREAM_LN1_W, 0, {0}}},
        {PARAM_LN1_B, ROLE_BLOCK, {"blocks.ln1_b", 1, {C, 0}, INIT_ZERO, 0, 0, PARAM_STREAM_LN1_B, 0, {0}}},
        {PARAM_QKV_W, ROLE_BLOCK, {"blocks.qkv_w", 2, {3 * C, C}, INIT_NORMAL, std, 1, PARAM_STREAM_QKV_W, 0, {0}}},
        {PARAM_QKV_B, ROLE_BLOCK, {"blocks.qkv_b", 1, {3 * C, 0}, INIT_ZERO, 0, 0, PARAM_STREAM_QKV_B, 0, {0}}},
        {PARAM_ATTPROJ_W, ROLE_BLOCK, {"blocks.attproj_w", 2, {C, C}, INIT_NORMAL, resid_std, 1, PARAM_STREAM_ATTPROJ_W, 0, {0}}},
        {PARAM_ATTPROJ_B, ROLE_BLOCK, {"blocks.attproj_b", 1, {C, 0}, INIT_ZERO, 0, 0, PARAM_STREAM_ATTPROJ_B, 0, {0}}},
        {PARAM_LN2_W, ROLE_BLOCK, {"blocks.ln2_w", 1, {C, 0}, INIT_ONE, 0, 0, PARAM_STREAM_LN2_W, 0, {0}}},
        {PARAM_LN2_B, ROLE_BLOCK, {"blocks.ln2_b", 1, {C, 0}, INIT_ZERO, 0, 0, PARAM_STREAM_LN2_B, 0, {0}}},
        {PARAM_FC_W, ROLE_BLOCK, {"blocks.fc_w", 2, {H, C}, INIT_NORMAL, std, 1, PARAM_STREAM_FC_W, 0, {0}}},
        {PARAM_FC_B, ROLE_BLOCK, {"blocks.fc_b", 1, {H, 0}, INIT_ZERO, 0, 0, PARAM_STREAM_FC_B, 0, {0}}},
        {PARAM_FCPROJ_W, ROLE_BLOCK, {"blocks.fcproj_w", 2, {C, H}, INIT_NORMAL, resid_std, 1, PARAM_STREAM_FCPROJ_W, 0, {0}}},
        {PARAM_FCPROJ_B, ROLE_BLOCK, {"blocks.fcproj_b", 1, {C, 0}, INIT_ZERO, 0, 0, PARAM_STREAM_FCPROJ_B, 0, {0}}},
        {PARAM_LNF_W, ROLE_HEAD, {"lnf_w", 1, {C, 0}, INIT_ONE, 0, 0, PARAM_STREAM_LNF_W, 0, {0}}},
        {PARAM_LNF_B, ROLE_HEAD, {"lnf_b", 1, {C, 0}, INIT_ZERO, 0, 0, PARAM_STREAM_LNF_B, 0, {0}}},
        {PARAM_LM_HEAD, ROLE_HEAD, {"lm_head", 2, {V, C}, INIT_NORMAL, std, 1, PARAM_STREAM_LM_HEAD, 0, {0}}},
    };
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) p[rows[r].id] = param_from_spec(&rows[r].spec, rows[r].role);
    p[PARAM_LM_HEAD].exists = !s->tie_embeddings;
}

// The whole table: the core's parameters, the attention variant's, then each hook's (block
// parameters all). Fills the module index ranges when m is not NULL.
typedef struct {
    int n;
    ParamInfo params[MODEL_MAX_PARAMS];
    int attn_param0, attn_n;
    int n_hooks;
    const BlockHook *hooks[MAX_BLOCK_HOOKS];
    int hook_param0[MAX_BLOCK_HOOKS], hook_n[MAX_BLOCK_HOOKS];
} ParamTable;

static int append_module_params(ParamTable *t, int n_declared, const ParamSpec *specs) {
    if (n_declared > MODULE_MAX_PARAMS) die(EXIT_FAILURE_OTHER, "internal: a module declares %d parameters", n_declared);
    for (int i = 0; i < n_declared; i++) t->params[t->n++] = param_from_spec(&specs[i], ROLE_BLOCK);
    return n_declared;
}

static void describe_params(const ModelShape *s, ParamTable *t) {
    memset(t, 0, sizeof *t);
    describe_core_params(s, t->params);
    t->n = NUM_CORE_PARAMS;
    ParamSpec specs[MODULE_MAX_PARAMS];
    t->attn_param0 = t->n;
    t->attn_n = append_module_params(t, s->attention->declare_params(s, specs), specs);
    t->n_hooks = block_hooks_for_config(s->cfg, t->hooks);
    for (int h = 0; h < t->n_hooks; h++) {
        t->hook_param0[h] = t->n;
        t->hook_n[h] = t->hooks[h]->declare_params ? append_module_params(t, t->hooks[h]->declare_params(s, specs), specs) : 0;
    }
    // Each parameter draws its own random stream: two with the same tag would start equal.
    for (int i = 0; i < t->n; i++)
        for (int j = 0; j < i; j++)
            if (t->params[i].exists && t->params[j].exists && t->params[i].stream == t->params[j].stream)
                die(EXIT_FAILURE_OTHER, "internal: parameters %s and %s share random stream %u", t->params[i].name,
                    t->params[j].name, t->params[i].stream);
}

static size_t param_total(const ParamInfo *p, int n_layer) {
    if (!p->exists) return 0;
    return p->slice_numel * (p->role == ROLE_BLOCK ? (size_t)param_rows(p, n_layer) : 1);
}

ModuleParamCounts model_count_params(const ModelShape *shape) {
    ModelShape resolved = with_defaults(*shape);
    const ModelShape *s = &resolved;
    ParamTable t;
    describe_params(s, &t);
    ModuleParamCounts c = {0};
    for (int i = 0; i < t.n; i++) c.total += param_total(&t.params[i], s->n_layer);
    for (int i = 0; i < t.attn_n; i++) c.attention_variant += param_total(&t.params[t.attn_param0 + i], s->n_layer);
    c.n_hooks = t.n_hooks;
    for (int h = 0; h < t.n_hooks; h++)
        for (int i = 0; i < t.hook_n[h]; i++) c.hooks[h] += param_total(&t.params[t.hook_param0[h] + i], s->n_layer);
    return c;
}

// Arena layout, chosen so that data-parallel reduction works on contiguous buckets:
//   [embedding region: wte, wpe | layer 0 region | layer 1 region | ... | head region: lnf, lm_head]
// Each layer region holds that layer's slice of every block parameter it has. Every slice starts
// on a 16-element (64-byte) boundary for vector loads.
#define ALIGN_ELEMS(n) (((n) + 15) / 16 * 16)

// Lays the present parameters of `role` (not per layer) out from *offset on, as one region.
static void place_region(Model *m, ParamRole role, ModelRegion *region, size_t *offset) {
    region->offset = *offset;
    for (int i = 0; i < m->n_params; i++) {
        ParamInfo *p = &m->params[i];
        if (!p->present || p->role != role) continue;
        p->offset = *offset;
        *offset += ALIGN_ELEMS(p->numel);
    }
    region->numel = *offset - region->offset;
}

void model_init(Model *m, const Backend *be, ModelShape shape, int layer_begin, int layer_end, int has_embedding, int has_head,
                size_t arena_multiple) {
    shape = with_defaults(shape);
    *m = (Model){.shape = shape, .be = be, .layer_begin = layer_begin, .layer_end = layer_end,
                 .has_embedding = has_embedding, .has_head = has_head};
    ParamTable t;
    describe_params(&shape, &t);
    m->n_params = t.n;
    memcpy(m->params, t.params, sizeof t.params);
    m->attn_param0 = t.attn_param0;
    m->attn_n_params = t.attn_n;
    m->n_hooks = t.n_hooks;
    int n_local = layer_end - layer_begin;
    for (int i = 0; i < m->n_params; i++) {
        ParamInfo *p = &m->params[i];
        int layers_here = 0;
        for (int l = layer_begin; p->role == ROLE_BLOCK && l < layer_end; l++) layers_here += param_in_layer(p, l);
        switch (p->role) {
        case ROLE_EMBEDDING:
            // The tied LM head reads wte, so the last stage holds (a copy of) it too.
            p->present = has_embedding || (i == PARAM_WTE && has_head && shape.tie_embeddings);
            break;
        case ROLE_BLOCK: p->present = layers_here > 0; break;
        case ROLE_HEAD: p->present = has_head; break;
        }
        p->present = p->present && p->exists;
        p->numel = p->present ? p->slice_numel * (p->role == ROLE_BLOCK ? (size_t)layers_here : 1) : 0;
    }
    size_t offset = 0;
    place_region(m, ROLE_EMBEDDING, &m->regions[REGION_EMBEDDING], &offset);
    // Block parameters: layer by layer, each layer's slices in table order.
    m->layer_offset = xcalloc((size_t)n_local + 1, sizeof(size_t));
    m->slice_offset = xmalloc(sizeof(size_t) * (size_t)m->n_params * (size_t)(n_local > 0 ? n_local : 1));
    for (int li = 0; li < n_local; li++) {
        m->layer_offset[li] = offset;
        for (int i = 0; i < m->n_params; i++) {
            ParamInfo *p = &m->params[i];
            size_t *slot = &m->slice_offset[(size_t)i * n_local + li];
            *slot = SIZE_MAX;
            if (!p->present || p->role != ROLE_BLOCK || !param_in_layer(p, layer_begin + li)) continue;
            *slot = offset;
            offset += ALIGN_ELEMS(p->slice_numel);
        }
    }
    m->layer_offset[n_local] = offset;
    place_region(m, ROLE_HEAD, &m->regions[REGION_HEAD], &offset);
    if (arena_multiple > 1) offset = (offset + arena_multiple - 1) / arena_multiple * arena_multiple;
    m->num_params = offset;
    m->params_mem = be->alloc(offset);
    m->grads_mem = be->alloc(offset);

    const Config *cfg = shape.cfg;
    // The mean runs over layers, heads and rows i >= 1 of every sequence of the global batch.
    if (cfg->reg_entropy_coef > 0)
        m->reg.entropy_weight = cfg->reg_entropy_coef / ((double)shape.n_layer * shape.n_head * (shape.seq_len - 1) * cfg->batch_size);
    if (cfg->reg_adr_coef > 0) {
        // The mean runs over layers, head pairs and every sequence of the global batch.
        double pairs = shape.n_head * (shape.n_head - 1) / 2.0;
        m->reg.adr_weight = pairs > 0 ? cfg->reg_adr_coef / (shape.n_layer * pairs * cfg->batch_size) : 0;
    }
    for (int h = 0; h < m->n_hooks; h++) {
        m->hooks[h] = t.hooks[h];
        m->hook_param0[h] = t.hook_param0[h];
        m->hook_n_params[h] = t.hook_n[h];
        m->hook_state[h] = t.hooks[h]->create ? t.hooks[h]->create(be, &m->shape, layer_begin, layer_end) : NULL;
    }
}

void model_free(Model *m) {
    for (int h = 0; h < m->n_hooks; h++)
        if (m->hooks[h]->destroy) m->hooks[h]->destroy(m->hook_state[h], m->be);
    if (m->head_mask) m->be->free(m->head_mask);
    m->be->free(m->params_mem);
    m->be->free(m->grads_mem);
    free(m->layer_offset);
    free(m->slice_offset);
    memset(m, 0, sizeof *m);
}

void *model_hook_state(const Model *m, const BlockHook *hook) {
    for (int h = 0; h < m->n_hooks; h++) if (m->hooks[h] == hook) return m->hook_state[h];
    return NULL;
}

int model_find_param(const Model *m, const char *name) {
    for (int i = 0; i < m->n_params; i++) if (m->params[i].exists && !strcmp(m->params[i].name, name)) return i;
    return -1;
}

size_t model_param_offset(const Model *m, int id, int layer) {
    const ParamInfo *p = &m->params[id];
    if (!p->present) die(EXIT_FAILURE_OTHER, "internal: parameter %s is not on this stage", p->name);
    if (p->role != ROLE_BLOCK) return p->offset;
    if (layer < m->layer_begin || layer >= m->layer_end)
        die(EXIT_FAILURE_OTHER, "internal: layer %d of %s is not on this stage", layer, p->name);
    size_t o = m->slice_offset[(size_t)id * (m->layer_end - m->layer_begin) + (layer - m->layer_begin)];
    if (o == SIZE_MAX) die(EXIT_FAILURE_OTHER, "internal: parameter %s has no slice in layer %d", p->name, layer);
    return o;
}

ModelRegion model_layer_region(const Model *m, int layer) {
    int li = layer - m->layer_begin;
    ModelRegion r = {m->layer_offset[li], m->layer_offset[li + 1] - m->layer_offset[li]};
    return r;
}

void *model_param(const Model *m, int id, int layer) { return be_offset(m->be, m->params_mem, model_param_offset(m, id, layer)); }
void *model_grad(const Model *m, int id, int layer) { return be_offset(m->be, m->grads_mem, model_param_offset(m, id, layer)); }

void model_init_weights(Model *m, uint64_t seed) {
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->params[i];
        if (!p->present) continue;
        int first = p->role == ROLE_BLOCK ? m->layer_begin : 0;
        int last = p->role == ROLE_BLOCK ? m->layer_end : 1;
        double *host = xmalloc(p->slice_numel * sizeof(double));
        for (int layer = first; layer < last; layer++) {
            if (p->role == ROLE_BLOCK && !param_in_layer(p, layer)) continue;
            // The tied head's copy of wte on the last stage draws the same stream as the first stage's.
            uint64_t stream = ((uint64_t)p->stream << 32) | (uint64_t)layer;
            for (size_t e = 0; e < p->slice_numel; e++) {
                switch (p->init) {
                case INIT_NORMAL: host[e] = (double)(float)(p->init_value * rng_normal(seed, stream, e)); break;
                case INIT_ZERO: host[e] = 0; break;
                case INIT_ONE: host[e] = 1; break;
                case INIT_CONSTANT: host[e] = p->init_value; break;
                }
            }
            m->be->upload_f64(model_param(m, i, layer), host, p->slice_numel);
        }
        free(host);
    }
}

// ---- activations ------------------------------------------------------------------------------

void activations_init(Activations *a, const Model *m, int B) {
    const Backend *be = m->be;
    const ModelShape *s = &m->shape;
    memset(a, 0, sizeof *a);
    size_t T = s->seq_len, C = s->d_model, H = s->mlp_hidden, V = s->vocab_size;
    size_t N = (size_t)B * T, Lc = (size_t)(m->layer_end - m->layer_begin);
    a->B = B;
    a->T = (int)T;
    a->n_local = (int)Lc;
    a->recompute = s->cfg->recompute;
    // "block" keeps one layer of every block tensor (rebuilt in backward) except the block
    // outputs; "attention" and "block" keep one layer of the variant's (B,NH,T,T) tensors.
    size_t Lb = a->recompute == RECOMPUTE_BLOCK ? 1 : Lc;
    size_t Lpre = s->norm == NORM_PRE ? Lc : Lb;   // resid_out: the block output pre-norm
    a->kept = (int)Lb;
    a->held = -1;
    // train.activations = "bf16": the tensors backward reads only as a GEMM's input are computed in
    // fp32 into one layer of scratch (the forward pass reads them there, unchanged), and each
    // layer's is kept as a bf16 copy, unpacked into the scratch before its GEMM in backward. Under
    // "block" these tensors are one layer of scratch already, rebuilt in backward: nothing to keep.
    a->bf16 = s->cfg->activations == ACTIVATIONS_BF16 && a->recompute != RECOMPUTE_BLOCK;
    size_t Lg = a->bf16 ? 1 : Lb;                                          // ln1, attmerged, fch_gelu
    size_t Lln2 = s->norm == NORM_POST ? Lc : Lg;   // ln2: the block output post-norm, stays fp32
    // An evaluation pass until the caller says otherwise.
    a->pass = (PassContext){.step = {.training = 0, .step = 0, .loss_scale = 1, .attn_temperature = 1, .micro_batches = 1}};
    size_t floats = 0;
#define ALLOC(field, n) do { a->field = be->alloc(n); floats += (n); } while (0)
    a->tokens = be->alloc_i32(N);
    a->targets = be->alloc_i32(N);
    ALLOC(input, N * C);
    ALLOC(ln1, Lg * N * C); ALLOC(ln1_mean, Lb * N); ALLOC(ln1_rstd, Lb * N);
    ALLOC(qkv, N * 3 * C);   // one layer: split into the heads at once, and backward reads q, k, v
    ALLOC(q, Lb * N * C); ALLOC(k, Lb * N * C); ALLOC(v, Lb * N * C);
    ALLOC(atty, Lb * N * C);
    ALLOC(attmerged, Lg * N * C);
    ALLOC(resid_mid, Lb * N * C);
    ALLOC(ln2, Lln2 * N * C); ALLOC(ln2_mean, Lb * N); ALLOC(ln2_rstd, Lb * N);
    ALLOC(fch_slope, Lb * N * H); ALLOC(fch_gelu, Lg * N * H);
    ALLOC(resid_out, Lpre * N * C);
    size_t halves = 0;   // bf16 elements
    if (a->bf16) {
        a->ln1_bf16 = be->alloc_bf16(Lc * N * C);
        a->attmerged_bf16 = be->alloc_bf16(Lc * N * C);
        a->fch_gelu_bf16 = be->alloc_bf16(Lc * N * H);
        halves += 2 * Lc * N * C + Lc * N * H;
        if (s->norm == NORM_PRE) { a->ln2_bf16 = be->alloc_bf16(Lc * N * C); halves += Lc * N * C; }
    }
    if (m->has_head) {
        ALLOC(lnf, N * C); ALLOC(lnf_mean, N); ALLOC(lnf_rstd, N);
        ALLOC(logits, N * V);
        ALLOC(losses, N);
    }
    ALLOC(dresidual, N * C); ALLOC(dtmp, N * C); ALLOC(dln, N * C);
    ALLOC(dqkv, N * 3 * C);
    ALLOC(dq, N * C); ALLOC(dk, N * C); ALLOC(dv, N * C); ALLOC(datty, N * C);
    ALLOC(dattmerged, N * C);
    ALLOC(dfch, N * H);
#undef ALLOC
    a->attn_slot = s->attention->slot_create(be, s, (int)Lc, B, &floats);   // keeps one layer under recompute
    // The hooks keep their tensors per layer under every mode: they are not recomputed (R3SI's
    // block input has side effects: the monitor's Gram sums, L_SD's sum, the injection ratio).
    for (int h = 0; h < m->n_hooks; h++)
        if (m->hooks[h]->slot_create) a->hook_slot[h] = m->hooks[h]->slot_create(m->hook_state[h], be, s, (int)Lc, B, &floats);
    a->block_in = xcalloc(Lc * (size_t)(m->n_hooks + 1) + 1, sizeof(void *));
    a->bytes = floats * be->elem_size + halves * sizeof(uint16_t) + 2 * N * sizeof(int32_t);
}

void activations_free(Activations *a, const Model *m) {
    const Backend *be = m->be;
    void *ptrs[] = {a->tokens, a->targets, a->input, a->ln1, a->ln1_mean, a->ln1_rstd, a->qkv, a->q, a->k, a->v,
                    a->atty, a->attmerged, a->resid_mid, a->ln2, a->ln2_mean, a->ln2_rstd, a->fch_slope,
                    a->fch_gelu, a->resid_out, a->lnf, a->lnf_mean, a->lnf_rstd, a->logits, a->losses,
                    a->dresidual, a->dtmp, a->dln, a->dqkv, a->dq, a->dk, a->dv, a->datty,
                    a->dattmerged, a->dfch, a->ln1_bf16, a->attmerged_bf16, a->ln2_bf16,
                    a->fch_gelu_bf16};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++) if (ptrs[i]) be->free(ptrs[i]);
    if (a->attn_slot) m->shape.attention->slot_free(be, a->attn_slot);
    for (int h = 0; h < m->n_hooks; h++)
        if (a->hook_slot[h]) m->hooks[h]->slot_free(m->hook_state[h], be, a->hook_slot[h]);
    free(a->block_in);
    memset(a, 0, sizeof *a);
}

// Slices of the layer-stacked activations for local layer li.
typedef struct {
    void *ln1, *ln1_mean, *ln1_rstd, *qkv, *q, *k, *v, *atty, *attmerged, *resid_mid;
    void *ln2, *ln2_mean, *ln2_rstd, *fch_slope, *fch_gelu, *resid_out;
    // the layer's bf16 copies of ln1, attmerged, ln2 (B,T,C) and fch_gelu (B,T,H); NULL unless bf16
    void *ln1_bf16, *attmerged_bf16, *ln2_bf16, *fch_gelu_bf16;
} LayerActs;

static LayerActs layer_acts(const Model *m, const Activations *a, int li_) {
    const Backend *be = m->be;
    const ModelShape *s = &m->shape;
    size_t N = (size_t)a->B * a->T, C = s->d_model, H = s->mlp_hidden;
    // The block output (resid_out pre-norm, ln2 post-norm) stays per layer; the rest lives at
    // li % kept (one shared layer under "block").
    size_t out = (size_t)li_, li = (size_t)(li_ % a->kept);
    // Under bf16 the GEMM-only tensors' fp32 form is one layer of scratch; their copies are per layer.
    size_t lg = a->bf16 ? 0 : li;
    LayerActs l = {
        .ln1 = be_offset(be, a->ln1, lg * N * C),
        .ln1_mean = be_offset(be, a->ln1_mean, li * N),
        .ln1_rstd = be_offset(be, a->ln1_rstd, li * N),
        .qkv = a->qkv,
        .q = be_offset(be, a->q, li * N * C),
        .k = be_offset(be, a->k, li * N * C),
        .v = be_offset(be, a->v, li * N * C),
        .atty = be_offset(be, a->atty, li * N * C),
        .attmerged = be_offset(be, a->attmerged, lg * N * C),
        .resid_mid = be_offset(be, a->resid_mid, li * N * C),
        .ln2 = be_offset(be, a->ln2, (s->norm == NORM_POST ? out : lg) * N * C),
        .ln2_mean = be_offset(be, a->ln2_mean, li * N),
        .ln2_rstd = be_offset(be, a->ln2_rstd, li * N),
        .fch_slope = be_offset(be, a->fch_slope, li * N * H),
        .fch_gelu = be_offset(be, a->fch_gelu, lg * N * H),
        .resid_out = be_offset(be, a->resid_out, (s->norm == NORM_PRE ? out : li) * N * C),
    };
    if (a->bf16) {
        l.ln1_bf16 = bf16_offset(a->ln1_bf16, out * N * C);
        l.attmerged_bf16 = bf16_offset(a->attmerged_bf16, out * N * C);
        l.fch_gelu_bf16 = bf16_offset(a->fch_gelu_bf16, out * N * H);
        if (a->ln2_bf16) l.ln2_bf16 = bf16_offset(a->ln2_bf16, out * N * C);
    }
    return l;
}

void *model_block_output(const Model *m, const Activations *a, int li) {
    LayerActs l = layer_acts(m, a, li);
    // Post-norm blocks end with their second LayerNorm; pre-norm blocks with the residual sum.
    return m->shape.norm == NORM_POST ? l.ln2 : l.resid_out;
}

// The residual stream entering block li: the previous block's output (or the stage's input).
const void *model_block_input(const Model *m, const Activations *a, int li) {
    return li == 0 ? a->input : model_block_output(m, a, li - 1);
}


// The call a module with parameters [param0, param0 + n) gets for local layer li.
static void module_call(const Model *m, Activations *a, int param0, int n, int li, ModuleCall *out) {
    int layer = m->layer_begin + li;
    for (int i = 0; i < n; i++) {
        const ParamInfo *p = &m->params[param0 + i];
        int here = p->present && param_in_layer(p, layer);
        out->param[i] = here ? model_param(m, param0 + i, layer) : NULL;
        out->grad[i] = here ? model_grad(m, param0 + i, layer) : NULL;
    }
    out->call = (LayerCall){m->be, &m->shape, a->B, a->T, layer, li, out->param, out->grad, &a->pass, a->aux};
}

void model_variant_call(const Model *m, Activations *a, int li, ModuleCall *out) {
    module_call(m, a, m->attn_param0, m->attn_n_params, li, out);
}

static void hook_call(const Model *m, Activations *a, int h, int li, ModuleCall *out) {
    module_call(m, a, m->hook_param0[h], m->hook_n_params[h], li, out);
}

// The input of block li after the hooks (what the block reads): block_in[li][n_hooks].
static const void **block_inputs(const Model *m, const Activations *a, int li) {
    return a->block_in + (size_t)li * (m->n_hooks + 1);
}

// ---- bf16 copies (train.activations = "bf16") ---------------------------------------------------
// kept (n) bf16 = x (n) rounded to nearest even, when the tensor has a bf16 copy (kept not NULL).
static void keep_bf16(const Model *m, void *kept, const void *x, size_t n) {
    if (kept) m->be->pack_bf16(kept, x, n);
}

// x (n) = the kept bf16 copy, exactly, before the GEMM in backward that reads x; nothing without
// a copy (x holds the forward pass's fp32 tensor then). Under the CUDA backend's bf16 GEMM
// precision cuBLAS rounds its fp32 operands to bf16 to nearest even, so the GEMM sees the same
// operand values as it would have made of the fp32 tensor; in fp32 GEMMs (the CPU) the difference
// is that rounding, at most 2^-8 relative per element (half a bf16 ulp).
static void restore_bf16(const Model *m, void *x, const void *kept, size_t n) {
    if (kept) m->be->unpack_bf16(x, kept, n);
}

// ---- forward ----------------------------------------------------------------------------------

static AttnCall attention_call(const Model *m, Activations *a, int li, ModuleCall *mc) {
    model_variant_call(m, a, li, mc);
    AttnCall c = {mc->call, 1.0 / (sqrt((double)m->shape.head_size) * a->pass.step.attn_temperature),
                  m->reg.entropy_weight > 0 || m->reg.adr_weight > 0 ? &m->reg : NULL, 0};
    return c;
}

// Causal multi-head self-attention of x (B,T,C) into out (B,T,C), before the output projection's
// residual add. Leaves q, k, v, atty and attmerged (and the variant its tensors) for backward.
// rebuild: the block is being recomputed for backward; the forward pass already added its
// auxiliary sums, so the variant's go to a discarded copy.
static void attention_forward(Model *m, Activations *a, LayerActs *l, int li, const void *x, void *out, int rebuild) {
    const Backend *be = m->be;
    const ModelShape *s = &m->shape;
    int B = a->B, T = a->T, C = s->d_model, NH = s->n_head, hs = s->head_size, N = B * T, layer = m->layer_begin + li;
    ModuleCall mc;
    AttnCall c = attention_call(m, a, li, &mc);
    double discarded[NUM_AUX] = {0};
    if (rebuild) c.layer.aux = discarded;
    be->matmul_forward(l->qkv, x, model_param(m, PARAM_QKV_W, layer), model_param(m, PARAM_QKV_B, layer), N, C, 3 * C); // (B,T,3C)
    be->heads_split(l->q, l->k, l->v, l->qkv, B, T, NH, hs);                             // (B,NH,T,hs) each
    s->attention->core_forward(s->attention, a->attn_slot, &c, l->q, l->k, l->v, l->atty); // (B,NH,T,hs)
    if (m->head_mask) be->head_mask_apply(l->atty, be_offset(be, m->head_mask, (size_t)li * NH), B, NH, T, hs);
    be->heads_merge(l->attmerged, l->atty, B, T, NH, hs);                                // (B,T,C)
    keep_bf16(m, l->attmerged_bf16, l->attmerged, (size_t)N * C);                      // (B,T,C) bf16
    be->matmul_forward(out, l->attmerged, model_param(m, PARAM_ATTPROJ_W, layer), model_param(m, PARAM_ATTPROJ_B, layer), N, C, C);
}

// GELU MLP of x (B,T,C) into out (B,T,C).
static void mlp_forward(Model *m, LayerActs *l, int layer, int N, const void *x, void *out) {
    const Backend *be = m->be;
    int C = m->shape.d_model, H = m->shape.mlp_hidden;
    be->matmul_gelu_forward(l->fch_slope, l->fch_gelu, x, model_param(m, PARAM_FC_W, layer), model_param(m, PARAM_FC_B, layer), N, C,
                            H);                                                                                  // (B,T,H) x2
    keep_bf16(m, l->fch_gelu_bf16, l->fch_gelu, (size_t)N * H);                                                 // (B,T,H) bf16
    be->matmul_forward(out, l->fch_gelu, model_param(m, PARAM_FCPROJ_W, layer), model_param(m, PARAM_FCPROJ_B, layer), N, H, C);
}

// 1 if a hook makes block li the identity in this pass.
static int block_skipped(const Model *m, Activations *a, int li) {
    for (int h = 0; h < m->n_hooks; h++) {
        if (!m->hooks[h]->skips_block) continue;
        ModuleCall mc;
        hook_call(m, a, h, li, &mc);
        if (m->hooks[h]->skips_block(m->hook_state[h], &mc.call)) return 1;
    }
    return 0;
}

// The gains (B) of block li's branches per sequence, drawn in forward, reused in backward; NULL: 1.
static const void *branch_gains(const Model *m, Activations *a, int li, int draw) {
    for (int h = 0; h < m->n_hooks; h++) {
        if (!m->hooks[h]->branch_gains) continue;
        ModuleCall mc;
        hook_call(m, a, h, li, &mc);
        const void *gains = m->hooks[h]->branch_gains(m->hook_state[h], a->hook_slot[h], &mc.call, draw);
        if (gains) return gains;
    }
    return NULL;
}

// dst = src with each sequence's rows multiplied by its gain (the gradient of a gained branch).
static const void *gained(Model *m, Activations *a, const void *gains, void *dst, const void *src) {
    if (!gains) return src;
    size_t n = (size_t)a->T * m->shape.d_model;
    m->be->copy(dst, src, (size_t)a->B * n);
    m->be->scale_rows(dst, gains, a->B, n);
    return dst;
}

// out (B,T,C) = x + the branch output staged in a->dtmp, times each sequence's gain (if any).
static void add_branch(Model *m, Activations *a, const void *gains, void *out, const void *x) {
    size_t row = (size_t)a->T * m->shape.d_model;
    if (gains) m->be->scale_rows(a->dtmp, gains, a->B, row);
    m->be->add(out, x, a->dtmp, (size_t)a->B * row);
}

// Block li's two branches on x (B,T,C), the input after the hooks, into its output and the
// tensors backward reads. rebuild: the same ops again for backward (train.recompute = "block"),
// with the branch gains drawn by the forward pass and no auxiliary sums.
static void block_body_forward(Model *m, Activations *a, int li, const void *x, int rebuild) {
    const Backend *be = m->be;
    int layer = m->layer_begin + li, C = m->shape.d_model, N = a->B * a->T;
    LayerActs l = layer_acts(m, a, li);
    const void *gains = branch_gains(m, a, li, !rebuild);
    // Each branch's output is staged in the dtmp scratch before its (gained) residual add.
    if (m->shape.norm == NORM_PRE) {
        // x' = x + Attn(LN1(x)); out = x' + MLP(LN2(x'))
        be->layernorm_forward(l.ln1, l.ln1_mean, l.ln1_rstd, x, model_param(m, PARAM_LN1_W, layer), model_param(m, PARAM_LN1_B, layer), N, C);
        keep_bf16(m, l.ln1_bf16, l.ln1, (size_t)N * C);   // the qkv GEMM's input
        attention_forward(m, a, &l, li, l.ln1, a->dtmp, rebuild);
        add_branch(m, a, gains, l.resid_mid, x);
        be->layernorm_forward(l.ln2, l.ln2_mean, l.ln2_rstd, l.resid_mid, model_param(m, PARAM_LN2_W, layer), model_param(m, PARAM_LN2_B, layer), N, C);
        keep_bf16(m, l.ln2_bf16, l.ln2, (size_t)N * C);   // the MLP's input
        mlp_forward(m, &l, layer, N, l.ln2, a->dtmp);
        add_branch(m, a, gains, l.resid_out, l.resid_mid);
    } else {
        // x' = LN1(x + Attn(x)); out = LN2(x' + MLP(x'))
        attention_forward(m, a, &l, li, x, a->dtmp, rebuild);
        add_branch(m, a, gains, l.resid_mid, x);
        be->layernorm_forward(l.ln1, l.ln1_mean, l.ln1_rstd, l.resid_mid, model_param(m, PARAM_LN1_W, layer), model_param(m, PARAM_LN1_B, layer), N, C);
        // the MLP's input and the stream into its residual add, but backward reads it only as the
        // MLP's input (its LayerNorm backward reads resid_mid and resid_out)
        keep_bf16(m, l.ln1_bf16, l.ln1, (size_t)N * C);
        mlp_forward(m, &l, layer, N, l.ln1, a->dtmp);
        add_branch(m, a, gains, l.resid_out, l.ln1);
        be->layernorm_forward(l.ln2, l.ln2_mean, l.ln2_rstd, l.resid_out, model_param(m, PARAM_LN2_W, layer), model_param(m, PARAM_LN2_B, layer), N, C);
    }
}

static void block_forward(Model *m, Activations *a, int li) {
    const Backend *be = m->be;
    int C = m->shape.d_model, N = a->B * a->T;
    // The hooks see the stream first (R3SI's monitor, L_SD and injection) and may replace it.
    const void **in = block_inputs(m, a, li);
    in[0] = model_block_input(m, a, li);
    for (int h = 0; h < m->n_hooks; h++) {
        in[h + 1] = in[h];
        if (!m->hooks[h]->block_input) continue;
        ModuleCall mc;
        hook_call(m, a, h, li, &mc);
        in[h + 1] = m->hooks[h]->block_input(m->hook_state[h], a->hook_slot[h], &mc.call, in[h]);
    }
    const void *x = in[m->n_hooks];  // (B,T,C)
    if (block_skipped(m, a, li)) {   // LayerDrop: the block is the identity this step
        be->copy(model_block_output(m, a, li), x, (size_t)N * C);
        return;
    }
    block_body_forward(m, a, li, x, 0);
    a->held = li;   // the scratch holds this layer's tensors until the next layer's forward
}

static const void *lm_head_weight(const Model *m) {
    return model_param(m, m->shape.tie_embeddings ? PARAM_WTE : PARAM_LM_HEAD, 0);
}

void model_forward(Model *m, Activations *a) {
    const Backend *be = m->be;
    const ModelShape *s = &m->shape;
    int B = a->B, T = a->T, C = s->d_model, V = s->vocab_size, N = B * T;
    for (int i = 0; i < NUM_AUX; i++) a->aux[i] = 0;
    if (m->has_embedding)
        be->encoder_forward(a->input, a->tokens, model_param(m, PARAM_WTE, 0), model_param(m, PARAM_WPE, 0), B, T, C); // (B,T,C)
    for (int li = 0; li < a->n_local; li++) block_forward(m, a, li);
    if (!m->has_head) return;
    const void *x = model_stage_output(m, a);
    be->layernorm_forward(a->lnf, a->lnf_mean, a->lnf_rstd, x, model_param(m, PARAM_LNF_W, 0), model_param(m, PARAM_LNF_B, 0), N, C);
    be->matmul_forward(a->logits, a->lnf, lm_head_weight(m), NULL, N, C, V);    // (B,T,V)
    be->crossentropy_forward(a->losses, a->logits, a->logits, a->targets, N, V); // logits -> probs in place
}

static const void *layer_row_entropy(const Model *m, const Activations *a, int li);

void model_head_entropies(const Model *m, const Activations *a, double *out) {
    const Backend *be = m->be;
    int B = a->B, NH = m->shape.n_head, T = a->T, BH = B * NH;
    void *ent = be->alloc((size_t)BH * T);
    double *host = xmalloc((size_t)BH * T * sizeof(double));
    for (int li = 0; li < a->n_local; li++) {
        // A fused form keeps the entropies of its forward pass; the others' come from the weights.
        const void *rows = layer_row_entropy(m, a, li);   // (B,NH,T)
        if (!rows) {
            const void *probs = model_layer_probs(m, a, li);
            if (!probs) die(EXIT_FAILURE_OTHER, "internal: attention variant %s keeps no attention weights", m->shape.attention->name);
            be->attn_row_entropy(ent, probs, BH, T);   // (B,NH,T)
            rows = ent;
        }
        be->download_f64(host, rows, (size_t)BH * T);
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

double model_aux_weight(const Model *m, AuxTerm term, const StepContext *ctx) {
    switch (term) {
    case AUX_ENTROPY_REG: return -m->reg.entropy_weight;
    case AUX_ADR: return m->reg.adr_weight;
    default: break;
    }
    double w = 0;
    for (int h = 0; h < m->n_hooks; h++)
        if (m->hooks[h]->aux_weight) w += m->hooks[h]->aux_weight(m->hook_state[h], term, ctx);
    return w;
}

void model_begin_step(Model *m, const StepContext *ctx) {
    for (int h = 0; h < m->n_hooks; h++)
        if (m->hooks[h]->begin_step) m->hooks[h]->begin_step(m->hook_state[h], ctx);
}

int model_after_gradients(Model *m, Comm *comm, const StepContext *ctx, double tokens, int grads_reduced) {
    HookStepEnv env = {m->be, comm, ctx, tokens, grads_reduced, model_head_gradients, m};
    int measured = 0;
    for (int h = 0; h < m->n_hooks; h++)
        if (m->hooks[h]->after_gradients) measured |= m->hooks[h]->after_gradients(m->hook_state[h], &env);
    return measured;
}

// ---- recomputation (train.recompute) -----------------------------------------------------------
// The same ops as the forward pass on the same kept inputs, so the rebuilt tensors are bitwise
// those of the forward pass; the auxiliary sums are not added again.

// Layer li's attention core from its kept q, k, v, without y (nothing to do when the scratch
// holds it already: the last layer after the forward pass).
static void attention_core_rebuild(Model *m, Activations *a, LayerActs *l, int li) {
    if (a->held == li) return;
    a->held = li;
    ModuleCall mc;
    AttnCall c = attention_call(m, a, li, &mc);
    double discarded[NUM_AUX] = {0};
    c.layer.aux = discarded;
    c.rebuild = 1;
    m->shape.attention->core_forward(m->shape.attention, a->attn_slot, &c, l->q, l->k, l->v, NULL);
}

// Block li from its kept input (after the hooks); a block LayerDrop skipped has nothing to rebuild.
static void block_rebuild(Model *m, Activations *a, int li) {
    if (a->held == li || block_skipped(m, a, li)) return;
    a->held = li;
    block_body_forward(m, a, li, block_inputs(m, a, li)[m->n_hooks], 1);
}

// Whatever of layer li the forward pass did not keep, rebuilt for a reader after the pass.
static void layer_rebuild(Model *m, Activations *a, int li) {
    if (a->recompute == RECOMPUTE_BLOCK) {
        block_rebuild(m, a, li);
    } else if (a->recompute == RECOMPUTE_ATTENTION) {
        LayerActs l = layer_acts(m, a, li);
        attention_core_rebuild(m, a, &l, li);
    }
}

const void *model_layer_probs(const Model *m, const Activations *a, int li) {
    if (!m->shape.attention->layer_probs) return NULL;
    // The rebuild writes only the pass's own scratch (the slot's one layer, the block's shared
    // tensors), which no later op of the pass reads before rebuilding it again.
    if (a->recompute != RECOMPUTE_NONE) layer_rebuild((Model *)m, (Activations *)a, li);
    return m->shape.attention->layer_probs(a->attn_slot, li);
}

// Local layer li's row entropies (B,NH,T) as the variant keeps them (rebuilt like the weights
// under recomputation), or NULL when it keeps none (they come from the weights then).
static const void *layer_row_entropy(const Model *m, const Activations *a, int li) {
    if (!m->shape.attention->layer_row_entropy) return NULL;
    if (a->recompute != RECOMPUTE_NONE) layer_rebuild((Model *)m, (Activations *)a, li);
    return m->shape.attention->layer_row_entropy(a->attn_slot, li);
}

// ---- backward ---------------------------------------------------------------------------------

// Backward of attention_forward: dout (B,T,C) is the gradient of its output; dx (B,T,C) gets the
// gradient of its input x, written as dx_write says.
static void attention_backward(Model *m, Activations *a, LayerActs *l, int li, const void *x, const void *dout, void *dx,
                               GradWrite dx_write) {
    const Backend *be = m->be;
    const ModelShape *s = &m->shape;
    int B = a->B, T = a->T, C = s->d_model, NH = s->n_head, hs = s->head_size, N = B * T, layer = m->layer_begin + li;
    size_t nhead = (size_t)N * C;
    ModuleCall mc;
    AttnCall c = attention_call(m, a, li, &mc);
    // "attention": the core's weights (and the variant's row tensors) of this layer are rebuilt
    // from the kept q, k, v into the slot's one-layer scratch; "block" rebuilt the whole block.
    if (a->recompute == RECOMPUTE_ATTENTION) attention_core_rebuild(m, a, l, li);
    restore_bf16(m, l->attmerged, l->attmerged_bf16, nhead);
    be->matmul_backward(a->dattmerged, GRAD_ASSIGN, model_grad(m, PARAM_ATTPROJ_W, layer), model_grad(m, PARAM_ATTPROJ_B, layer), dout,
                        l->attmerged, model_param(m, PARAM_ATTPROJ_W, layer), N, C, C);
    be->heads_merge_backward(a->datty, a->dattmerged, B, T, NH, hs);
    s->attention->core_backward(s->attention, a->attn_slot, &c, l->q, l->k, l->v, a->datty, a->dq, a->dk, a->dv);
    be->heads_split_backward(a->dqkv, a->dq, a->dk, a->dv, B, T, NH, hs);
    be->matmul_backward(dx, dx_write, model_grad(m, PARAM_QKV_W, layer), model_grad(m, PARAM_QKV_B, layer), a->dqkv, x,
                        model_param(m, PARAM_QKV_W, layer), N, C, 3 * C);
}

// Backward of mlp_forward: dx gets the gradient of its input x, written as dx_write says.
static void mlp_backward(Model *m, Activations *a, LayerActs *l, int layer, const void *x, const void *dout, void *dx,
                         GradWrite dx_write) {
    const Backend *be = m->be;
    int C = m->shape.d_model, H = m->shape.mlp_hidden, N = a->B * a->T;
    restore_bf16(m, l->fch_gelu, l->fch_gelu_bf16, (size_t)N * H);
    be->matmul_backward_gelu(a->dfch, model_grad(m, PARAM_FCPROJ_W, layer), model_grad(m, PARAM_FCPROJ_B, layer), dout, l->fch_gelu,
                             model_param(m, PARAM_FCPROJ_W, layer), l->fch_slope, N, H, C);                         // (B,T,H)
    be->matmul_backward(dx, dx_write, model_grad(m, PARAM_FC_W, layer), model_grad(m, PARAM_FC_B, layer), a->dfch, x,
                        model_param(m, PARAM_FC_W, layer), N, C, H);
}

// On entry a->dresidual holds the gradient of the block's output; on exit, of its input (before
// the hooks: they take their part after).
static void block_backward(Model *m, Activations *a, int li) {
    const Backend *be = m->be;
    int layer = m->layer_begin + li, C = m->shape.d_model, N = a->B * a->T;
    size_t n = (size_t)N * C;
    LayerActs l = layer_acts(m, a, li);
    const void *x = block_inputs(m, a, li)[m->n_hooks];
    if (block_skipped(m, a, li)) return;   // identity: the gradient passes unchanged
    if (a->recompute == RECOMPUTE_BLOCK) block_rebuild(m, a, li);   // its tensors, from its kept input
    const void *gains = branch_gains(m, a, li, 0);
    if (m->shape.norm == NORM_PRE) {
        // The residual gradient passes straight through both adds; each branch adds its share
        // (through dln, which each branch's first product assigns).
        restore_bf16(m, l.ln2, l.ln2_bf16, n);
        mlp_backward(m, a, &l, layer, l.ln2, gained(m, a, gains, a->dtmp, a->dresidual), a->dln, GRAD_ASSIGN);
        be->layernorm_backward(a->dresidual, GRAD_ACCUMULATE, model_grad(m, PARAM_LN2_W, layer), model_grad(m, PARAM_LN2_B, layer),
                               a->dln, l.resid_mid, model_param(m, PARAM_LN2_W, layer), l.ln2_mean, l.ln2_rstd, N, C);
        restore_bf16(m, l.ln1, l.ln1_bf16, n);
        attention_backward(m, a, &l, li, l.ln1, gained(m, a, gains, a->dtmp, a->dresidual), a->dln, GRAD_ASSIGN);
        be->layernorm_backward(a->dresidual, GRAD_ACCUMULATE, model_grad(m, PARAM_LN1_W, layer), model_grad(m, PARAM_LN1_B, layer),
                               a->dln, x, model_param(m, PARAM_LN1_W, layer), l.ln1_mean, l.ln1_rstd, N, C);
    } else {
        // dtmp: gradient of resid_out = x' + MLP(x'), which is also the direct part of dx'.
        be->layernorm_backward(a->dtmp, GRAD_ASSIGN, model_grad(m, PARAM_LN2_W, layer), model_grad(m, PARAM_LN2_B, layer),
                               a->dresidual, l.resid_out, model_param(m, PARAM_LN2_W, layer), l.ln2_mean, l.ln2_rstd, N, C);
        // dtmp is read before it is accumulated into
        restore_bf16(m, l.ln1, l.ln1_bf16, n);
        mlp_backward(m, a, &l, layer, l.ln1, gained(m, a, gains, a->dln, a->dtmp), a->dtmp, GRAD_ACCUMULATE);
        be->layernorm_backward(a->dresidual, GRAD_ASSIGN, model_grad(m, PARAM_LN1_W, layer), model_grad(m, PARAM_LN1_B, layer),
                               a->dtmp, l.resid_mid, model_param(m, PARAM_LN1_W, layer), l.ln1_mean, l.ln1_rstd, N, C);
        attention_backward(m, a, &l, li, x, gained(m, a, gains, a->dln, a->dresidual), a->dresidual, GRAD_ACCUMULATE);
    }
}

void *model_stage_output(const Model *m, const Activations *a) {
    return a->n_local > 0 ? model_block_output(m, a, a->n_local - 1) : a->input;
}

void model_backward(Model *m, Activations *a, double dloss, GradReadyFn ready, void *ready_ctx) {
    const Backend *be = m->be;
    const ModelShape *s = &m->shape;
    int B = a->B, T = a->T, C = s->d_model, V = s->vocab_size, N = B * T;
    if (m->has_head) {
        const void *x = model_stage_output(m, a);
        be->crossentropy_backward(a->logits, a->logits, a->targets, dloss, N, V);   // probs -> dlogits in place
        be->matmul_backward(a->dln, GRAD_ASSIGN, model_grad(m, s->tie_embeddings ? PARAM_WTE : PARAM_LM_HEAD, 0), NULL,
                            a->logits, a->lnf, lm_head_weight(m), N, C, V);
        be->layernorm_backward(a->dresidual, GRAD_ASSIGN, model_grad(m, PARAM_LNF_W, 0), model_grad(m, PARAM_LNF_B, 0), a->dln, x,
                               model_param(m, PARAM_LNF_W, 0), a->lnf_mean, a->lnf_rstd, N, C);
        if (ready) ready(ready_ctx, m->regions[REGION_HEAD], 0);
    }
    for (int li = a->n_local - 1; li >= 0; li--) {
        block_backward(m, a, li);
        const void **in = block_inputs(m, a, li);
        for (int h = m->n_hooks - 1; h >= 0; h--) {
            if (!m->hooks[h]->block_input_backward) continue;
            ModuleCall mc;
            hook_call(m, a, h, li, &mc);
            m->hooks[h]->block_input_backward(m->hook_state[h], a->hook_slot[h], &mc.call, in[h], a->dresidual);
        }
        if (ready) ready(ready_ctx, model_layer_region(m, m->layer_begin + li), 0);
    }
    if (m->has_embedding)
        be->encoder_backward(model_grad(m, PARAM_WTE, 0), model_grad(m, PARAM_WPE, 0), a->dresidual, a->tokens, B, T, C, V);
    // The embedding region is complete here on the first stage; on the last stage it holds the
    // tied head's share of wte, complete since the head's backward.
    if (ready && m->regions[REGION_EMBEDDING].numel > 0) ready(ready_ctx, m->regions[REGION_EMBEDDING], 1);
}

void model_head_gradients(const void *model, int layer, double *out) {
    const Model *m = model;
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
