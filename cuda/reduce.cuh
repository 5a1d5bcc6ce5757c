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

// A grid-stride loop: i runs over [0, n) from the thread's index in the grid, in steps of the whole grid.
#define GRID_STRIDE(i, n) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

// ---- one warp per row -------------------------------------------------------------------------------
// Kernels over rows of at most a few thousand elements give each row to one warp (shuffle
// reductions, no block barriers): blocks of WARP_ROWS_BLOCK threads, WARP_ROWS_PER_BLOCK rows at a
// time, and a grid-stride loop over the rows beyond:
//     for (size_t r = warp_row_first(); r < rows; r += warp_row_stride()) ...
// The bounds depend on the warp only, so every lane of a warp reaches every shuffle.
#define WARP_ROWS_BLOCK 256
#define WARP_ROWS_PER_BLOCK (WARP_ROWS_BLOCK / 32)

// The grid for `rows` rows, launched with WARP_ROWS_BLOCK threads a block.
static inline unsigned int warp_rows_grid(size_t rows) { return grid_for(rows, WARP_ROWS_PER_BLOCK); }

// The first row of the calling warp, and the step to its next one.
static __device__ size_t warp_row_first(void) { return (size_t)blockIdx.x * WARP_ROWS_PER_BLOCK + threadIdx.x / 32; }
static __device__ size_t warp_row_stride(void) { return (size_t)gridDim.x * WARP_ROWS_PER_BLOCK; }

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

// ---- fixed trees in double ----------------------------------------------------------------------------
// The reductions that return a double to the host (sum, sum_squares, diag_sum, the entropy
// regulariser) add per-thread partials by one fixed halving tree in shared memory, so that their
// results are the same bit for bit on every run and every GPU.
static_assert((CUDA_REDUCE_BLOCKS & (CUDA_REDUCE_BLOCKS - 1)) == 0, "the fixed trees need a power of two");

// Sum of v over the block by a fixed halving tree (blockDim.x a power of two); shared: blockDim.x
// doubles. Every thread of the block must call it; every thread gets the total.
static __device__ double block_tree_sum(double v, double *shared) {
    shared[threadIdx.x] = v;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {
        if ((int)threadIdx.x < half) shared[threadIdx.x] += shared[threadIdx.x + half];
        __syncthreads();
    }
    return shared[0];
}

// The double a reduction left in the context's reduce_scratch[0], on the host (synchronises the stream).
static inline double reduce_scratch_result(CudaContext *ctx) {
    cudaCheck(cudaMemcpyAsync(ctx->reduce_host, ctx->reduce_scratch, sizeof(double), cudaMemcpyDeviceToHost, ctx->stream));
    cudaCheck(cudaStreamSynchronize(ctx->stream));
    return *ctx->reduce_host;
}
