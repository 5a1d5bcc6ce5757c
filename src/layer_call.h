// layer_call.h: everything a module (attention variant or block hook) gets when the model calls
// it for one layer of one micro-batch. Modules see tensors and shapes, never the Model.
#pragma once
#include "backend.h"
#include "model_shape.h"
#include "step_context.h"

typedef struct {
    const Backend *be;
    const ModelShape *shape;
    int B, T;                  // the micro-batch
    int layer;                 // global block index
    int li;                    // index among this stage's blocks
    void *const *param;        // the module's parameters, this layer's slices, in declared order (NULL where absent)
    void *const *grad;         // their gradients (+=)
    const PassContext *pass;
    double *aux;               // (NUM_AUX) this micro-batch's auxiliary sums (+=)
} LayerCall;

#define MODULE_MAX_PARAMS 8
