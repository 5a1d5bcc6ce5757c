// encoder.cu: token + position embedding of the CUDA backend.
//
// The forward pass is a gather, one thread per output element. The backward pass scatters dout
// into the rows of dwte named by the tokens; a token that occurs many times would need atomics,
// whose order (and so the float result) changes from run to run. Instead the host buckets the
// positions by token id (a counting sort of the B*T tokens, stable so each bucket lists its
// positions in sequence order) and one block per distinct token adds its positions' rows in
// that order, starting from the old dwte row: the same additions in the same order as the CPU
// twin, so the result is deterministic and matches it to rounding of the individual adds.
#include <stdlib.h>
#include <string.h>
#include "reduce.cuh"

#define ENCODER_THREADS 256

// out (B,T,C) = wte[tokens] (V,C) + wpe (T,C); tokens (B,T)
static __global__ void encoder_forward_kernel(float *out, const int32_t *tokens, const float *wte, const float *wpe,
                                              int T, int C, size_t n) {
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n; idx += (size_t)gridDim.x * blockDim.x) {
        size_t bt = idx / C;
        int c = (int)(idx % C);
        int t = (int)(bt % T);
        out[idx] = wte[(size_t)tokens[bt] * C + c] + wpe[(size_t)t * C + c];
    }
}

// dwpe (+=) (T,C): each element sums dout (B,T,C) over b in order, starting from its old value.
static __global__ void encoder_dwpe_kernel(float *dwpe, const float *dout, int B, int T, int C) {
    size_t n = (size_t)T * C;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n; idx += (size_t)gridDim.x * blockDim.x) {
        float acc = dwpe[idx];
        for (int b = 0; b < B; b++) acc += dout[(size_t)b * n + idx];
        dwpe[idx] = acc;
    }
}

// dwte (+=) (V,C): block u owns the distinct token ids[u] and adds the dout (B*T,C) rows of the
// positions bucket[start[u] .. start[u+1]) in that (ascending) order, threads over channels.
static __global__ void encoder_dwte_kernel(float *dwte, const float *dout, const int32_t *ids, const int32_t *start,
                                           const int32_t *bucket, int C) {
    int u = blockIdx.x;
    float *row = dwte + (size_t)ids[u] * C;
    int p0 = start[u], p1 = start[u + 1];
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float acc = row[c];
        for (int p = p0; p < p1; p++) acc += dout[(size_t)bucket[p] * C + c];
        row[c] = acc;
    }
}

void cuda_encoder_forward(void *out, const int32_t *tokens, const void *wte, const void *wpe, int B, int T, int C) {
    size_t n = (size_t)B * T * C;
    if (n == 0) return;
    encoder_forward_kernel<<<stride_grid(n, ENCODER_THREADS), ENCODER_THREADS, 0, cuda_context()->stream>>>(
        (float *)out, tokens, (const float *)wte, (const float *)wpe, T, C, n);
    cudaCheckLaunch();
}

// Host side of the counting sort. From tokens (BT) it builds, in one int32 array `plan`:
//   ids (U)       the distinct token ids, ascending
//   start (U+1)   bucket u is bucket[start[u] .. start[u+1])
//   bucket (BT)   positions bt grouped by token, ascending within a group
// and returns U. The caller frees *plan.
static int bucket_tokens(const int32_t *tokens, int BT, int32_t **plan) {
    int32_t max_id = 0;
    for (int i = 0; i < BT; i++) {
        if (tokens[i] < 0) die(1, "encoder_backward: negative token id %d at position %d", (int)tokens[i], i);
        if (tokens[i] > max_id) max_id = tokens[i];
    }
    int32_t *count = (int32_t *)calloc((size_t)max_id + 2, sizeof(int32_t));
    if (!count) die(1, "out of memory bucketing %d tokens", BT);
    for (int i = 0; i < BT; i++) count[tokens[i]]++;
    int U = 0;
    for (int32_t v = 0; v <= max_id; v++) U += count[v] > 0;
    int32_t *p = (int32_t *)malloc(((size_t)2 * U + 1 + BT) * sizeof(int32_t));
    if (!p) die(1, "out of memory bucketing %d tokens", BT);
    int32_t *ids = p, *start = p + U, *bucket = p + 2 * U + 1;
    // count[v] becomes the next free slot of token v's bucket (exclusive prefix sum).
    int u = 0, offset = 0;
    for (int32_t v = 0; v <= max_id; v++) {
        if (count[v] == 0) continue;
        ids[u] = v;
        start[u] = offset;
        offset += count[v];
        count[v] = start[u];
        u++;
    }
    start[U] = offset;
    for (int i = 0; i < BT; i++) bucket[count[tokens[i]]++] = i;   // ascending i: stable
    free(count);
    *plan = p;
    return U;
}

// dwte (+=) (V,C), dwpe (+=) (T,C), dout (B,T,C), tokens (B,T)
void cuda_encoder_backward(void *dwte, void *dwpe, const void *dout, const int32_t *tokens, int B, int T, int C) {
    int BT = B * T;
    if (BT == 0 || C == 0) return;
    CudaContext *ctx = cuda_context();
    encoder_dwpe_kernel<<<stride_grid((size_t)T * C, ENCODER_THREADS), ENCODER_THREADS, 0, ctx->stream>>>(
        (float *)dwpe, (const float *)dout, B, T, C);
    cudaCheckLaunch();

    int32_t *host_tokens = (int32_t *)malloc((size_t)BT * sizeof(int32_t));
    if (!host_tokens) die(1, "out of memory copying %d tokens", BT);
    cudaCheck(cudaMemcpyAsync(host_tokens, tokens, (size_t)BT * sizeof(int32_t), cudaMemcpyDeviceToHost, ctx->stream));
    cudaCheck(cudaStreamSynchronize(ctx->stream));
    int32_t *plan = NULL;
    int U = bucket_tokens(host_tokens, BT, &plan);
    free(host_tokens);

    size_t plan_bytes = ((size_t)2 * U + 1 + BT) * sizeof(int32_t);
    int32_t *dplan = NULL;
    cudaCheck(cudaMallocAsync((void **)&dplan, plan_bytes, ctx->stream));
    cudaCheck(cudaMemcpyAsync(dplan, plan, plan_bytes, cudaMemcpyHostToDevice, ctx->stream));
    // The stream holds nothing but this copy now: waiting for it is cheap and frees the host plan safely.
    cudaCheck(cudaStreamSynchronize(ctx->stream));
    free(plan);

    encoder_dwte_kernel<<<U, ENCODER_THREADS, 0, ctx->stream>>>((float *)dwte, (const float *)dout, dplan, dplan + U,
                                                              dplan + 2 * U + 1, C);
    cudaCheckLaunch();
    cudaCheck(cudaFreeAsync(dplan, ctx->stream));
}
