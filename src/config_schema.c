// config_schema.c: every configuration key, its type, default and allowed range (see config_schema.h).
//
// The defaults describe a GPT-2-small-like run with llm.c's conventions. A run must still choose its
// length: exactly one of train.steps / train.tokens has to be > 0, so the defaults alone do not
// validate (config_load checks that after the file and the overrides are applied).
#include "config_schema.h"
#include "attention_variant.h"
#include <limits.h>
#include <stdint.h>
#include <string.h>

// offsetof(Config, f), plus a compile-time check that the field has type T: a row that pairs an
// integer key with a double field (or any other mismatch) does not build. Char arrays and int
// arrays are matched as `char *` / `int *` (the controlling expression of _Generic decays).
#define FIELD(f, T) \
    (offsetof(Config, f) + 0 * sizeof(char[_Generic(((Config *)0)->f, T: 1, default: -1)]))
#define FIELD_SIZE(f) sizeof(((Config *)0)->f)

#define INT_KEY(k, f, def, lo, hi, doc_) \
    { .key = k, .type = KEY_INT, .offset = FIELD(f, int), .size = FIELD_SIZE(f), \
      .idef = def, .ilo = lo, .ihi = hi, .doc = doc_ }
#define LONG_KEY(k, f, def, lo, hi, doc_) \
    { .key = k, .type = KEY_LONG, .offset = FIELD(f, long), .size = FIELD_SIZE(f), \
      .idef = def, .ilo = lo, .ihi = hi, .doc = doc_ }
#define U64_KEY(k, f, def, lo, hi, doc_) \
    { .key = k, .type = KEY_U64, .offset = FIELD(f, uint64_t), .size = FIELD_SIZE(f), \
      .idef = def, .ilo = lo, .ihi = hi, .doc = doc_ }
#define FLOAT_KEY(k, f, def, ends_, lo, hi, doc_) \
    { .key = k, .type = KEY_FLOAT, .offset = FIELD(f, double), .size = FIELD_SIZE(f), \
      .fdef = def, .ends = ends_, .flo = lo, .fhi = hi, .doc = doc_ }
#define BOOL_KEY(k, f, def, doc_) \
    { .key = k, .type = KEY_BOOL, .offset = FIELD(f, int), .size = FIELD_SIZE(f), \
      .idef = def, .ilo = 0, .ihi = 1, .doc = doc_ }
#define CHOICE_KEY(k, f, def, choices_, doc_) \
    { .key = k, .type = KEY_CHOICE, .offset = FIELD(f, char *), .size = FIELD_SIZE(f), \
      .sdef = def, .choices = choices_, .doc = doc_ }
#define CHOICE_INDEX_KEY(k, f, T, def, choices_, doc_) \
    { .key = k, .type = KEY_CHOICE_INDEX, .offset = FIELD(f, T), .size = FIELD_SIZE(f), \
      .idef = def, .choices = choices_, .doc = doc_ }
#define PATH_KEY(k, f, doc_) \
    { .key = k, .type = KEY_PATH, .offset = FIELD(f, char *), .size = FIELD_SIZE(f), \
      .sdef = "", .doc = doc_ }
#define INT_LIST_KEY(k, f, count, def, lo, hi, doc_) \
    { .key = k, .type = KEY_INT_LIST, .offset = FIELD(f, int *), .size = FIELD_SIZE(f), \
      .count_offset = FIELD(count, int), .ldef = def, .ldef_n = (int)(sizeof(def) / sizeof(def[0])), \
      .ilo = lo, .ihi = hi, .doc = doc_ }
// A list key whose default is the empty list (which then also is a valid value: "off").
#define INT_LIST_KEY_EMPTY(k, f, count, lo, hi, doc_) \
    { .key = k, .type = KEY_INT_LIST, .offset = FIELD(f, int *), .size = FIELD_SIZE(f), \
      .count_offset = FIELD(count, int), .ldef = NULL, .ldef_n = 0, .ilo = lo, .ihi = hi, .doc = doc_ }
#define BLEND_KEY(k, f, count, doc_) \
    { .key = k, .type = KEY_BLEND, .offset = FIELD(f, DataBlendSource *), .size = FIELD_SIZE(f), \
      .count_offset = FIELD(count, int), .choices = BLEND_KIND_CHOICES, .doc = doc_ }

// KEY_CHOICE_INDEX stores the index of the value in `choices` into the enum field.
_Static_assert(sizeof(NormPlacement) == sizeof(int), "choice-index fields are stored as int");
_Static_assert(NORM_PRE == 0 && NORM_POST == 1, "NORM_CHOICES is indexed by NormPlacement");
static const char *const NORM_CHOICES[] = {"pre", "post", NULL};
_Static_assert(sizeof(RecomputeMode) == sizeof(int), "choice-index fields are stored as int");
_Static_assert(RECOMPUTE_NONE == 0 && RECOMPUTE_ATTENTION == 1 && RECOMPUTE_BLOCK == 2, "RECOMPUTE_CHOICES is indexed by RecomputeMode");
static const char *const RECOMPUTE_CHOICES[] = {"none", "attention", "block", NULL};
const char *recompute_name(RecomputeMode mode) { return RECOMPUTE_CHOICES[mode]; }
_Static_assert(sizeof(ActivationPrecision) == sizeof(int), "choice-index fields are stored as int");
_Static_assert(ACTIVATIONS_FP32 == 0 && ACTIVATIONS_BF16 == 1, "ACTIVATIONS_CHOICES is indexed by ActivationPrecision");
static const char *const ACTIVATIONS_CHOICES[] = {"fp32", "bf16", NULL};
#define ATTENTION_VARIANT_NAME(name, object) name,
static const char *const ATTENTION_CHOICES[] = {ATTENTION_VARIANT_TABLE(ATTENTION_VARIANT_NAME) NULL};
static const char *const DROP_CHOICES[] = {"none", "layerdrop", "stochastic_depth", NULL};
static const char *const TEMPERATURE_CHOICES[] = {"none", "loss", "attention", NULL};
static const int R3SI_LAYERS[] = {14, 18, 22, 26};
static const char *const DEVICE_CHOICES[] = {"auto", "cpu", "cuda", NULL};
static const char *const EXTEND_CHOICES[] = {"none", "constant", "rewarm", NULL};
static const char *const DATA_CHOICES[] = {"llmc", "megatron", "text", "logic", "retrieval", NULL};
static const char *const SAMPLING_CHOICES[] = {"epoch", "random", NULL};
static const char *const BLEND_KIND_CHOICES[] = {"llmc", "megatron", "text", NULL};
static const int RETRIEVAL_DISTANCES[] = {128, 256, 512, 1024};   // the SGA post's distances

#define M1 (1 << 20)
#define M16 (1 << 24)

// Keys of one group are contiguous and nested groups follow their parent's keys: config_write
// opens and closes groups in table order.
const ConfigKey config_schema[] = {
    // key                         field              default      range                doc
    INT_KEY("model.n_layer",        n_layer,           12,          1, 1024,             "transformer blocks"),
    INT_KEY("model.n_head",         n_head,            12,          1, 1024,             "attention heads; must divide d_model"),
    INT_KEY("model.d_model",        d_model,           768,         1, 65536,            "residual stream width"),
    INT_KEY("model.seq_len",        seq_len,           1024,        1, M1,               "T, the design length"),
    INT_KEY("model.vocab_size",     vocab_size,        50304,       2, M16,              "token embedding rows (padded vocabulary)"),
    FLOAT_KEY("model.mlp_ratio",    mlp_ratio,         4.0,         RANGE_OPEN_LO, 0, 64, "MLP hidden width = round(mlp_ratio * d_model); (0, 64]"),
    CHOICE_INDEX_KEY("model.norm",  norm, NormPlacement, NORM_PRE,  NORM_CHOICES,     "LayerNorm placement: pre | post"),
    BOOL_KEY("model.tie_embeddings", tie_embeddings,   1,                                "LM head shares the token embedding"),
    FLOAT_KEY("model.init_std",     init_std,          0.02,        RANGE_OPEN_LO, 0, 1,  "std of the normal weight init; (0, 1]"),
    BOOL_KEY("model.scaled_init",   scaled_init,       1,                                "residual projections get init_std / sqrt(2 n_layer)"),

    CHOICE_KEY("attention.kind",    attention_kind,    "sdpa",      ATTENTION_CHOICES,   "attention variant: sdpa | sga (spectral gated) | head_scale (learned per-head logit scale)"),
    BOOL_KEY("attention.fused",     attention_fused,   0,                                "the variant's fused form: the same parameters and results, no (B, heads, T, T) tensor kept"),
    INT_KEY("attention.tile_heads", attention_tile_heads, 0,        0, M16,              "fused form: (sequence, head) pairs per tile; 0 = as many as fit 64 MiB of tile scratch (at least 1)"),
    INT_KEY("attention.tile_rows",  attention_tile_rows, 0,         0, M16,              "SGA's fused form: query rows of one (sequence, head) pair per tile; 0 = whole pairs, or as many rows as fit 64 MiB when one pair does not"),

    BOOL_KEY("sga.spectral",        sga_spectral,      1,                                "gate the DCT spectrum of each logit row; false = gate the row itself"),
    BOOL_KEY("sga.fixed_filter",    sga_fixed_filter,  0,                                "no gate MLP: DC x0.7, middle third x1.2, others x1"),
    BOOL_KEY("sga.blend",           sga_blend,         1,                                "blend with learned alpha_l; false = alpha fixed at 1"),
    INT_KEY("sga.gate_hidden",      sga_gate_hidden,   64,          1, 4096,             "hidden width of the gate MLP"),
    INT_KEY("sga.embed_dim",        sga_embed_dim,     32,          1, 4096,             "learned per-layer embedding e_l fed to the gate"),
    FLOAT_KEY("sga.alpha_init",     sga_alpha_init,    0.1,         RANGE_CLOSED, 0, 1,   "initial alpha_l; [0, 1]"),

    BOOL_KEY("r3si.enabled",        r3si_enabled,      0,                                "Residual Rank Restoration via Spectral Injection (docs/design.md section 4)"),
    INT_LIST_KEY("r3si.layers",     r3si_layers, r3si_n_layers, R3SI_LAYERS,           0, 1024,             "checkpoint blocks c (0-based) whose input is monitored and injected"),
    INT_KEY("r3si.k",               r3si_k,            64,          1, 4096,             "dominant subspace dimension of the monitor"),
    INT_KEY("r3si.d_s",             r3si_ds,           32,          1, 4096,             "rows of the learned injection basis W_s"),
    INT_KEY("r3si.monitor_every",   r3si_monitor_every, 50,         1, INT_MAX,          "steps between monitor updates"),
    FLOAT_KEY("r3si.tau_init_frac", r3si_tau_init_frac, 0.4,        RANGE_OPEN_LO, 0, 1,  "tau_0 = tau_init_frac x d_model; (0, 1]"),
    BOOL_KEY("r3si.adaptive",       r3si_adaptive,     1,                                "adapt tau to per-head gradient diversity"),
    FLOAT_KEY("r3si.lsd_lambda",    r3si_lsd_lambda,   0.01,        RANGE_CLOSED, 0, 100, "weight of the rank hinge loss L_SD; 0 = off"),
    BOOL_KEY("r3si.inject",         r3si_inject,       1,                                "apply the spectral injection"),
    BOOL_KEY("r3si.center",         r3si_center,       0,                                "subtract column means before the covariance"),

    FLOAT_KEY("reg.entropy_coef",   reg_entropy_coef,  0.0,         RANGE_CLOSED, 0, 100, "entropy regularisation: loss -= coef x mean normalised row entropy; [0, 100]"),

    FLOAT_KEY("reg.adr_coef",       reg_adr_coef,      0.0,         RANGE_CLOSED, 0, 100, "attention diversity regularisation: loss += coef x mean pairwise head-map cosine; [0, 100]"),

    CHOICE_KEY("temperature.mode",  temperature_mode,  "none",      TEMPERATURE_CHOICES, "none | loss (divide the total loss) | attention (divide every logit)"),
    FLOAT_KEY("temperature.base",   temperature_base,  1.0,         RANGE_OPEN_LO, 0, 1000, "base temperature; (0, 1000]"),
    FLOAT_KEY("temperature.beta",   temperature_beta,  0.2,         RANGE_CLOSED, -0.99, 10, "maximum relative boost beta; [-0.99, 10]"),
    FLOAT_KEY("temperature.gamma",  temperature_gamma, 0.001,       RANGE_CLOSED, 0, 1000, "transition sharpness gamma (per step); [0, 1000]"),
    FLOAT_KEY("temperature.t_switch", temperature_t_switch, 0.0,    RANGE_CLOSED, 0, 1e15, "step of the transition; [0, 1e15]"),

    CHOICE_KEY("drop.mode",         drop_mode,         "none",      DROP_CHOICES,        "none | layerdrop | stochastic_depth"),
    FLOAT_KEY("drop.p",             drop_p,            0.0,         RANGE_OPEN_HI, 0, 1,  "probability of dropping a block (layerdrop) or a branch (stochastic depth); [0, 1)"),

    LONG_KEY("train.steps",         steps,             0,           0, 1000000000000LL,  "optimizer steps; 0 = derive from train.tokens"),
    FLOAT_KEY("train.tokens",       tokens,            0.0,         RANGE_CLOSED, 0, 1e15, "token budget, used when train.steps = 0; [0, 1e15]"),
    INT_KEY("train.batch_size",     batch_size,        8,           1, M16,              "global batch, in sequences"),
    INT_KEY("train.micro_batch_size", micro_batch_size, 8,          1, M16,              "sequences per micro-batch on one rank"),
    INT_KEY("train.micro_batches",  micro_batches,     0,           0, M1,               "micro-batches per step on one rank; 0 = batch_size / (micro_batch_size * dp)"),
    CHOICE_INDEX_KEY("train.recompute", recompute, RecomputeMode, RECOMPUTE_NONE, RECOMPUTE_CHOICES,
                     "activation recomputation: none | attention (keep q, k, v; recompute the attention weights in backward) | block (keep each block's input; recompute the block)"),
    CHOICE_INDEX_KEY("train.activations", activations, ActivationPrecision, ACTIVATIONS_FP32, ACTIVATIONS_CHOICES,
                     "storage of the kept activations that backward reads only as GEMM inputs (LayerNorm outputs feeding a GEMM, the merged heads, the GELU output): fp32 | bf16 (half the bytes; the rest stays fp32; nothing to store under train.recompute = block)"),
    FLOAT_KEY("train.lr",           lr,                6e-4,        RANGE_OPEN_LO, 0, 1,  "peak learning rate; (0, 1]"),
    FLOAT_KEY("train.min_lr",       min_lr,            6e-5,        RANGE_CLOSED, 0, 1,   "final learning rate of the cosine decay; [0, train.lr]"),
    INT_KEY("train.warmup_steps",   warmup_steps,      100,         0, INT_MAX,          "linear warmup steps; < train.steps"),
    FLOAT_KEY("train.weight_decay", weight_decay,      0.1,         RANGE_CLOSED, 0, 10,  "AdamW decoupled weight decay; [0, 10]"),
    FLOAT_KEY("train.grad_clip",    grad_clip,         1.0,         RANGE_CLOSED, 0, 1e6, "global gradient-norm clip, 0 = off; [0, 1e6]"),
    FLOAT_KEY("train.beta1",        beta1,             0.9,         RANGE_OPEN_HI, 0, 1,  "AdamW beta1; [0, 1)"),
    FLOAT_KEY("train.beta2",        beta2,             0.95,        RANGE_OPEN_HI, 0, 1,  "AdamW beta2; [0, 1)"),
    FLOAT_KEY("train.adam_eps",     adam_eps,          1e-8,        RANGE_OPEN_LO, 0, 1,  "AdamW epsilon; (0, 1]"),
    U64_KEY("train.seed",           seed,              1337,        0, INT64_MAX,        "seed of the init, the data order and the synthetic tasks"),
    CHOICE_KEY("train.device",      device,            "auto",      DEVICE_CHOICES,      "auto | cpu | cuda"),
    INT_KEY("train.max_bad_steps",  max_bad_steps,     5,           1, 1000000,          "consecutive non-finite steps before stopping"),
    INT_KEY("train.log_every",      log_every,         1,           1, INT_MAX,          "steps between log lines"),
    CHOICE_KEY("train.extend",      extend,            "none",      EXTEND_CHOICES,      "a resume that changes the LR schedule: none (the new schedule as if from step 0) | constant (keep the LR reached) | rewarm (back to train.lr, then cosine to the new end)"),
    LONG_KEY("train.extend_step",   extend_step,       0,           0, 1000000000000LL,  "set by a resume under train.extend: first step of the tail; 0 = none"),
    FLOAT_KEY("train.extend_lr",    extend_lr,         0.0,         RANGE_CLOSED, 0, 1,   "set by a resume under train.extend: the LR the previous schedule had reached at extend_step"),

    CHOICE_KEY("data.kind",         data_kind,         "logic",     DATA_CHOICES,        "llmc | megatron | text | logic | retrieval"),
    PATH_KEY("data.train",          data_train,                                          "training file or prefix; empty for synthetic tasks"),
    PATH_KEY("data.val",            data_val,                                            "validation file; empty = hold out data.val_fraction"),
    FLOAT_KEY("data.val_fraction",  data_val_fraction, 0.05,        RANGE_OPEN_LO, 0, 0.5, "held-out fraction when data.val is empty; (0, 0.5]"),
    CHOICE_KEY("data.sampling",     data_sampling,     "epoch",     SAMPLING_CHOICES,    "file data: epoch (each window once per epoch, seeded permutation) | random (hashed starts with replacement, before issue 20)"),
    BLEND_KEY("data.blend",         data_blend, data_blend_n,                            "blended training sources, a list of (weight, \"path or prefix\", \"llmc|megatron|text\"); empty = data.train"),
    INT_KEY("data.logic.depth_min", logic_depth_min,   2,           1, 6,                "shallowest expression nesting"),
    INT_KEY("data.logic.depth_max", logic_depth_max,   6,           1, 6,                "deepest expression nesting; >= depth_min"),
    INT_KEY("data.logic.n_vars",    logic_n_vars,      4,           1, 16,               "variables per expression"),
    INT_LIST_KEY("data.retrieval.distances", retrieval_distances, retrieval_n_distances,
                                    RETRIEVAL_DISTANCES,            1, M1,               "query distances in tokens, 1 to 16 values"),

    INT_KEY("parallel.pp",          pp,                1,           1, 1024,             "pipeline stages; dp = world size / pp"),
    INT_KEY("parallel.zero",        zero,              0,           0, 1,                "1 = shard AdamW state over dp (ZeRO-1)"),

    INT_KEY("eval.every",           eval_every,        0,           0, INT_MAX,          "steps between evaluations; 0 = only at the end"),
    INT_KEY("eval.batches",         eval_batches,      4,           1, M1,               "validation batches per evaluation"),
    // Traces are what this program is for, so they are on by default. On the CPU models a trace
    // costs 0.10-0.18 of a step (tiny, tiny-sga, tiny-r3si, quiet machine; up to 0.95 under heavy
    // load: README, "Outputs"), so every 50th step adds 0.2-0.4% (at most 1.9%); 50 still gives a
    // 200-step run 4 traces.
    INT_KEY("trace.every",          trace_every,       50,          0, INT_MAX,          "steps between per-layer traces (attention entropy, residual rank, ...; step 0 included); 0 = off"),
    INT_LIST_KEY_EMPTY("trace.snapshot_layers", trace_snapshot_layers, trace_snapshot_n, 0, 1024,
                                    "blocks (0-based, ascending) whose attention maps (sequence 0, the first 4 heads, T x T, float16) each trace step stores in /snapshot/attn; [] = none"),
    INT_KEY("checkpoint.every",     checkpoint_every,  0,           0, INT_MAX,          "steps between periodic checkpoints; 0 = only the final one"),
    INT_KEY("checkpoint.keep",      checkpoint_keep,   2,           1, 1000000,          "newest checkpoints kept"),
};

const int config_schema_len = (int)(sizeof(config_schema) / sizeof(config_schema[0]));

const ConfigKey *config_schema_find(const char *key) {
    for (int i = 0; i < config_schema_len; i++) {
        if (strcmp(config_schema[i].key, key) == 0) return &config_schema[i];
    }
    return NULL;
}
