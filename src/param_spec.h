// param_spec.h: how a module (the model core, an attention variant, a block hook) declares the
// parameters it owns. The model lays every declared parameter out in its arenas, initialises it,
// checkpoints it and hands each module its tensors layer by layer.
#pragma once
#include <stdint.h>

typedef enum { INIT_NORMAL, INIT_ZERO, INIT_ONE, INIT_CONSTANT } ParamInit;

// Random-stream tags of parameter initialisation: each parameter draws from its own stream, so
// that adding a parameter never changes the values of another. Tags are stable across versions
// (checkpointed runs and the bitwise reproducibility tests depend on them).
enum {
    PARAM_STREAM_WTE = 0, PARAM_STREAM_WPE, PARAM_STREAM_LN1_W, PARAM_STREAM_LN1_B, PARAM_STREAM_QKV_W,
    PARAM_STREAM_QKV_B, PARAM_STREAM_ATTPROJ_W, PARAM_STREAM_ATTPROJ_B, PARAM_STREAM_LN2_W, PARAM_STREAM_LN2_B,
    PARAM_STREAM_FC_W, PARAM_STREAM_FC_B, PARAM_STREAM_FCPROJ_W, PARAM_STREAM_FCPROJ_B, PARAM_STREAM_LNF_W,
    PARAM_STREAM_LNF_B, PARAM_STREAM_LM_HEAD,
    PARAM_STREAM_SGA_E = 17, PARAM_STREAM_SGA_W1, PARAM_STREAM_SGA_B1, PARAM_STREAM_SGA_W2, PARAM_STREAM_SGA_B2,
    PARAM_STREAM_SGA_ALPHA,
    PARAM_STREAM_R3SI_WS = 23,
    PARAM_STREAM_HEAD_SCALE = 24,
};

#define PARAM_MAX_LAYER_LIST 16   // a parameter present in listed layers only: at most this many

typedef struct {
    const char *name;      // stable: the checkpoint dataset name ("blocks.sga_w1")
    int ndim;              // rank of one layer's slice: 1 or 2
    long shape[2];
    ParamInit init;
    double init_value;     // the standard deviation (INIT_NORMAL) or the value (INIT_CONSTANT)
    int decay;             // AdamW weight decay applies
    uint32_t stream;       // PARAM_STREAM_*: unique within a model
    // Block parameters exist in every layer, unless n_layers > 0: then only in these (ascending)
    // layers, and the checkpoint stacks just those slices.
    int n_layers;
    int layers[PARAM_MAX_LAYER_LIST];
} ParamSpec;
