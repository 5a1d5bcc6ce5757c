// linalg.cu: general dense products and small reductions used by R3SI and the traces (docs/design.md
// section 4; CPU twin: src/cpu/linalg.inc).
//
// gemm always runs in plain fp32 (CUBLAS_COMPUTE_32F), whatever GEMM precision the backend was
// created with: it builds the Gram and covariance matrices whose eigenvectors R3SI solves for, and
// bf16-rounded operands would move those eigenvectors. The reductions are deterministic: diag_sum
// is one block with a fixed tree in double; column_sums adds chunks of 256 rows per column in a
// fixed order and then the chunks' sums in order (fp32, so its rounding differs from the CPU's
// single pass over the rows by a few ulps, and not from run to run).
#include "reduce.cuh"

#define BLOCK 256                       // threads per block

// C (M,N) = alpha op(A) op(B) + beta C, all row-major with leading dimensions lda, ldb, ldc.
// cuBLAS is column-major: a row-major (R,C) matrix with leading dimension ld is, to cuBLAS, its
// transpose (C,R) with the same ld. So row-major C = op(A) op(B) is computed as the column-major
// C^T (N,M) = op(B)^T op(A)^T: B comes first, A second, and each keeps its own flag (untransposed,
// the column-major view of the row-major B (K,N) is B^T = op(B)^T already; transposed, B is stored
// (N,K) and its view B^T must be transposed once more to give op(B)^T = B). The leading-dimension
// rules match as well: row-major lda >= K (no transpose) or >= M (transpose) is exactly cuBLAS's
// lda >= k or >= m of the swapped call.
// cuBLAS: C^T (m=N, n=M) = alpha op(B^T) (N,K) x op(A^T) (K,M) + beta C^T, ldc.
void cuda_gemm(int transA, int transB, int M, int N, int K, double alpha, const void *A, int lda, const void *B,
               int ldb, double beta, void *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    CudaContext *ctx = cuda_context();
    float alpha_f = (float)alpha, beta_f = (float)beta;
    cublasCheck(cublasGemmEx(ctx->cublas, transB ? CUBLAS_OP_T : CUBLAS_OP_N, transA ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K,
                             &alpha_f, B, CUDA_R_32F, ldb, A, CUDA_R_32F, lda, &beta_f, C, CUDA_R_32F, ldc,
                             CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// y (+=) a x; one thread per element.
__global__ static void axpy_kernel(float *y, float a, const float *x, size_t n) {
    GRID_STRIDE(i, n)
        y[i] += a * x[i];
}

// y (+=) (n), x (n)
void cuda_axpy(void *y, double a, const void *x, size_t n) {
    if (n == 0) return;
    axpy_kernel<<<grid_for(n, BLOCK), BLOCK, 0, cuda_context()->stream>>>((float *)y, (float)a, (const float *)x, n);
    cudaCheckLaunch();
}

// out[0] = trace of C (D,D) in double: thread t adds C[i,i] for i = t, t + 256, ... in order, then a
// fixed tree adds the threads. One block of CUDA_REDUCE_BLOCKS threads: D is a model width, small.
__global__ static void diag_sum_kernel(double *out, const float *C, int D) {
    __shared__ double buf[CUDA_REDUCE_BLOCKS];
    double s = 0.0;
    for (int i = threadIdx.x; i < D; i += CUDA_REDUCE_BLOCKS) s += (double)C[(size_t)i * D + i];
    double total = block_tree_sum(s, buf);
    if (threadIdx.x == 0) out[0] = total;
}

// C (D,D); returns its trace (synchronizes)
double cuda_diag_sum(const void *C, int D) {
    if (D <= 0) return 0.0;
    CudaContext *ctx = cuda_context();
    diag_sum_kernel<<<1, CUDA_REDUCE_BLOCKS, 0, ctx->stream>>>(ctx->reduce_scratch, (const float *)C, D);
    cudaCheckLaunch();
    return reduce_scratch_result(ctx);
}

#define COLUMN_CHUNK_ROWS 256   // rows one block sums per column
#define COLUMN_TILE 32          // columns of a block; its 8 warps split the chunk's rows

// partial (chunks, D): the sum of rows [256 k, 256 k + 256) of each column, k = blockIdx.y. Warp w
// adds rows w, w + 8, ... of the chunk in order, lane l column 32 blockIdx.x + l (coalesced reads);
// the 8 warps' sums are then added in warp order.
__global__ static void column_chunk_sums_kernel(float *partial, const float *X, int N, int D) {
    __shared__ float lanes[BLOCK / COLUMN_TILE][COLUMN_TILE];
    int lane = threadIdx.x % COLUMN_TILE, warp = threadIdx.x / COLUMN_TILE, warps = BLOCK / COLUMN_TILE;
    int c = blockIdx.x * COLUMN_TILE + lane, r0 = blockIdx.y * COLUMN_CHUNK_ROWS;
    int r1 = r0 + COLUMN_CHUNK_ROWS < N ? r0 + COLUMN_CHUNK_ROWS : N;
    float acc = 0.0f;
    if (c < D)
        for (int r = r0 + warp; r < r1; r += warps) acc += X[(size_t)r * D + c];
    lanes[warp][lane] = acc;
    __syncthreads();
    if (warp == 0 && c < D) {
        float sum = lanes[0][lane];
        for (int w = 1; w < warps; w++) sum += lanes[w][lane];
        partial[(size_t)blockIdx.y * D + c] = sum;
    }
}

// sums[c] += partial[0,c] + partial[1,c] + ... in chunk order.
__global__ static void column_sums_finish_kernel(float *sums, const float *partial, int chunks, int D) {
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < D; c += gridDim.x * blockDim.x) {
        float acc = sums[c];
        for (int k = 0; k < chunks; k++) acc += partial[(size_t)k * D + c];
        sums[c] = acc;
    }
}

// sums (+=) (D), X (N,D). Two launches instead of one thread per column, which at D = 2048 left
// all but 8 blocks of the GPU idle while each thread walked the whole batch.
void cuda_column_sums(void *sums, const void *X, int N, int D) {
    if (D <= 0 || N <= 0) return;
    CudaContext *ctx = cuda_context();
    int chunks = (N + COLUMN_CHUNK_ROWS - 1) / COLUMN_CHUNK_ROWS;
    float *partial = NULL;
    cudaCheck(cudaMallocAsync((void **)&partial, (size_t)chunks * D * sizeof(float), ctx->stream));
    dim3 grid((unsigned int)((D + COLUMN_TILE - 1) / COLUMN_TILE), (unsigned int)chunks);
    column_chunk_sums_kernel<<<grid, BLOCK, 0, ctx->stream>>>(partial, (const float *)X, N, D);
    cudaCheckLaunch();
    column_sums_finish_kernel<<<grid_for((size_t)D, BLOCK), BLOCK, 0, ctx->stream>>>((float *)sums, partial, chunks, D);
    cudaCheckLaunch();
    cudaCheck(cudaFreeAsync(partial, ctx->stream));
}
