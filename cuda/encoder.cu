// encoder.cu: token + position embedding of the CUDA backend.
//
// The forward pass is a gather, one thread per output element. The backward pass scatters dout
// into the rows of dwte named by the tokens; a token that occurs many times would need atomics,
// whose order (and so the float result) changes from run to run. Instead each block owns a range
// of token ids, finds the positions of the micro-batch that hold one of them (a scan of the
// tokens with warp ballots, in sequence order) and adds their rows in that order, starting from
// the old dwte row: the same additions in the same order as the CPU twin, deterministic, and with
// nothing copied to the host (no synchronisation in the backward pass).
#include <stdlib.h>
#include <string.h>
#include "reduce.cuh"

#define ENCODER_THREADS 256

// out (B,T,C) = wte[tokens] (V,C) + wpe (T,C); tokens (B,T)
static __global__ void encoder_forward_kernel(float *out, const int32_t *tokens, const float *wte, const float *wpe,
                                              int T, int C, size_t n) {
    GRID_STRIDE(idx, n) {
        size_t bt = idx / C;
        int c = (int)(idx % C);
        int t = (int)(bt % T);
        out[idx] = wte[(size_t)tokens[bt] * C + c] + wpe[(size_t)t * C + c];
    }
}

// dwpe (+=) (T,C): each element sums dout (B,T,C) over b in order, starting from its old value.
static __global__ void encoder_dwpe_kernel(float *dwpe, const float *dout, int B, int T, int C) {
    size_t n = (size_t)T * C;
    GRID_STRIDE(idx, n) {
        float acc = dwpe[idx];
        for (int b = 0; b < B; b++) acc += dout[(size_t)b * n + idx];
        dwpe[idx] = acc;
    }
}

#define ENCODER_IDS_PER_BLOCK 32   // token ids one block owns: V / 32 blocks each scan the B*T tokens

// dwte (+=) (V,C): block b owns the token ids [32 b, 32 b + 32) and adds, for every position p of
// tokens (BT) that holds one of them, in ascending p, the dout (BT,C) row p to the id's row; the
// threads split the channels, so each element's additions run in sequence order in one thread.
static __global__ void encoder_dwte_kernel(float *dwte, const float *dout, const int32_t *tokens, int BT, int C) {
    __shared__ int hits[ENCODER_THREADS];                 // this chunk's positions of our ids, ascending
    __shared__ int warp_hits[ENCODER_THREADS / 32];
    int v0 = blockIdx.x * ENCODER_IDS_PER_BLOCK, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    for (int base = 0; base < BT; base += ENCODER_THREADS) {   // the same trip count in every thread
        int p = base + threadIdx.x;
        int mine = p < BT && tokens[p] >= v0 && tokens[p] < v0 + ENCODER_IDS_PER_BLOCK;
        unsigned int ballot = __ballot_sync(0xffffffffu, mine);
        if (lane == 0) warp_hits[warp] = __popc(ballot);
        __syncthreads();
        int before = 0, total = 0;
        for (int w = 0; w < ENCODER_THREADS / 32; w++) {
            if (w < warp) before += warp_hits[w];
            total += warp_hits[w];
        }
        if (mine) hits[before + __popc(ballot & ((1u << lane) - 1u))] = p;
        __syncthreads();
        for (int h = 0; h < total; h++) {
            int q = hits[h];
            float *row = dwte + (size_t)tokens[q] * C;
            const float *src = dout + (size_t)q * C;
            for (int c = threadIdx.x; c < C; c += ENCODER_THREADS) row[c] += src[c];
        }
        __syncthreads();   // hits and warp_hits are rewritten by the next chunk
    }
}

void cuda_encoder_forward(void *out, const int32_t *tokens, const void *wte, const void *wpe, int B, int T, int C) {
    size_t n = (size_t)B * T * C;
    if (n == 0) return;
    encoder_forward_kernel<<<stride_grid(n, ENCODER_THREADS), ENCODER_THREADS, 0, cuda_context()->stream>>>(
        (float *)out, tokens, (const float *)wte, (const float *)wpe, T, C, n);
    cudaCheckLaunch();
}

// dwte (+=) (V,C), dwpe (+=) (T,C), dout (B,T,C), tokens (B,T) with every id in [0, V)
void cuda_encoder_backward(void *dwte, void *dwpe, const void *dout, const int32_t *tokens, int B, int T, int C, int V) {
    int BT = B * T;
    if (BT == 0 || C == 0 || V == 0) return;
    CudaContext *ctx = cuda_context();
    encoder_dwpe_kernel<<<stride_grid((size_t)T * C, ENCODER_THREADS), ENCODER_THREADS, 0, ctx->stream>>>(
        (float *)dwpe, (const float *)dout, B, T, C);
    cudaCheckLaunch();
    unsigned int blocks = (unsigned int)(((size_t)V + ENCODER_IDS_PER_BLOCK - 1) / ENCODER_IDS_PER_BLOCK);
    encoder_dwte_kernel<<<blocks, ENCODER_THREADS, 0, ctx->stream>>>((float *)dwte, (const float *)dout, tokens, BT, C);
    cudaCheckLaunch();
}
