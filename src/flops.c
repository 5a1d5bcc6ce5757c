#include "flops.h"
#include <string.h>

ParamCounts count_params(const ModelShape *s) {
    size_t L = s->n_layer, C = s->d_model, V = s->vocab_size, T = s->seq_len, H = s->mlp_hidden;
    ParamCounts c = {0};
    c.embedding = V * C + T * C;
    c.attention = L * (3 * C * C + 3 * C + C * C + C);
    c.mlp = L * (H * C + H + C * H + C);
    c.norm = L * 4 * C + 2 * C;
    c.lm_head = s->tie_embeddings ? 0 : V * C;
    ModuleParamCounts modules = model_count_params(s);
    c.variant = modules.attention_variant;
    for (int h = 0; h < modules.n_hooks; h++) c.hooks += modules.hooks[h];
    c.total = c.embedding + c.attention + c.mlp + c.norm + c.lm_head + c.variant + c.hooks;
    c.matmul = L * (4 * C * C + 2 * H * C) + V * C;
    return c;
}

double flops_per_token(const ModelShape *s) {
    ParamCounts c = count_params(s);
    double extra = s->attention->extra_flops_per_token ? s->attention->extra_flops_per_token(s) : 0;
    return 6.0 * (double)c.matmul + 12.0 * s->n_layer * (double)s->d_model * s->seq_len + extra;
}

MemoryEstimate estimate_memory(const ModelShape *s, int micro_batch, int layer_begin, int layer_end, int has_embedding,
                               int has_head, int in_flight, int zero_shards) {
    double L = layer_end - layer_begin, C = s->d_model, V = s->vocab_size, T = s->seq_len, H = s->mlp_hidden;
    double NH = s->n_head, N = (double)micro_batch * T;
    // One layer's (B,NH,T,T) weights of the materialised core; a fused form keeps none (its
    // extra_memory counts what it keeps instead).
    double maps = s->attention->fused ? 0 : micro_batch * NH * T * T;
    ParamCounts c = count_params(s);
    double per_layer = (double)(c.attention + c.mlp + c.variant + c.hooks) / s->n_layer + 4 * C;
    double params = L * per_layer;
    if (has_embedding) params += (double)c.embedding;
    if (has_head) params += 2 * C + (s->tie_embeddings ? (has_embedding ? 0 : V * C) : V * C);
    MemoryEstimate m;
    m.params_bytes = 4 * params;
    m.grads_bytes = 4 * params;
    m.optimizer_bytes = 8 * params / zero_shards;
    // Saved per layer (see Activations in model.h): 12 (B,T,C)-sized tensors (ln1, qkv x3, q, k, v,
    // atty, attmerged, resid_mid, ln2, resid_out), 2 (B,T,H), the attention weights (B,NH,T,T) and
    // 4 row statistics; per micro-batch the stage input and, on the last stage, the head's tensors.
    double saved = L * (12 * N * C + 2 * N * H + maps + 4 * N) + N * C;
    if (has_head) saved += N * C + 2 * N + N * V + N;
    // Scratch reused by every layer: scores, dprobs, dscores and 11 (B,T,C)-sized gradients.
    double scratch = 3 * maps + 11 * N * C + 2 * N * H;
    // ADR's Gram scratch; stochastic depth's gains.
    scratch += NH * NH;
    if (!strcmp(s->cfg->drop_mode, "stochastic_depth") && s->cfg->drop_p > 0) saved += L * micro_batch;
    if (s->attention->extra_memory) {
        double saved_per_layer = 0;
        s->attention->extra_memory(s, micro_batch, &saved_per_layer, &scratch);
        saved += L * saved_per_layer;
    }
    const Config *cfg = s->cfg;
    if (cfg->r3si_enabled) {
        if (cfg->r3si_inject) saved += L * (N * C + N * cfg->r3si_ds);
        scratch += 3 * N * C + N * cfg->r3si_k + N * cfg->r3si_ds + C * C;
    }
    // Token ids and targets, int32.
    double ids = 2 * N;
    m.activation_bytes = 4 * (in_flight * (saved + ids) + scratch);
    return m;
}
