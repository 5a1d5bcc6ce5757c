// memory_estimate.c: see memory_estimate.h.
#include "memory_estimate.h"
#include <string.h>
#include "backend_count.h"
#include "trace.h"
#include "train.h"

MemoryEstimate estimate_memory(const Config *cfg, int dp, int pp, int stage) {
    const Backend *be = backend_count();
    backend_count_reset();
    Trainer t;
    memset(&t, 0, sizeof t);
    trainer_alloc_state(&t, cfg, be, stage, pp, dp, 0);
    size_t peak = 0;
    be->memory_stats(NULL, &peak);
    double elem = (double)be->elem_size;
    MemoryEstimate e = {.layer_begin = t.model.layer_begin, .layer_end = t.model.layer_end, .in_flight = t.n_slots};
    e.params_bytes = elem * (double)t.model.num_params;
    e.grads_bytes = elem * (double)t.model.num_params;
    e.optimizer_bytes = elem * (double)t.adam.numel * (t.shard_grads ? 3 : 2);
    for (int i = 0; i < t.n_slots; i++) e.activation_bytes += (double)t.slots[i].bytes;
    e.allocated_bytes = (double)peak;
    e.other_bytes = e.allocated_bytes - e.params_bytes - e.grads_bytes - e.optimizer_bytes - e.activation_bytes;
    if (cfg->trace_every > 0) e.transient_bytes = elem * (double)trace_scratch_numel(&t.model.shape, t.micro_batch_size);
    e.peak_bytes = e.allocated_bytes + e.transient_bytes;

    const AttentionVariant *v = t.model.shape.attention;
    double warm_up = dp * pp > 1 ? 2 * elem * (double)trainer_warm_up_numel(&t) : 0;
    e.gpu_extra_bytes = CUDA_FIXED_ALLOWANCE_BYTES + (v->gpu_workspace_bytes ? v->gpu_workspace_bytes(&t.model.shape, t.micro_batch_size) : 0);
    e.gpu_need_bytes = e.allocated_bytes + (warm_up > e.transient_bytes ? warm_up : e.transient_bytes) + e.gpu_extra_bytes;
    trainer_free_state(&t);
    return e;
}
