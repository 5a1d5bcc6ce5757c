// memory_estimate.h: the device memory of one rank, from the allocations themselves.
#pragma once
#include "config.h"

// What one rank of a run needs, in bytes of fp32 tensors (the trainer's element on the CPU and on
// CUDA). `allocated` is measured, not modelled: the rank's whole device state is built on a
// counting backend by the trainer's own code (trainer_alloc_state), so recompute modes, attention
// variants, hooks, ZeRO-1 shards, the stage's layers and the 1F1B slots are all as allocated.
typedef struct {
    int layer_begin, layer_end;   // the stage's layers [begin, end)
    int in_flight;                // activation slots (micro-batches alive at once under 1F1B)
    double params_bytes;          // parameter arena
    double grads_bytes;           // gradient arena
    double optimizer_bytes;       // AdamW m and v (the ZeRO-1 shard, with its reduced-gradient buffer)
    double activation_bytes;      // every slot's saved tensors and backward scratch
    double other_bytes;           // the rest: hooks' state (R3SI's bases), the trainer's own buffers
    double allocated_bytes;       // all the above: the peak of the backend's allocation counter
    double transient_bytes;       // the largest temporary of a step (traced steps), on top
    double peak_bytes;            // allocated + transient: what the backend's high-water mark should read
    // On CUDA only: library workspace outside the backend's allocations (a fixed allowance, the
    // attention variant's cuFFT scratch) and the start-up NCCL warm-up buffer (dp x pp > 1).
    double gpu_extra_bytes;
    double gpu_need_bytes;        // peak_bytes + gpu_extra_bytes, with the warm-up buffer taken instead
                                  // of the step's transient when larger (they are never alive together)
} MemoryEstimate;

// The fixed part of the CUDA allowance: the CUDA context (about 0.5 GiB on A100/H100, taken from
// device memory at the first call), cuBLAS's workspace (32 MiB on Hopper, 4 MiB before), NCCL's
// channel buffers for the four communicators (down, up, dp, tie: 4 MiB NCCL_BUFFSIZE per channel
// and peer; about 0.5 GiB in all at 8 ranks a node) and the stream-ordered pool's rounding and
// fragmentation (about 0.5 GiB). An estimate with a margin, not a measurement: 1.5 GiB.
#define CUDA_FIXED_ALLOWANCE_BYTES (1.5 * 1024 * 1024 * 1024)

// The rank holding pipeline stage `stage` of pp with dp replicas (ZeRO-1 shards over dp).
MemoryEstimate estimate_memory(const Config *cfg, int dp, int pp, int stage);
