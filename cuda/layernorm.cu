// layernorm.cu: LayerNorm over the channel axis (eps 1e-5, GPT-2) on the CUDA backend.
//
// One warp per row: a row is C contiguous floats (C is a few hundred to a few thousand), which a
// warp reads coalesced, and the row's mean and variance are warp-shuffle reductions with no
// shared memory or block barriers. Mean and variance are taken in two passes as on the CPU.
//
// The backward pass's dweight and dbias sum over all N rows. Atomics would make the float result
// depend on scheduling, so the rows are cut into the same fixed chunks as the CPU twin
// (min(N, 64) chunks): one kernel writes each chunk's partial sums into a scratch buffer, a second
// adds the chunks in order onto the old gradients. Deterministic, and in the CPU's order.
#include "reduce.cuh"

#define LN_EPS 1e-5f
#define LN_ROW_THREADS 256      // 8 rows (warps) per block
#define LN_PARAM_THREADS 64     // channels per block of the parameter-gradient kernels
#define LN_CHUNKS 64            // row chunks of the parameter gradients (the CPU's REDUCE_CHUNKS)

// out (N,C), mean (N), rstd (N), inp (N,C), weight (C), bias (C)
static __global__ void layernorm_forward_kernel(float *out, float *mean, float *rstd, const float *inp,
                                                const float *weight, const float *bias, int N, int C) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= N) return;   // the whole warp leaves together: the shuffles below see full warps
    const float *x = inp + (size_t)row * C;
    float sum = 0.0f;
    for (int c = lane; c < C; c += 32) sum += x[c];
    float m = warp_sum(sum) / C;
    float sq = 0.0f;
    for (int c = lane; c < C; c += 32) { float d = x[c] - m; sq += d * d; }
    float var = warp_sum(sq) / C;
    float s = 1.0f / sqrtf(var + LN_EPS);
    float *o = out + (size_t)row * C;
    for (int c = lane; c < C; c += 32) o[c] = (x[c] - m) * s * weight[c] + bias[c];
    if (lane == 0) { mean[row] = m; rstd[row] = s; }
}

// dinp (= or +=, accumulate) (N,C) = s (dxhat - mean(dxhat) - xhat mean(dxhat xhat)), dxhat = weight dout;
// one warp per row
static __global__ void layernorm_dinp_kernel(float *dinp, int accumulate, const float *dout, const float *inp,
                                             const float *weight, const float *mean, const float *rstd, int N, int C) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= N) return;
    const float *x = inp + (size_t)row * C, *dy = dout + (size_t)row * C;
    float m = mean[row], s = rstd[row];
    float dnorm = 0.0f, dnorm_norm = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float xhat = (x[c] - m) * s;
        float dxhat = weight[c] * dy[c];
        dnorm += dxhat;
        dnorm_norm += dxhat * xhat;
    }
    float dnorm_mean = warp_sum(dnorm) / C, dnorm_norm_mean = warp_sum(dnorm_norm) / C;
    float *dx = dinp + (size_t)row * C;
    for (int c = lane; c < C; c += 32) {
        float xhat = (x[c] - m) * s;
        float dxhat = weight[c] * dy[c];
        float g = s * (dxhat - dnorm_mean - xhat * dnorm_norm_mean);
        dx[c] = accumulate ? dx[c] + g : g;
    }
}

// partial (chunks,2,C): [ch][0] = sum of xhat dout, [ch][1] = sum of dout over the rows of chunk
// ch = blockIdx.y, in row order; one thread per channel.
static __global__ void layernorm_param_partial_kernel(float *partial, const float *dout, const float *inp,
                                                      const float *mean, const float *rstd, int N, int C, int chunks) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    int ch = blockIdx.y;
    if (c >= C) return;
    int i0 = (int)((long long)N * ch / chunks), i1 = (int)((long long)N * (ch + 1) / chunks);
    float pw = 0.0f, pb = 0.0f;
    for (int i = i0; i < i1; i++) {
        float dy = dout[(size_t)i * C + c];
        float xhat = (inp[(size_t)i * C + c] - mean[i]) * rstd[i];
        pb += dy;
        pw += xhat * dy;
    }
    partial[((size_t)ch * 2 + 0) * C + c] = pw;
    partial[((size_t)ch * 2 + 1) * C + c] = pb;
}

// dweight (+=) (C), dbias (+=) (C): the chunks of partial (chunks,2,C) added in order
static __global__ void layernorm_param_sum_kernel(float *dweight, float *dbias, const float *partial, int C, int chunks) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float w = dweight[c], b = dbias[c];
    for (int ch = 0; ch < chunks; ch++) {
        w += partial[((size_t)ch * 2 + 0) * C + c];
        b += partial[((size_t)ch * 2 + 1) * C + c];
    }
    dweight[c] = w;
    dbias[c] = b;
}

// out (N,C), mean (N), rstd (N), inp (N,C), weight (C), bias (C)
void cuda_layernorm_forward(void *out, void *mean, void *rstd, const void *inp, const void *weight, const void *bias,
                            int N, int C) {
    if (N <= 0 || C <= 0) return;
    int rows_per_block = LN_ROW_THREADS / 32;
    layernorm_forward_kernel<<<ceil_div(N, rows_per_block), LN_ROW_THREADS, 0, cuda_context()->stream>>>(
        (float *)out, (float *)mean, (float *)rstd, (const float *)inp, (const float *)weight, (const float *)bias, N, C);
    cudaCheckLaunch();
}

// dinp (= or +=, dinp_write) (N,C), dweight (+=) (C), dbias (+=) (C), dout (N,C), inp (N,C), weight (C), mean (N),
// rstd (N)
void cuda_layernorm_backward(void *dinp, GradWrite dinp_write, void *dweight, void *dbias, const void *dout, const void *inp,
                             const void *weight, const void *mean, const void *rstd, int N, int C) {
    if (N <= 0 || C <= 0) return;
    CudaContext *ctx = cuda_context();
    int rows_per_block = LN_ROW_THREADS / 32;
    layernorm_dinp_kernel<<<ceil_div(N, rows_per_block), LN_ROW_THREADS, 0, ctx->stream>>>(
        (float *)dinp, dinp_write == GRAD_ACCUMULATE, (const float *)dout, (const float *)inp, (const float *)weight, (const float *)mean,
        (const float *)rstd, N, C);
    cudaCheckLaunch();

    int chunks = N < LN_CHUNKS ? N : LN_CHUNKS;
    float *partial = NULL;
    cudaCheck(cudaMallocAsync((void **)&partial, (size_t)chunks * 2 * C * sizeof(float), ctx->stream));
    dim3 grid(ceil_div(C, LN_PARAM_THREADS), chunks);
    layernorm_param_partial_kernel<<<grid, LN_PARAM_THREADS, 0, ctx->stream>>>(
        partial, (const float *)dout, (const float *)inp, (const float *)mean, (const float *)rstd, N, C, chunks);
    cudaCheckLaunch();
    layernorm_param_sum_kernel<<<ceil_div(C, LN_PARAM_THREADS), LN_PARAM_THREADS, 0, ctx->stream>>>(
        (float *)dweight, (float *)dbias, partial, C, chunks);
    cudaCheckLaunch();
    cudaCheck(cudaFreeAsync(partial, ctx->stream));
}
