// attention.cu: the pieces of causal multi-head attention on the GPU (CPU twin: src/cpu/attention.inc).
//
// Heads live as (B,NH,T,hs), so every (batch, head) pair is one contiguous (T,hs) matrix and the
// three attention products are strided-batched GEMMs over BH = B * NH matrices: one cuBLAS call
// each, in the precision the backend was created with (cuda_context()->gemm_compute: bf16 tensor
// cores or plain fp32; the data stay fp32 in memory either way). The head reshapes and the causal
// softmax are plain kernels: the reshapes are one thread per element (the innermost index d is the
// thread index, so reads and writes are coalesced), the softmax is one warp per row (a row is at
// most a few thousand elements, and a warp reduces it with shuffles, without shared memory or
// block barriers).
//
// Row-major vs column-major. cuBLAS is column-major: a row-major (R,C) matrix with leading
// dimension ld is, to cuBLAS, the column-major (C,R) matrix X^T with the same ld. A row-major
// product C = op(A) op(B) is therefore computed as the column-major product C^T = op(B)^T op(A)^T:
// the operands swap places, and each keeps its own transpose flag (a row-major operand that is
// used untransposed is, seen column-major, already the transpose cuBLAS needs). Each call below
// spells out what cuBLAS computes in its own (column-major) terms.
#include <math.h>
#include "reduce.cuh"

#define BLOCK 256   // threads per block of the reshape kernels (the softmax: reduce.cuh's WARP_ROWS_BLOCK)

// ---- head reshapes --------------------------------------------------------------------------------

// q, k, v (B,NH,T,hs) <- qkv (B,T,3C); one thread per element of q, d fastest.
__global__ static void heads_split_kernel(float *q, float *k, float *v, const float *qkv, int B, int T, int NH, int hs) {
    size_t n = (size_t)B * NH * T * hs, C = (size_t)NH * hs;
    GRID_STRIDE(idx, n) {
        size_t d = idx % hs, t = (idx / hs) % T, h = (idx / ((size_t)hs * T)) % NH, b = idx / ((size_t)hs * T * NH);
        const float *row = qkv + (b * T + t) * 3 * C + h * hs + d;
        q[idx] = row[0];
        k[idx] = row[C];
        v[idx] = row[2 * C];
    }
}

// dqkv (=) (B,T,3C) <- dq, dk, dv (B,NH,T,hs); one thread per (b,t,h,d), writing the q, k and v parts.
__global__ static void heads_split_backward_kernel(float *dqkv, const float *dq, const float *dk, const float *dv,
                                                   int B, int T, int NH, int hs) {
    size_t n = (size_t)B * T * NH * hs, C = (size_t)NH * hs;
    GRID_STRIDE(idx, n) {
        size_t c = idx % C, bt = idx / C, h = c / hs, d = c % hs, b = bt / T, t = bt % T;
        size_t src = ((b * NH + h) * T + t) * hs + d;
        float *row = dqkv + bt * 3 * C + c;
        row[0] = dq[src];
        row[C] = dk[src];
        row[2 * C] = dv[src];
    }
}

// out (B,T,C) <- y (B,NH,T,hs); one thread per element of out.
__global__ static void heads_merge_kernel(float *out, const float *y, int B, int T, int NH, int hs) {
    size_t n = (size_t)B * T * NH * hs, C = (size_t)NH * hs;
    GRID_STRIDE(idx, n) {
        size_t c = idx % C, bt = idx / C, h = c / hs, d = c % hs, b = bt / T, t = bt % T;
        out[idx] = y[((b * NH + h) * T + t) * hs + d];
    }
}

// dy (=) (B,NH,T,hs) <- dout (B,T,C); one thread per element of dy.
__global__ static void heads_merge_backward_kernel(float *dy, const float *dout, int B, int T, int NH, int hs) {
    size_t n = (size_t)B * NH * T * hs, C = (size_t)NH * hs;
    GRID_STRIDE(idx, n) {
        size_t d = idx % hs, t = (idx / hs) % T, h = (idx / ((size_t)hs * T)) % NH, b = idx / ((size_t)hs * T * NH);
        dy[idx] = dout[(b * T + t) * C + h * hs + d];
    }
}

// q, k, v (B,NH,T,hs), qkv (B,T,3C)
void cuda_heads_split(void *q, void *k, void *v, const void *qkv, int B, int T, int NH, int hs) {
    size_t n = (size_t)B * NH * T * hs;
    if (n == 0) return;
    heads_split_kernel<<<grid_for(n, BLOCK), BLOCK, 0, cuda_context()->stream>>>(
        (float *)q, (float *)k, (float *)v, (const float *)qkv, B, T, NH, hs);
    cudaCheckLaunch();
}

// dqkv (+=) (B,T,3C), dq, dk, dv (B,NH,T,hs)
void cuda_heads_split_backward(void *dqkv, const void *dq, const void *dk, const void *dv, int B, int T, int NH, int hs) {
    size_t n = (size_t)B * T * NH * hs;
    if (n == 0) return;
    heads_split_backward_kernel<<<grid_for(n, BLOCK), BLOCK, 0, cuda_context()->stream>>>(
        (float *)dqkv, (const float *)dq, (const float *)dk, (const float *)dv, B, T, NH, hs);
    cudaCheckLaunch();
}

// out (B,T,C), y (B,NH,T,hs)
void cuda_heads_merge(void *out, const void *y, int B, int T, int NH, int hs) {
    size_t n = (size_t)B * T * NH * hs;
    if (n == 0) return;
    heads_merge_kernel<<<grid_for(n, BLOCK), BLOCK, 0, cuda_context()->stream>>>((float *)out, (const float *)y, B, T, NH, hs);
    cudaCheckLaunch();
}

// dy (=) (B,NH,T,hs), dout (B,T,C)
void cuda_heads_merge_backward(void *dy, const void *dout, int B, int T, int NH, int hs) {
    size_t n = (size_t)B * NH * T * hs;
    if (n == 0) return;
    heads_merge_backward_kernel<<<grid_for(n, BLOCK), BLOCK, 0, cuda_context()->stream>>>(
        (float *)dy, (const float *)dout, B, T, NH, hs);
    cudaCheckLaunch();
}

// ---- batched products -------------------------------------------------------------------------------

// One strided-batched GEMM in cuBLAS's own column-major terms, fp32 data, the backend's compute type:
// C_b (m,n) = alpha op(A_b) op(B_b) + beta C_b for b < batch, X_b = X + b * strideX.
static void gemm_batched_colmajor(cublasOperation_t opA, cublasOperation_t opB, int m, int n, int k, float alpha,
                                  const float *A, int lda, long long strideA, const float *B, int ldb, long long strideB,
                                  float beta, float *C, int ldc, long long strideC, int batch) {
    CudaContext *ctx = cuda_context();
    cublasCheck(cublasGemmStridedBatchedEx(ctx->cublas, opA, opB, m, n, k, &alpha, A, CUDA_R_32F, lda, strideA,
                                           B, CUDA_R_32F, ldb, strideB, &beta, C, CUDA_R_32F, ldc, strideC, batch,
                                           ctx->gemm_compute, CUBLAS_GEMM_DEFAULT));
}

// The four products on a block of query rows: per head, rows q0..q0+Q-1 of q, y, dq, dy (BH,T,hs)
// (from row q0, head stride T hs) against all T rows of k, v, dk, dv (BH,T,hs); scores, probs and
// their gradients compact (BH,Q,T). The whole squares are (q0, Q) = (0, T).

// scores (BH,Q,T) = scale q[q0:q0+Q] k^T. Every key, as on the CPU; the softmax reads only the causal
// triangle.
void cuda_attn_scores(void *scores, const void *q, const void *k, double scale, int BH, int T, int hs, int q0, int Q) {
    if (BH <= 0 || T <= 0 || Q <= 0) return;
    long long sh = (long long)T * hs, ss = (long long)Q * T;
    const float *qb = (const float *)q + (size_t)q0 * hs;
    // Row-major S (Q,T) = q k^T is column-major S^T (T,Q) = k q^T. Column-major, the row-major k (T,hs)
    // is k^T (hs,T), ld hs, so op = T gives k; q is q^T (hs,Q), ld hs, used as is (op = N).
    // cuBLAS: S^T (m=T, n=Q) = scale op_T(k^T) (T,hs=k) x op_N(q^T) (hs,Q), ldc T.
    gemm_batched_colmajor(CUBLAS_OP_T, CUBLAS_OP_N, T, Q, hs, (float)scale, (const float *)k, hs, sh, qb, hs, sh, 0.0f,
                          (float *)scores, T, ss, BH);
}

// dq[q0:q0+Q] (+=), dk (+=); dscores (BH,Q,T) with zeros above the diagonal (the op contract: both of
// its producers, softmax_causal_backward and sga_blend_backward, write them), so the GEMMs read it
// whole, as on the CPU.
void cuda_attn_scores_backward(void *dq, void *dk, const void *dscores, const void *q, const void *k, double scale,
                               int BH, int T, int hs, int q0, int Q) {
    if (BH <= 0 || T <= 0 || Q <= 0) return;
    long long sh = (long long)T * hs, ss = (long long)Q * T;
    const float *ds = (const float *)dscores, *qb = (const float *)q + (size_t)q0 * hs;
    float *dqb = (float *)dq + (size_t)q0 * hs;
    // Row-major dq (Q,hs) += scale dS (Q,T) k (T,hs) is column-major dq^T (hs,Q) += scale k^T dS^T.
    // Column-major, k is k^T (hs,T), ld hs, and dS is dS^T (T,Q), ld T: both used as is.
    // cuBLAS: dq^T (m=hs, n=Q) = scale op_N(k^T) (hs,T) x op_N(dS^T) (T,Q) + 1 dq^T, ldc hs.
    gemm_batched_colmajor(CUBLAS_OP_N, CUBLAS_OP_N, hs, Q, T, (float)scale, (const float *)k, hs, sh, ds, T, ss, 1.0f, dqb,
                          hs, sh, BH);
    // Row-major dk (T,hs) += scale dS^T (T,Q) q (Q,hs) is column-major dk^T (hs,T) += scale q^T dS.
    // Column-major, q is q^T (hs,Q), ld hs (as is), dS is dS^T (T,Q), ld T: op = T gives dS.
    // cuBLAS: dk^T (m=hs, n=T) = scale op_N(q^T) (hs,Q) x op_T(dS^T) (Q,T) + 1 dk^T, ldc hs.
    gemm_batched_colmajor(CUBLAS_OP_N, CUBLAS_OP_T, hs, T, Q, (float)scale, qb, hs, sh, ds, T, ss, 1.0f, (float *)dk, hs, sh,
                          BH);
}

// y[q0:q0+Q] (=) probs (BH,Q,T) v. Every key of probs is read, as on the CPU (above the diagonal it
// is exactly zero).
void cuda_attn_values(void *y, const void *probs, const void *v, int BH, int T, int hs, int q0, int Q) {
    if (BH <= 0 || T <= 0 || Q <= 0) return;
    long long sh = (long long)T * hs, ss = (long long)Q * T;
    float *yb = (float *)y + (size_t)q0 * hs;
    // Row-major y (Q,hs) = P (Q,T) v (T,hs) is column-major y^T (hs,Q) = v^T P^T. Column-major, v is
    // v^T (hs,T), ld hs, and P is P^T (T,Q), ld T: both used as is.
    // cuBLAS: y^T (m=hs, n=Q) = op_N(v^T) (hs,T) x op_N(P^T) (T,Q), ldc hs.
    gemm_batched_colmajor(CUBLAS_OP_N, CUBLAS_OP_N, hs, Q, T, 1.0f, (const float *)v, hs, sh, (const float *)probs, T, ss,
                          0.0f, yb, hs, sh, BH);
}

// dprobs (=) (BH,Q,T) = dy[q0:q0+Q] v^T (every key, as on the CPU); dv (+=) = probs^T dy[q0:q0+Q]
void cuda_attn_values_backward(void *dprobs, void *dv, const void *dy, const void *probs, const void *v,
                               int BH, int T, int hs, int q0, int Q) {
    if (BH <= 0 || T <= 0 || Q <= 0) return;
    long long sh = (long long)T * hs, ss = (long long)Q * T;
    const float *dyb = (const float *)dy + (size_t)q0 * hs;
    // Row-major dP (Q,T) = dy v^T is column-major dP^T (T,Q) = v dy^T. Column-major, v is v^T (hs,T),
    // ld hs: op = T gives v; dy is dy^T (hs,Q), ld hs, used as is.
    // cuBLAS: dP^T (m=T, n=Q) = op_T(v^T) (T,hs) x op_N(dy^T) (hs,Q), ldc T.
    gemm_batched_colmajor(CUBLAS_OP_T, CUBLAS_OP_N, T, Q, hs, 1.0f, (const float *)v, hs, sh, dyb, hs, sh, 0.0f,
                          (float *)dprobs, T, ss, BH);
    // Row-major dv (T,hs) += P^T (T,Q) dy (Q,hs) is column-major dv^T (hs,T) += dy^T P. Column-major,
    // dy is dy^T (hs,Q), ld hs (as is), P is P^T (T,Q), ld T: op = T gives P.
    // cuBLAS: dv^T (m=hs, n=T) = op_N(dy^T) (hs,Q) x op_T(P^T) (Q,T) + 1 dv^T, ldc hs.
    gemm_batched_colmajor(CUBLAS_OP_N, CUBLAS_OP_T, hs, T, Q, 1.0f, dyb, hs, sh, (const float *)probs, T, ss, 1.0f,
                          (float *)dv, hs, sh, BH);
}

// ---- causal softmax ---------------------------------------------------------------------------------

// One warp per row of (BH*Q, T): row r is query position i = q0 + r % Q and sees keys j <= i. The
// loop bound depends on the warp only, so every lane reaches every shuffle.
__global__ static void softmax_causal_forward_kernel(float *probs, const float *scores, size_t rows, int T, int q0, int Q) {
    int lane = threadIdx.x % 32;
    for (size_t r = warp_row_first(); r < rows; r += warp_row_stride()) {
        int i = q0 + (int)(r % Q);
        const float *s = scores + r * T;
        float *p = probs + r * T;
        float maxval = -INFINITY;
        for (int j = lane; j <= i; j += 32) maxval = fmaxf(maxval, s[j]);
        maxval = warp_max(maxval);
        float sum = 0.0f;
        for (int j = lane; j <= i; j += 32) sum += expf(s[j] - maxval);
        float inv = 1.0f / warp_sum(sum);
        for (int j = lane; j < T; j += 32) p[j] = j <= i ? expf(s[j] - maxval) * inv : 0.0f;
    }
}

// dscores = probs * (dprobs - <probs, dprobs>) on the causal triangle, exact zeros above (which
// attn_scores_backward relies on); one warp per row, row r is query i = q0 + r % Q.
__global__ static void softmax_causal_backward_kernel(float *dscores, const float *dprobs, const float *probs, size_t rows,
                                                      int T, int q0, int Q) {
    int lane = threadIdx.x % 32;
    for (size_t r = warp_row_first(); r < rows; r += warp_row_stride()) {
        int i = q0 + (int)(r % Q);
        const float *p = probs + r * T, *dp = dprobs + r * T;
        float *ds = dscores + r * T;
        float dot = 0.0f;
        for (int j = lane; j <= i; j += 32) dot += p[j] * dp[j];
        dot = warp_sum(dot);
        for (int j = lane; j < T; j += 32) ds[j] = j <= i ? p[j] * (dp[j] - dot) : 0.0f;
    }
}

// probs (BH,Q,T), scores (BH,Q,T) read on the causal triangle only
void cuda_softmax_causal_forward(void *probs, const void *scores, int BH, int T, int q0, int Q) {
    size_t rows = (size_t)BH * Q;
    if (rows == 0) return;
    softmax_causal_forward_kernel<<<warp_rows_grid(rows), WARP_ROWS_BLOCK, 0, cuda_context()->stream>>>(
        (float *)probs, (const float *)scores, rows, T, q0, Q);
    cudaCheckLaunch();
}

// dscores (=) (BH,Q,T); dprobs, probs (BH,Q,T) read on the causal triangle only
void cuda_softmax_causal_backward(void *dscores, const void *dprobs, const void *probs, int BH, int T, int q0, int Q) {
    size_t rows = (size_t)BH * Q;
    if (rows == 0) return;
    softmax_causal_backward_kernel<<<warp_rows_grid(rows), WARP_ROWS_BLOCK, 0, cuda_context()->stream>>>(
        (float *)dscores, (const float *)dprobs, (const float *)probs, rows, T, q0, Q);
    cudaCheckLaunch();
}
