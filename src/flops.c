#include "flops.h"

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
