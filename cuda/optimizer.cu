// optimizer.cu: deterministic reductions (sum, sum of squares) and the AdamW update on the CUDA
// backend.
//
// The reductions return a double to the host (loss sums, gradient norms for clipping), so they
// must be reproducible bit for bit: a fixed grid of CUDA_REDUCE_BLOCKS blocks, each summing a
// fixed contiguous range of the input in double with a fixed-shape shared-memory tree, writes one
// partial into the context's reduce_scratch; a single block then adds the partials with the same
// tree. The grid does not depend on the GPU's SM count and there are no atomics, so the result is
// the same on every run and every device.
//
// AdamW keeps params, m and v in fp32 and follows the CPU twin's formula operation for operation:
// grads scaled by grad_scale first, bias corrections computed in double on the host and rounded to
// fp32, decoupled weight decay on the pre-update parameter.
#include <math.h>
#include "reduce.cuh"

#define REDUCE_THREADS 256   // power of two: the tree below halves it
#define ADAMW_THREADS 256

// partial (gridDim.x): block b sums x (n), or its squares, over [n b / grid, n (b+1) / grid)
static __global__ void reduce_partial_kernel(double *partial, const float *x, size_t n, int squares) {
    __shared__ double shared[REDUCE_THREADS];
    size_t i0 = n * blockIdx.x / gridDim.x, i1 = n * (blockIdx.x + 1) / gridDim.x;
    double s = 0.0;
    for (size_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
        double v = (double)x[i];
        s += squares ? v * v : v;
    }
    double total = block_tree_sum(s, shared);
    if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

// partial[0] = sum of partial (count), one block of REDUCE_THREADS threads
static __global__ void reduce_final_kernel(double *partial, int count) {
    __shared__ double shared[REDUCE_THREADS];
    double s = 0.0;
    for (int i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
    double total = block_tree_sum(s, shared);   // every read of partial is done before the barrier inside
    if (threadIdx.x == 0) partial[0] = total;
}

// Sum of x (n) or of its squares, in double, on the host.
static double reduce(const void *x, size_t n, int squares) {
    if (n == 0) return 0.0;
    CudaContext *ctx = cuda_context();
    reduce_partial_kernel<<<CUDA_REDUCE_BLOCKS, REDUCE_THREADS, 0, ctx->stream>>>(ctx->reduce_scratch, (const float *)x, n,
                                                                                  squares);
    cudaCheckLaunch();
    reduce_final_kernel<<<1, REDUCE_THREADS, 0, ctx->stream>>>(ctx->reduce_scratch, CUDA_REDUCE_BLOCKS);
    cudaCheckLaunch();
    return reduce_scratch_result(ctx);
}

// x (n)
double cuda_sum(const void *x, size_t n) { return reduce(x, n, 0); }

// x (n)
double cuda_sum_squares(const void *x, size_t n) { return reduce(x, n, 1); }

// The step's scalars, rounded to fp32 as the CPU twin rounds them.
struct AdamWScalars {
    float lr, beta1, beta2, bc1, bc2, eps, wd, grad_scale;
};

// params, m, v (n) updated in place from grads (n): p -= lr (mhat / (sqrt(vhat) + eps) + wd p)
static __global__ void adamw_kernel(float *params, const float *grads, float *m, float *v, size_t n, AdamWScalars s) {
    GRID_STRIDE(i, n) {
        float g = grads[i] * s.grad_scale;
        float mi = s.beta1 * m[i] + (1.0f - s.beta1) * g;
        float vi = s.beta2 * v[i] + (1.0f - s.beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        float mhat = mi / s.bc1, vhat = vi / s.bc2;
        float p = params[i];
        params[i] = p - s.lr * (mhat / (sqrtf(vhat) + s.eps) + s.wd * p);
    }
}

// params (n), grads (n), m (n), v (n); t is the 1-based step
void cuda_adamw_update(void *params, const void *grads, void *m, void *v, size_t n, double lr, double beta1,
                       double beta2, double eps, double weight_decay, double grad_scale, long t) {
    if (n == 0) return;
    CudaContext *ctx = cuda_context();
    AdamWScalars s;
    s.lr = (float)lr;
    s.beta1 = (float)beta1;
    s.beta2 = (float)beta2;
    s.bc1 = (float)(1.0 - pow(beta1, (double)t));
    s.bc2 = (float)(1.0 - pow(beta2, (double)t));
    s.eps = (float)eps;
    s.wd = (float)weight_decay;
    s.grad_scale = (float)grad_scale;
    unsigned int blocks = ceil_div(n, ADAMW_THREADS), cap = 32u * (unsigned int)ctx->sm_count;
    adamw_kernel<<<blocks < cap ? blocks : cap, ADAMW_THREADS, 0, ctx->stream>>>((float *)params, (const float *)grads,
                                                                                 (float *)m, (float *)v, n, s);
    cudaCheckLaunch();
}
