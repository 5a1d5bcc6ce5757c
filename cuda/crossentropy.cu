// crossentropy.cu: fused softmax + cross-entropy over the vocabulary, its gradient, and argmax on
// the CUDA backend.
//
// One thread block per row: a row is V logits (V up to 50k+), far more than a warp should walk,
// and each row needs two block-wide reductions (max, then sum of exponentials) before it can be
// normalised. The loss is logsumexp - logit[target] as on the CPU twin, which stays accurate
// where probs[target] underflows; logit[target] is read before any thread writes probs, since
// probs may alias logits. Rows whose target is negative get loss 0 and, in the backward pass, a
// zero gradient row, exactly as the CPU twin. A target >= V (a bug upstream: the CPU twin would
// read out of bounds) gives a NaN loss instead of a crash, so the trainer's NaN check reports it.
#include <math.h>
#include "reduce.cuh"

#define CE_THREADS 512      // threads per row of the forward pass
#define CE_BWD_THREADS 256  // threads per row of the backward pass and of argmax

// Block-wide sum (is_max = 0) or max (is_max = 1), returned to every thread. blockDim.x is a
// multiple of 32; `shared` holds 32 floats and may be reused by the next call.
static __device__ float block_reduce(float v, int is_max, float *shared) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    v = is_max ? warp_max(v) : warp_sum(v);
    __syncthreads();   // a previous reduction may still be reading `shared`
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < warps ? shared[lane] : (is_max ? -INFINITY : 0.0f);
    return is_max ? warp_max(v) : warp_sum(v);
}

// losses (N), probs (N,V) = softmax(logits (N,V)) (may alias logits), targets (N); one block per row
static __global__ void crossentropy_forward_kernel(float *losses, float *probs, const float *logits, const int32_t *targets,
                                                   int V) {
    __shared__ float shared[32];
    size_t row = blockIdx.x;
    const float *x = logits + row * V;
    float *p = probs + row * V;
    int target = targets[row];
    // Read by every thread before the first barrier of block_reduce, hence before any write to p.
    float target_logit = target >= 0 && target < V ? x[target] : 0.0f;

    float maxval = -INFINITY;
    for (int j = threadIdx.x; j < V; j += blockDim.x) maxval = fmaxf(maxval, x[j]);
    maxval = block_reduce(maxval, 1, shared);

    // Each thread rewrites only the elements it read, so aliasing p and x is safe.
    float sum = 0.0f;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float e = expf(x[j] - maxval);
        p[j] = e;
        sum += e;
    }
    sum = block_reduce(sum, 0, shared);

    if (threadIdx.x == 0) {
        float logsumexp = maxval + logf(sum);
        losses[row] = target < 0 ? 0.0f : target < V ? logsumexp - target_logit : __int_as_float(0x7fc00000);
    }
    float inv = 1.0f / sum;
    for (int j = threadIdx.x; j < V; j += blockDim.x) p[j] *= inv;
}

// dlogits (=) (N,V) = scale (probs - onehot(target)), zero rows where target < 0; may alias probs
static __global__ void crossentropy_backward_kernel(float *dlogits, const float *probs, const int32_t *targets, float scale,
                                                    int V) {
    size_t row = blockIdx.x;
    const float *p = probs + row * V;
    float *d = dlogits + row * V;
    int target = targets[row];
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float g = 0.0f;
        if (target >= 0) {
            g = scale * p[j];
            if (j == target) g -= scale;
        }
        d[j] = g;
    }
}

// Is (v, i) ahead of (best_v, best_i) in the CPU twin's order: the larger value, the lower index
// on ties; an index < 0 is "nothing yet".
static __device__ int argmax_better(float v, int i, float best_v, int best_i) {
    if (i < 0) return 0;
    if (best_i < 0) return 1;
    return v > best_v || (v == best_v && i < best_i);
}

// predictions (N) = argmax over V of probs (N,V), the lowest index among equal maxima; one block per row
static __global__ void argmax_rows_kernel(int32_t *predictions, const float *probs, int V) {
    __shared__ float shared_v[32];
    __shared__ int shared_i[32];
    size_t row = blockIdx.x;
    const float *p = probs + row * V;
    // Each thread scans ascending j and keeps the first strict maximum, as the CPU loop does.
    float best_v = 0.0f;
    int best_i = -1;
    for (int j = threadIdx.x; j < V; j += blockDim.x)
        if (best_i < 0 || p[j] > best_v) { best_v = p[j]; best_i = j; }
    for (int offset = 16; offset > 0; offset >>= 1) {
        float v = __shfl_xor_sync(0xffffffffu, best_v, offset);
        int i = __shfl_xor_sync(0xffffffffu, best_i, offset);
        if (argmax_better(v, i, best_v, best_i)) { best_v = v; best_i = i; }
    }
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    if (lane == 0) { shared_v[warp] = best_v; shared_i[warp] = best_i; }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < warps; w++)
            if (argmax_better(shared_v[w], shared_i[w], best_v, best_i)) { best_v = shared_v[w]; best_i = shared_i[w]; }
        predictions[row] = best_i < 0 ? 0 : best_i;
    }
}

// losses (N), probs (N,V) (may alias logits), logits (N,V), targets (N)
void cuda_crossentropy_forward(void *losses, void *probs, const void *logits, const int32_t *targets, int N, int V) {
    if (N <= 0 || V <= 0) return;
    crossentropy_forward_kernel<<<N, CE_THREADS, 0, cuda_context()->stream>>>((float *)losses, (float *)probs,
                                                                              (const float *)logits, targets, V);
    cudaCheckLaunch();
}

// dlogits (=) (N,V), probs (N,V) (may alias dlogits), targets (N); dloss rounded to fp32 as on the CPU
void cuda_crossentropy_backward(void *dlogits, const void *probs, const int32_t *targets, double dloss, int N, int V) {
    if (N <= 0 || V <= 0) return;
    crossentropy_backward_kernel<<<N, CE_BWD_THREADS, 0, cuda_context()->stream>>>((float *)dlogits, (const float *)probs,
                                                                                   targets, (float)dloss, V);
    cudaCheckLaunch();
}

// predictions (N), probs (N,V)
void cuda_argmax_rows(int32_t *predictions, const void *probs, int N, int V) {
    if (N <= 0) return;
    argmax_rows_kernel<<<N, CE_BWD_THREADS, 0, cuda_context()->stream>>>(predictions, (const float *)probs, V);
    cudaCheckLaunch();
}
