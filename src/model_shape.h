// model_shape.h: the shape of the decoder (docs/design.md section 2), shared by the model, its attention
// variants and its block hooks. Modules read their own options from `cfg` (the resolved config);
// this header knows no module.
#pragma once
#include "config.h"

typedef struct AttentionVariant AttentionVariant;

typedef struct {
    int n_layer;
    int n_head;
    int d_model;       // C
    int head_size;     // hs = C / n_head
    int seq_len;       // T
    int vocab_size;    // V
    int mlp_hidden;    // round(mlp_ratio * C)
    NormPlacement norm;
    int tie_embeddings;
    double init_std;
    int scaled_init;
    const AttentionVariant *attention;   // attention.kind, from the table of attention_variant.h (NULL: cfg's)
    const Config *cfg;                   // the options of the attention variant and block hooks (NULL: defaults)
} ModelShape;

ModelShape model_shape_from_config(const Config *cfg);
