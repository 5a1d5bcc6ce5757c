// config.h: the validated, fully resolved configuration of a run.
//
// Loaded from a libconfig file plus `--set key=value` overrides. Every key is declared in one
// schema table (config_schema.c) with its type, default and allowed range: an unknown key, a wrong
// type or an out-of-range value is bad input (exit 2) with a message `file:line: key: reason`
// or `--set key: reason`.
#pragma once
#include <stdint.h>
#include <stdio.h>
#include "common.h"

#define CFG_PATH_LEN 4096
#define CFG_NAME_LEN 32
#define CFG_MAX_LIST 16
#define CFG_MAX_BLEND 8     // sources of data.blend

// One source of data.blend: (weight, path or prefix, format), like one pair of Megatron's
// --data-path. Weights are relative: they are normalised over the list.
typedef struct {
    double weight;
    char path[CFG_PATH_LEN];
    char kind[CFG_NAME_LEN];   // "llmc" | "megatron" | "text"
} DataBlendSource;

typedef enum { NORM_PRE = 0, NORM_POST = 1 } NormPlacement;
// What the forward pass keeps for backward (train.recompute); the rest is recomputed per layer.
typedef enum { RECOMPUTE_NONE = 0, RECOMPUTE_ATTENTION = 1, RECOMPUTE_BLOCK = 2 } RecomputeMode;
// Its value in train.recompute ("none", "attention", "block"; config_schema.c holds the list).
const char *recompute_name(RecomputeMode mode);
// How the kept per-layer activations that only feed GEMMs in backward are stored
// (train.activations): fp32, or bf16 (docs/design.md, "Numerics").
typedef enum { ACTIVATIONS_FP32 = 0, ACTIVATIONS_BF16 = 1 } ActivationPrecision;

typedef struct {
    // model.*: the shape of the decoder (docs/design.md section 2)
    int n_layer;
    int n_head;
    int d_model;
    int seq_len;              // T, the design length
    int vocab_size;
    double mlp_ratio;         // MLP hidden width = round(mlp_ratio * d_model)
    NormPlacement norm;       // "pre" | "post"
    int tie_embeddings;       // LM head shares the token embedding
    double init_std;
    int scaled_init;          // residual projections get init_std / sqrt(2 n_layer)

    // attention.*
    char attention_kind[CFG_NAME_LEN];   // "sdpa" | "sga"
    int attention_fused;                 // run the variant's fused form (attention_variant.h)
    int attention_tile_heads;            // (sequence, head) pairs per tile of the fused form; 0 = automatic
    int attention_tile_rows;             // query rows of one pair per tile of SGA's fused form; 0 = automatic

    // sga.*: Spectral Gated Attention (docs/design.md section 3)
    int sga_spectral;         // false: the gate acts on the logit row itself (no DCT)
    int sga_fixed_filter;     // true: fixed gain curve instead of the gate MLP
    int sga_blend;            // false: alpha fixed at 1
    int sga_gate_hidden;
    int sga_embed_dim;
    double sga_alpha_init;

    // r3si.*: Residual Rank Restoration via Spectral Injection (docs/design.md section 4)
    int r3si_enabled;
    int r3si_layers[CFG_MAX_LIST];   // checkpoint blocks, 0-based
    int r3si_n_layers;
    int r3si_k;
    int r3si_ds;
    int r3si_monitor_every;
    double r3si_tau_init_frac;
    int r3si_adaptive;
    double r3si_lsd_lambda;
    int r3si_inject;
    int r3si_center;

    // reg.*: auxiliary losses
    double reg_entropy_coef;  // entropy regularisation (docs/design.md section 5)
    double reg_adr_coef;      // attention diversity regularisation (docs/design.md section 5)

    // temperature.*: temp(t) = base (1 + beta tanh(gamma (t - t_switch))) (docs/design.md section 5)
    char temperature_mode[CFG_NAME_LEN];  // "none" | "loss" | "attention"
    double temperature_base, temperature_beta, temperature_gamma, temperature_t_switch;

    // drop.*: LayerDrop / stochastic depth
    char drop_mode[CFG_NAME_LEN];        // "none" | "layerdrop" | "stochastic_depth"
    double drop_p;

    // train.*
    long steps;               // 0 = derive from train.tokens
    double tokens;            // token budget; used when steps == 0
    int batch_size;           // global batch, in sequences
    int micro_batch_size;     // sequences per micro-batch on one rank
    int micro_batches;        // micro-batches per step on one rank; 0 = batch_size / (micro_batch_size * dp)
    RecomputeMode recompute;  // "none" | "attention" | "block"
    ActivationPrecision activations;  // "fp32" | "bf16"
    double lr;
    double min_lr;
    int warmup_steps;
    double weight_decay;
    double grad_clip;         // global-norm clip; 0 = off
    double beta1, beta2, adam_eps;
    uint64_t seed;
    char device[CFG_NAME_LEN];           // "auto" | "cpu" | "cuda"
    int max_bad_steps;        // consecutive non-finite steps before stopping
    int log_every;
    // How a resumed run whose schedule changed continues (run_history.h): "none" | "constant" |
    // "rewarm"; the tail's first step and the LR reached there are resolved by the trainer and
    // kept in the resolved config, so a later resume of the extended run follows the same tail.
    char extend[CFG_NAME_LEN];
    long extend_step;         // 0 = no tail
    double extend_lr;

    // data.*
    char data_kind[CFG_NAME_LEN];        // "llmc" | "megatron" | "text" | "logic" | "retrieval"
    char data_train[CFG_PATH_LEN];       // file or prefix; empty for synthetic tasks
    char data_val[CFG_PATH_LEN];         // empty: hold out data.val_fraction of the train file
    double data_val_fraction;
    char data_sampling[CFG_NAME_LEN];    // "epoch" (without replacement) | "random" (the old hashed starts)
    DataBlendSource data_blend[CFG_MAX_BLEND];   // data.blend; empty: data.train alone
    int data_blend_n;
    int logic_depth_min, logic_depth_max;  // data.logic.depth_min / depth_max (2..6)
    int logic_n_vars;                      // data.logic.n_vars
    int retrieval_distances[CFG_MAX_LIST]; // data.retrieval.distances
    int retrieval_n_distances;

    // parallel.*
    int pp;
    int zero;

    // eval.*, trace.*, checkpoint.*
    int eval_every;           // 0 = only at the end
    int eval_batches;         // validation batches (of batch_size sequences) per evaluation
    int trace_every;
    int trace_snapshot_layers[CFG_MAX_LIST];   // blocks whose attention maps trace steps store; none = off
    int trace_snapshot_n;
    int checkpoint_every;
    int checkpoint_keep;
} Config;

// Loads `path`, applies `n_overrides` strings of the form "key=value" (values in libconfig syntax:
// 3, 3.0, "text", true, [1, 2]) and validates everything. On error returns -1 with err->msg set to
// one line naming the file and line (or "--set key") and the key.
int config_load(const char *path, const char *const *overrides, int n_overrides, Config *cfg, Error *err);

// Fills every key with its default (the values of the schema table).
void config_defaults(Config *cfg);

// Writes the fully resolved config in libconfig syntax (every key, defaults included), so that
// `entrank train -c run_dir/config.cfg` reproduces the run.
void config_write_text(const Config *cfg, FILE *out);

// The same text in a malloc'd string (for metrics.h5 and checkpoint attributes).
char *config_to_string(const Config *cfg);
