// entropy.cu: attention row entropies and the entropy regulariser on the GPU (docs/design.md section 5, docs/metrics-schema.md;
// CPU twin: src/cpu/entropy.inc).
//
// Every op works on the causal rows of probs (BH,T,T): row r is query position i = r % T and holds
// probabilities p_ij for j <= i; entries above the diagonal are never read. A row is at most a few
// thousand elements, so each is handled by one warp (shuffle reductions, no block barriers).
// 0 log 0 = 0: zero (and negative) probabilities are skipped, as on the CPU. The regulariser's sum
// is a double-precision, fixed-grid reduction (CUDA_REDUCE_BLOCKS blocks of a fixed size, each over
// a fixed set of rows, partials combined by a fixed tree), so its value does not depend on the GPU
// or on scheduling.
#include <math.h>
#include "reduce.cuh"

#define BLOCK 256   // threads per block of the elementwise kernel (the row kernels: reduce.cuh's WARP_ROWS_BLOCK)

// ---- row entropies ----------------------------------------------------------------------------------

// ent[r] = -sum_{j<=i} p log p in fp32 (as the fp32 CPU backend), one warp per row.
__global__ static void attn_row_entropy_kernel(float *ent, const float *probs, size_t rows, int T) {
    int lane = threadIdx.x % 32;
    for (size_t r = warp_row_first(); r < rows; r += warp_row_stride()) {
        int i = (int)(r % T);
        const float *p = probs + r * T;
        float h = 0.0f;
        for (int j = lane; j <= i; j += 32) if (p[j] > 0.0f) h -= p[j] * logf(p[j]);
        h = warp_sum(h);
        if (lane == 0) ent[r] = h;
    }
}

// ent (BH,T), probs (BH,T,T) read on the causal triangle only
void cuda_attn_row_entropy(void *ent, const void *probs, int BH, int T) {
    size_t rows = (size_t)BH * T;
    if (rows == 0) return;
    attn_row_entropy_kernel<<<warp_rows_grid(rows), WARP_ROWS_BLOCK, 0, cuda_context()->stream>>>(
        (float *)ent, (const float *)probs, rows, T);
    cudaCheckLaunch();
}

// ---- the regulariser --------------------------------------------------------------------------------

// Block b's partial of sum_{i>=1} H_i / ln(i+1) into partial[b], in double (as the CPU). Warp w of
// block b takes rows b*W + w, then every gridDim.x*W rows after it, and lane 0 accumulates them in
// that order; the block's warps are then added in warp order.
__global__ static void entropy_reg_partial_kernel(double *partial, const float *probs, size_t rows, int T) {
    __shared__ double warp_acc[WARP_ROWS_PER_BLOCK];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    double acc = 0.0;
    for (size_t r = warp_row_first(); r < rows; r += warp_row_stride()) {
        int i = (int)(r % T);
        if (i == 0) continue;   // a one-element row has no entropy and ln(1) = 0
        const float *p = probs + r * T;
        double h = 0.0;
        for (int j = lane; j <= i; j += 32) if (p[j] > 0.0f) h -= (double)p[j] * log((double)p[j]);
        h = warp_sum(h);
        acc += h / log((double)(i + 1));
    }
    if (lane == 0) warp_acc[warp] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        double s = 0.0;
        for (int w = 0; w < WARP_ROWS_PER_BLOCK; w++) s += warp_acc[w];
        partial[blockIdx.x] = s;
    }
}

// partial[0] = the sum of partial[0 .. CUDA_REDUCE_BLOCKS), by a fixed tree; one block of CUDA_REDUCE_BLOCKS threads.
__global__ static void reduce_partials_kernel(double *partial) {
    __shared__ double buf[CUDA_REDUCE_BLOCKS];
    double total = block_tree_sum(partial[threadIdx.x], buf);   // every read of partial is done before its barriers
    if (threadIdx.x == 0) partial[0] = total;
}

// probs (BH,T,T) read on the causal triangle only; returns sum_{i>=1} H_i / ln(i+1) (synchronizes)
double cuda_attn_entropy_reg_sum(const void *probs, int BH, int T) {
    size_t rows = (size_t)BH * T;
    if (rows == 0) return 0.0;
    CudaContext *ctx = cuda_context();
    entropy_reg_partial_kernel<<<CUDA_REDUCE_BLOCKS, WARP_ROWS_BLOCK, 0, ctx->stream>>>(ctx->reduce_scratch, (const float *)probs, rows, T);
    cudaCheckLaunch();
    reduce_partials_kernel<<<1, CUDA_REDUCE_BLOCKS, 0, ctx->stream>>>(ctx->reduce_scratch);
    cudaCheckLaunch();
    return reduce_scratch_result(ctx);
}

// dprobs (+=) weight * dH_i/dp / ln(i+1) = -w (log p + 1) where p > 0, rows i >= 1; one warp per row.
// w is formed in double and rounded once, as on the CPU; the log is fp32, as on the fp32 CPU backend.
__global__ static void entropy_reg_backward_kernel(float *dprobs, const float *probs, double weight, size_t rows, int T) {
    int lane = threadIdx.x % 32;
    for (size_t r = warp_row_first(); r < rows; r += warp_row_stride()) {
        int i = (int)(r % T);
        if (i == 0) continue;
        const float *p = probs + r * T;
        float *d = dprobs + r * T;
        float w = (float)(weight / log((double)(i + 1)));
        for (int j = lane; j <= i; j += 32) if (p[j] > 0.0f) d[j] -= w * (logf(p[j]) + 1.0f);
    }
}

// dprobs (+=) (BH,T,T) on the causal triangle (the rest untouched), probs (BH,T,T)
void cuda_attn_entropy_reg_backward(void *dprobs, const void *probs, double weight, int BH, int T) {
    size_t rows = (size_t)BH * T;
    if (rows == 0) return;
    entropy_reg_backward_kernel<<<warp_rows_grid(rows), WARP_ROWS_BLOCK, 0, cuda_context()->stream>>>(
        (float *)dprobs, (const float *)probs, weight, rows, T);
    cudaCheckLaunch();
}

// ---- head pruning -----------------------------------------------------------------------------------

// y (B,NH,T,hs) *= mask[h]; one thread per element.
__global__ static void head_mask_apply_kernel(float *y, const float *mask, size_t n, int NH, size_t head_size) {
    GRID_STRIDE(idx, n)
        y[idx] *= mask[(idx / head_size) % NH];
}

// y (B,NH,T,hs), mask (NH)
void cuda_head_mask_apply(void *y, const void *mask, int B, int NH, int T, int hs) {
    size_t n = (size_t)B * NH * T * hs;
    if (n == 0) return;
    head_mask_apply_kernel<<<grid_for(n, BLOCK), BLOCK, 0, cuda_context()->stream>>>(
        (float *)y, (const float *)mask, n, NH, (size_t)T * hs);
    cudaCheckLaunch();
}
