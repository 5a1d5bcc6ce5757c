// reduce.cuh: warp and block reductions shared by the kernel families (in a fixed order, so that
// every result is the same from run to run), and the grid sizes of grid-stride loops.
#pragma once
#include <math.h>
#include "cuda_common.h"

#define GRID_MAX_BLOCKS (1u << 20)   // grid-stride loops cover what lies beyond

// Blocks of `per_block` elements for n elements, at most GRID_MAX_BLOCKS, never zero.
static inline unsigned int grid_for(size_t n, size_t per_block) {
    size_t blocks = (n + per_block - 1) / per_block;
    return blocks < 1 ? 1u : (blocks > GRID_MAX_BLOCKS ? GRID_MAX_BLOCKS : (unsigned int)blocks);
}

// Blocks of `threads` for a grid-stride loop over n elements: enough to fill the GPU, no more.
static inline unsigned int stride_grid(size_t n, unsigned int threads) {
    unsigned int blocks = ceil_div(n, threads);
    unsigned int cap = 32u * (unsigned int)cuda_context()->sm_count;
    if (blocks > cap) blocks = cap;
    return blocks ? blocks : 1;
}

// Sum / max over the 32 lanes of a warp, the same value in every lane (all lanes must call).
template <typename F>
static __device__ F warp_sum(F v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

static __device__ float warp_max(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

// Sum of v over the block (blockDim.x a multiple of 32, at most 1024), the same value in every
// thread and the same order every run. shared: 32 elements. Every thread of the block must call it.
template <typename F>
static __device__ F block_sum(F v, F *shared) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    v = warp_sum(v);
    __syncthreads();   // a previous call may still be reading `shared`
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < warps ? shared[lane] : (F)0;
    return warp_sum(v);
}
