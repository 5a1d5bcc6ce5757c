// flops.h: analytic parameter counts and FLOPs of a model, for `info`, MFU and the log (memory:
// memory_estimate.h, from the allocations themselves).
#pragma once
#include <stddef.h>
#include "model.h"

typedef struct {
    size_t total;            // all trainable parameters (tied head counted once)
    size_t embedding;        // wte + wpe
    size_t attention;        // qkv + output projection, weights and biases, all layers
    size_t mlp;              // fc + fc projection, all layers
    size_t norm;             // every LayerNorm weight and bias
    size_t lm_head;          // 0 when tied
    size_t variant;          // the attention variant's own (SGA: gate MLP, layer embeddings, alphas), all layers
    size_t hooks;            // the block hooks' (R3SI: the injection bases W_s at the checkpoint layers)
    size_t matmul;           // weights that take part in a matmul per token (LM head included)
} ParamCounts;

ParamCounts count_params(const ModelShape *s);

// Training FLOPs per token, forward + backward (PaLM appendix B convention):
//   6 * matmul_params + 12 * n_layer * d_model * seq_len (+ the attention variant's extra)
// where matmul_params counts every weight multiplied per token (the LM head included) and the
// second term is the attention score and value products over the full T x T square.
double flops_per_token(const ModelShape *s);
