// elementwise.cu: add, accumulate, scale and per-row scale on the CUDA backend (GELU: gelu.cu).
//
// Each op is one grid-stride loop, one element per thread per iteration: memory bound, so the
// simplest form is also close to the fastest.
#include "reduce.cuh"

#define EW_THREADS 256

// out (n) = a (n) + b (n)
static __global__ void add_kernel(float *out, const float *a, const float *b, size_t n) {
    GRID_STRIDE(i, n) out[i] = a[i] + b[i];
}

// dst (n) += src (n)
static __global__ void accumulate_kernel(float *dst, const float *src, size_t n) {
    GRID_STRIDE(i, n) dst[i] += src[i];
}

// x (n) *= f
static __global__ void scale_kernel(float *x, float f, size_t n) {
    GRID_STRIDE(i, n) x[i] *= f;
}

// x (B,n) *= factors[b] per row; total = B n
static __global__ void scale_rows_kernel(float *x, const float *factors, size_t n, size_t total) {
    GRID_STRIDE(i, total) x[i] *= factors[i / n];
}

void cuda_add(void *out, const void *a, const void *b, size_t n) {
    if (n == 0) return;
    add_kernel<<<stride_grid(n, EW_THREADS), EW_THREADS, 0, cuda_context()->stream>>>((float *)out, (const float *)a, (const float *)b, n);
    cudaCheckLaunch();
}

void cuda_accumulate(void *dst, const void *src, size_t n) {
    if (n == 0) return;
    accumulate_kernel<<<stride_grid(n, EW_THREADS), EW_THREADS, 0, cuda_context()->stream>>>((float *)dst, (const float *)src, n);
    cudaCheckLaunch();
}

// The factor is rounded to fp32 first, as on the CPU twin.
void cuda_scale(void *x, double factor, size_t n) {
    if (n == 0) return;
    scale_kernel<<<stride_grid(n, EW_THREADS), EW_THREADS, 0, cuda_context()->stream>>>((float *)x, (float)factor, n);
    cudaCheckLaunch();
}

// x (B,n), factors (B)
void cuda_scale_rows(void *x, const void *factors, int B, size_t n) {
    size_t total = (size_t)(B > 0 ? B : 0) * n;
    if (total == 0) return;
    scale_rows_kernel<<<stride_grid(total, EW_THREADS), EW_THREADS, 0, cuda_context()->stream>>>((float *)x, (const float *)factors, n,
                                                                                     total);
    cudaCheckLaunch();
}
