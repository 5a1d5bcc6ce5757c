// model.h: the GPT decoder (DESIGN section 3) as a sequence of backend ops.
//
// A Model holds the parameters of one pipeline stage: blocks [layer_begin, layer_end), plus the
// embeddings on the first stage and the final LayerNorm and LM head on the last. With one stage
// it is the whole model. Parameters and gradients each live in one arena allocated by the backend;
// per-layer tensors are stacked over the stage's layers, as in the checkpoint's logical shapes.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "backend.h"
#include "config.h"

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
    // Spectral Gated Attention (attention.kind = "sga", DESIGN section 4)
    int sga;
    int sga_spectral;        // gate the DCT spectrum (1) or the row itself (0)
    int sga_fixed_filter;    // fixed gain curve instead of the gate MLP
    int sga_blend;           // learned alpha_l (1) or alpha fixed at 1 (0)
    int sga_hidden;          // gate MLP width
    int sga_embed;           // e_l width
    double sga_alpha_init;
    // R3SI (DESIGN section 5): the injection basis W_s exists when injecting
    int r3si;
    int r3si_inject;
    int r3si_ds;
    int r3si_k;
    int r3si_is_checkpoint[1024];   // per block: 1 if it is one of r3si.layers
} ModelShape;

ModelShape model_shape_from_config(const Config *cfg);

typedef enum {
    PARAM_WTE,        // (V, C) token embedding (and the LM head when tied)
    PARAM_WPE,        // (T, C) learned positions
    PARAM_LN1_W,      // (L, C)
    PARAM_LN1_B,      // (L, C)
    PARAM_QKV_W,      // (L, 3C, C)
    PARAM_QKV_B,      // (L, 3C)
    PARAM_ATTPROJ_W,  // (L, C, C)
    PARAM_ATTPROJ_B,  // (L, C)
    PARAM_LN2_W,      // (L, C)
    PARAM_LN2_B,      // (L, C)
    PARAM_FC_W,       // (L, H, C), H = mlp_hidden
    PARAM_FC_B,       // (L, H)
    PARAM_FCPROJ_W,   // (L, C, H)
    PARAM_FCPROJ_B,   // (L, C)
    PARAM_LNF_W,      // (C)
    PARAM_LNF_B,      // (C)
    PARAM_LM_HEAD,    // (V, C), only when the head is not tied
    PARAM_SGA_E,      // (L, De) layer embedding fed to the gate
    PARAM_SGA_W1,     // (L, Hg, De+4)
    PARAM_SGA_B1,     // (L, Hg)
    PARAM_SGA_W2,     // (L, T, Hg)
    PARAM_SGA_B2,     // (L, T)
    PARAM_SGA_ALPHA,  // (L, 1) blend weight, clamped to [0, 1] in the forward pass
    PARAM_R3SI_WS,    // (L, d_s, C) learned injection basis; only the r3si.layers slices are used
    NUM_PARAMS
} ParamId;

typedef enum { INIT_NORMAL, INIT_ZERO, INIT_ONE, INIT_SGA_ALPHA } ParamInit;
typedef enum { ROLE_EMBEDDING, ROLE_BLOCK, ROLE_HEAD } ParamRole;

typedef struct {
    const char *name;      // stable name, used as the checkpoint dataset name
    ParamRole role;
    int slice_ndim;        // rank of one layer's slice (or of the whole tensor if not per layer)
    long slice_shape[2];
    size_t slice_numel;
    int decay;             // AdamW weight decay applies (matrices only)
    ParamInit init;
    double init_std;
    int exists;            // the model has it (SGA parameters only with SGA, lm_head only untied)
    int present;           // this stage holds it
    size_t offset;         // element offset in the stage's arenas; for block parameters, within a layer region
    size_t numel;          // elements held by this stage (slice_numel x local layers for blocks)
} ParamInfo;

// A contiguous range of the parameter/gradient arenas: the unit of data-parallel reduction.
typedef struct {
    size_t offset;
    size_t numel;
} ModelRegion;

enum { REGION_EMBEDDING, REGION_HEAD, NUM_FIXED_REGIONS };

typedef struct {
    ModelShape shape;
    int layer_begin, layer_end;     // blocks owned by this stage
    int has_embedding, has_head;
    ParamInfo params[NUM_PARAMS];
    ModelRegion regions[NUM_FIXED_REGIONS];  // embedding (wte, wpe) and head (lnf, lm_head); may be empty
    size_t layers_offset;           // start of layer 0's region
    size_t layer_stride;            // elements of one layer region
    size_t num_params;              // elements in each arena
    const Backend *be;
    void *params_mem;               // (num_params)
    void *grads_mem;                // (num_params)
    // Training-time switches set by the trainer (all off after model_init):
    double entropy_reg_weight;      // aux loss = -weight x sum over rows i >= 1 of H_i / ln(i+1)
    const uint8_t *layer_skip;      // (n_layer) host flags: LayerDrop skips these blocks this step
    void *head_mask;                // (layers on this stage, NH) device gains: head pruning at eval
    struct R3si *r3si;              // R3SI monitor, injection and L_SD state, or NULL (r3si.h)
    double attn_temperature;        // every attention logit is divided by it (temperature.mode = "attention"); 1 = off
    double adr_weight;              // aux loss += weight x sum over layers, sequences, head pairs of cos(A_h, A_h')
    double stochastic_depth_p;      // per sequence and block, drop both branches with this probability; 0 = off
    uint64_t stochastic_depth_seed; // draws are a function of (seed, step, layer, global sequence index)
    long step;                      // the training step being run (stochastic depth draws)
} Model;

// Lays out the parameter table of one stage and allocates its arenas (zeroed).
// The arenas are padded to a multiple of `arena_multiple` elements (ZeRO-1 shards them over dp).
void model_init(Model *m, const Backend *be, ModelShape shape, int layer_begin, int layer_end, int has_embedding, int has_head,
                size_t arena_multiple);
void model_free(Model *m);

// Fills the parameters with the configured initialisation. Each element is a pure function of
// (seed, parameter, global layer, index), so every topology starts from the same weights.
void model_init_weights(Model *m, uint64_t seed);

// Element offset, and device pointer, of the slice of `id` for global layer `layer` (ignored for
// non-block params), in the parameter or in the gradient arena.
size_t model_param_offset(const Model *m, ParamId id, int layer);
void *model_param(const Model *m, ParamId id, int layer);
void *model_grad(const Model *m, ParamId id, int layer);

// The arena range holding every parameter of global layer `layer`.
ModelRegion model_layer_region(const Model *m, int layer);

// Parameter counts of the whole model (not the stage), for `info` and the log.
size_t model_count_params(const ModelShape *s);

// ---- activations ------------------------------------------------------------------------------
// Everything one micro-batch of B sequences leaves behind for the backward pass, plus the
// gradient scratch the backward pass reuses from layer to layer.
typedef struct {
    int B, T;
    int n_local;            // layers on this stage
    int32_t *tokens;        // (B,T) device
    int32_t *targets;       // (B,T) device, -1 = no loss
    void *input;            // (B,T,C) stage input: the embedding (first stage) or the previous stage's output
    void *ln1, *ln1_mean, *ln1_rstd;      // (Lc,B,T,C), (Lc,B,T), (Lc,B,T)
    void *qkv;                            // (Lc,B,T,3C)
    void *q, *k, *v;                      // (Lc,B,NH,T,hs)
    void *probs;                          // (Lc,B,NH,T,T) causal attention weights
    void *atty;                           // (Lc,B,NH,T,hs)
    void *attmerged;                      // (Lc,B,T,C)
    void *resid_mid;                      // (Lc,B,T,C) x + attention
    void *ln2, *ln2_mean, *ln2_rstd;      // (Lc,B,T,C), (Lc,B,T), (Lc,B,T)
    void *fch, *fch_gelu;                 // (Lc,B,T,H)
    void *resid_out;                      // (Lc,B,T,C) attention-residual + MLP
    void *lnf, *lnf_mean, *lnf_rstd;      // (B,T,C), (B,T), (B,T)
    void *logits;                         // (B,T,V); softmax probabilities after the forward pass
    void *losses;                         // (B,T)
    void *scores;                         // (B,NH,T,T) scratch
    double entropy_reg_sum;               // sum over this stage's rows i >= 1 of H_i / ln(i+1) (when regularised)
    // R3SI, per local layer (used at checkpoint layers only); NULL without R3SI
    void *r3si_in;                        // (Lc,B,T,C) block input after the injection
    void *r3si_z;                         // (Lc,B,T,d_s) z = H W_s^T
    void *r3si_u, *r3si_g, *r3si_hc;      // (B,T,C) scratch
    void *r3si_p;                         // (B,T,k) scratch
    void *r3si_dz;                        // (B,T,d_s) scratch
    void *r3si_cov;                       // (C,C) scratch: this micro-batch's covariance
    double lsd_sum;                       // sum over this stage's checkpoint layers of max(0, tau - PR(H_c))
    double adr_sum;                       // sum over this stage's layers, sequences and head pairs of cos(A_h, A_h')
    void *adr_gram;                       // (NH,NH) scratch
    void *sd_factor;                      // (Lc,B) stochastic depth: 0 or 1/(1-p) per block and sequence
    int first_sequence;                   // global index of this micro-batch's first sequence (set by the trainer)
    int training;                         // 1 in training passes: stochastic depth draws; 0 at evaluation
    // SGA, per layer (R = B NH T rows of length T); NULL without SGA
    void *sga_raw;                        // (Lc,B,NH,T,T) the raw logits a
    void *sga_spec;                       // (Lc,R,T) s, the spectrum of the zero-padded row
    void *sga_stats;                      // (Lc,R,4)
    void *sga_U;                          // (Lc,R,De+4) gate input
    void *sga_hpre, *sga_h;               // (Lc,R,Hg) gate hidden, before and after GELU
    void *sga_gate;                       // (Lc,R,T) g
    void *sga_zp;                         // (Lc,R,T) z' = IDCT(g s)
    // SGA scratch
    void *sga_z, *sga_y, *sga_dspec, *sga_dgate, *sga_dlogits;   // (R,T)
    void *sga_dU;                         // (R,De+4)
    void *sga_dh, *sga_dhpre;             // (R,Hg)
    void *sga_dstats;                     // (R,4)
    // gradient scratch
    void *dresidual;                      // (B,T,C) gradient of the residual stream
    void *dtmp, *dln;                     // (B,T,C)
    void *dqkv;                           // (B,T,3C)
    void *dq, *dk, *dv, *datty;           // (B,NH,T,hs)
    void *dprobs, *dscores;               // (B,NH,T,T)
    void *dattmerged;                     // (B,T,C)
    void *dfch, *dfch_gelu;               // (B,T,H)
    size_t bytes;                         // total device bytes held
} Activations;

void activations_init(Activations *a, const Model *m, int B);
void activations_free(Activations *a, const Backend *be);

// The residual stream entering local block li (B,T,C), and its attention weights (B,NH,T,T).
const void *model_block_input(const Model *m, const Activations *a, int li);
const void *model_layer_probs(const Model *m, const Activations *a, int li);

// Block output of local layer index li (the next block's input).
void *model_block_output(const Model *m, const Activations *a, int li);

// Forward pass of the stage over the micro-batch whose tokens/targets are already on the device.
// On the last stage the softmax probabilities replace the logits and `losses` holds one loss
// per position (0 where target < 0).
void model_forward(Model *m, Activations *a);

// Mean attention row entropy (nats) per local layer, sequence and head of the last forward pass:
// out (n_local, B, NH), host memory.
void model_head_entropies(const Model *m, const Activations *a, double *out);

// The gradient of head h's slice of layer `layer`'s attention weights, flattened: rows of W_q,
// W_k, W_v and columns of W_o. out (NH, 4 hs C), host memory.
void model_head_gradients(const Model *m, int layer, double *out);

// Sum of the per-position losses of the last forward pass (last stage only).
double model_loss_sum(const Model *m, const Activations *a);

// Called by model_backward as soon as the gradients of one arena region are complete for this
// micro-batch: the head region first, then each layer from the last, then the embedding region.
// Data-parallel reduction starts on it while the backward pass goes on.
typedef void (*GradReadyFn)(void *ctx, ModelRegion region, int is_embedding);

// Backward pass. dloss is d(total loss)/d(loss of one position), e.g. 1 / (valid targets of the
// global batch). Parameter gradients accumulate (+=) into the gradient arena. On a stage without
// the head, a->dresidual must hold the gradient of the stage's output on entry; on exit it holds
// the gradient of the stage's input. ready may be NULL.
void model_backward(Model *m, Activations *a, double dloss, GradReadyFn ready, void *ready_ctx);

// The stage's output of the last forward pass (B,T,C): the last block's output.
void *model_stage_output(const Model *m, const Activations *a);
