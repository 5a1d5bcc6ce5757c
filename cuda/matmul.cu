// matmul.cu: dense layers (out = inp W^T + bias) of the CUDA backend, through cuBLAS.
//
// Operands and outputs are fp32 in memory; the compute type is the context's gemm_compute:
// CUBLAS_COMPUTE_32F_FAST_16BF in training (cuBLAS rounds the operands to bf16 and runs the tensor
// cores, accumulating in fp32) or CUBLAS_COMPUTE_32F in the tests (plain fp32, matching the CPU).
//
// Row-major <-> column-major. cuBLAS is column-major; our tensors are row-major. A row-major
// (R, K) matrix X with leading dimension K is, byte for byte, the column-major (K, R) matrix X^T
// with leading dimension K. So every row-major product P = Q S is computed as the column-major
// product P^T = S^T Q^T, where S^T and Q^T are the buffers of S and Q read as they are (op N),
// and a transpose in the row-major formula becomes op T on the buffer. Per GEMM below:
//   forward   out (N,OC) = inp (N,C) W^T          ->  out^T (OC,N) = W (OC,C) inp^T (C,N)
//             W buffer = col-major W^T (C,OC), ld C: op T gives W;  inp buffer = inp^T (C,N), ld C: op N
//             gemm(T, N, m=OC, n=N, k=C, A=W lda=C, B=inp ldb=C, C=out ldc=OC)
//   dinp      dinp (N,C) += dout (N,OC) W (OC,C)  ->  dinp^T (C,N) += W^T (C,OC) dout^T (OC,N)
//             W buffer = W^T, ld C: op N;  dout buffer = dout^T (OC,N), ld OC: op N
//             gemm(N, N, m=C, n=N, k=OC, A=W lda=C, B=dout ldb=OC, beta=1, C=dinp ldc=C)
//   dweight   dW (OC,C) += dout^T (OC,N) inp (N,C) ->  dW^T (C,OC) += inp^T (C,N) dout (N,OC)
//             inp buffer = inp^T, ld C: op N;  dout buffer = dout^T (OC,N), ld OC: op T gives dout
//             gemm(N, T, m=C, n=OC, k=N, A=inp lda=C, B=dout ldb=OC, beta=1, C=dW ldc=C)
//
// The bias is written into out first and the forward GEMM accumulates onto it (beta = 1), as the
// CPU twin does. dbias sums dout over the N rows: a fixed chunking of the rows into a scratch
// buffer of partial sums, then the chunks added in order (deterministic, no atomics).
#include "reduce.cuh"

#define MM_THREADS 256
#define MM_BIAS_THREADS 64      // columns per block of the dbias kernels
#define MM_BIAS_CHUNKS 64       // row chunks of dbias (fixed: the result does not depend on the GPU)

// out (N,OC) = bias (OC) broadcast over the rows
static __global__ void broadcast_rows_kernel(float *out, const float *bias, int OC, size_t n) {
    GRID_STRIDE(idx, n)
        out[idx] = bias[idx % OC];
}

// partial (chunks,OC): column sums of dout (N,OC) over the rows of chunk blockIdx.y, in row order
static __global__ void column_sum_partial_kernel(float *partial, const float *dout, int N, int OC, int chunks) {
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    int ch = blockIdx.y;
    if (o >= OC) return;
    int i0 = (int)((long long)N * ch / chunks), i1 = (int)((long long)N * (ch + 1) / chunks);
    float s = 0.0f;
    for (int i = i0; i < i1; i++) s += dout[(size_t)i * OC + o];
    partial[(size_t)ch * OC + o] = s;
}

// dbias (+=) (OC): the chunks of partial (chunks,OC) added in order
static __global__ void column_sum_finish_kernel(float *dbias, const float *partial, int OC, int chunks) {
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= OC) return;
    float s = dbias[o];
    for (int ch = 0; ch < chunks; ch++) s += partial[(size_t)ch * OC + o];
    dbias[o] = s;
}

// Column-major C (m,n) = alpha op(A) op(B) + beta C with fp32 operands and the context's compute type.
static void gemm_f32(cublasOperation_t opA, cublasOperation_t opB, int m, int n, int k, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc) {
    CudaContext *ctx = cuda_context();
    float alpha = 1.0f;
    cublasCheck(cublasGemmEx(ctx->cublas, opA, opB, m, n, k, &alpha, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb, &beta,
                             C, CUDA_R_32F, ldc, ctx->gemm_compute, CUBLAS_GEMM_DEFAULT));
}

// out (N,OC) = inp (N,C) weight^T (C,OC) + bias (OC) or no bias when NULL
void cuda_matmul_forward(void *out, const void *inp, const void *weight, const void *bias, int N, int C, int OC) {
    if (N <= 0 || OC <= 0) return;
    CudaContext *ctx = cuda_context();
    size_t n = (size_t)N * OC;
    float beta = 0.0f;
    if (bias) {
        unsigned int blocks = ceil_div(n, MM_THREADS), cap = 32u * (unsigned int)ctx->sm_count;
        broadcast_rows_kernel<<<blocks < cap ? blocks : cap, MM_THREADS, 0, ctx->stream>>>((float *)out, (const float *)bias,
                                                                                          OC, n);
        cudaCheckLaunch();
        beta = 1.0f;
    }
    if (C <= 0) {   // an empty product: out is the bias alone (cuBLAS rejects leading dimensions of 0)
        if (!bias) cudaCheck(cudaMemsetAsync(out, 0, n * sizeof(float), ctx->stream));
        return;
    }
    gemm_f32(CUBLAS_OP_T, CUBLAS_OP_N, OC, N, C, (const float *)weight, C, (const float *)inp, C, beta, (float *)out, OC);
}

// dinp (= or +=, dinp_write) (N,C) or NULL, dweight (+=) (OC,C), dbias (+=) (OC) or NULL, dout (N,OC), inp (N,C),
// weight (OC,C). beta 0 for GRAD_ASSIGN: cuBLAS does not read C then, so stale contents never leak in.
void cuda_matmul_backward(void *dinp, GradWrite dinp_write, void *dweight, void *dbias, const void *dout, const void *inp,
                          const void *weight, int N, int C, int OC) {
    if (N <= 0) return;
    CudaContext *ctx = cuda_context();
    if (OC <= 0) {   // an empty sum: dinp is 0 (assigned) or unchanged
        if (dinp && C > 0 && dinp_write == GRAD_ASSIGN)
            cudaCheck(cudaMemsetAsync(dinp, 0, (size_t)N * C * sizeof(float), ctx->stream));
        return;
    }
    if (C > 0) {
        if (dinp)
            gemm_f32(CUBLAS_OP_N, CUBLAS_OP_N, C, N, OC, (const float *)weight, C, (const float *)dout, OC,
                     dinp_write == GRAD_ACCUMULATE ? 1.0f : 0.0f, (float *)dinp, C);
        gemm_f32(CUBLAS_OP_N, CUBLAS_OP_T, C, OC, N, (const float *)inp, C, (const float *)dout, OC, 1.0f,
                 (float *)dweight, C);
    }
    if (!dbias) return;
    int chunks = N < MM_BIAS_CHUNKS ? N : MM_BIAS_CHUNKS;
    float *partial = NULL;
    cudaCheck(cudaMallocAsync((void **)&partial, (size_t)chunks * OC * sizeof(float), ctx->stream));
    dim3 grid(ceil_div(OC, MM_BIAS_THREADS), chunks);
    column_sum_partial_kernel<<<grid, MM_BIAS_THREADS, 0, ctx->stream>>>(partial, (const float *)dout, N, OC, chunks);
    cudaCheckLaunch();
    column_sum_finish_kernel<<<ceil_div(OC, MM_BIAS_THREADS), MM_BIAS_THREADS, 0, ctx->stream>>>((float *)dbias, partial,
                                                                                              OC, chunks);
    cudaCheckLaunch();
    cudaCheck(cudaFreeAsync(partial, ctx->stream));
}
