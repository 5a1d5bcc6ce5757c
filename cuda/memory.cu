// memory.cu: device memory of the CUDA backend (allocation, host <-> device transfers, zero, copy).
//
// Every transfer is queued on the context's stream and, where it touches host memory, followed by
// a stream synchronisation: host buffers handed to the backend are ordinary pageable memory that
// the caller may reuse or free as soon as the call returns, and the stream is non-blocking, so
// nothing else orders it against the host. Device-to-device work (zero, copy) stays asynchronous
// in stream order like every other op.
#include <stdlib.h>
#include "cuda_common.h"

// Bytes of an n-element fp32 tensor; a zero-length tensor still gets a valid, distinct pointer.
static size_t float_bytes(size_t n) { return (n ? n : 1) * sizeof(float); }

// Device memory of `bytes`, zeroed before it is returned (the CPU backend's alloc zeroes too).
static void *device_alloc_zeroed(size_t bytes) {
    CudaContext *ctx = cuda_context();
    void *p = NULL;
    // Stream-ordered allocation from the device pool (kept cached by backend_cuda_create): no
    // device-wide synchronisation, which would stall NCCL transfers in flight on other streams.
    cudaCheck(cudaMallocAsync(&p, bytes, ctx->stream));
    cudaCheck(cudaMemsetAsync(p, 0, bytes, ctx->stream));
    cudaCheck(cudaStreamSynchronize(ctx->stream));
    return p;
}

void *cuda_alloc(size_t n) { return device_alloc_zeroed(float_bytes(n)); }

int32_t *cuda_alloc_i32(size_t n) { return (int32_t *)device_alloc_zeroed((n ? n : 1) * sizeof(int32_t)); }

// Freed in stream order: work queued before on the stream (every op, and every Comm transfer that
// was joined to it by a wait) finishes first. cudaFree would synchronise the whole device instead.
void cuda_free(void *p) {
    if (!p) return;
    cudaCheck(cudaFreeAsync(p, cuda_context()->stream));
}

// Host -> device of `bytes`, complete when this returns (the host buffer may be reused at once).
static void host_to_device(void *dst, const void *src, size_t bytes) {
    if (bytes == 0) return;
    CudaContext *ctx = cuda_context();
    cudaCheck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, ctx->stream));
    cudaCheck(cudaStreamSynchronize(ctx->stream));
}

// Device -> host of `bytes`, after all work queued before it on the stream.
static void device_to_host(void *dst, const void *src, size_t bytes) {
    if (bytes == 0) return;
    CudaContext *ctx = cuda_context();
    cudaCheck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, ctx->stream));
    cudaCheck(cudaStreamSynchronize(ctx->stream));
}

// dst (n) device, src (n) host
void cuda_upload(void *dst, const float *src, size_t n) { host_to_device(dst, src, n * sizeof(float)); }

// dst (n) host, src (n) device
void cuda_download(float *dst, const void *src, size_t n) { device_to_host(dst, src, n * sizeof(float)); }

// Host staging buffer for the fp64 <-> fp32 conversions (caller frees).
static float *host_floats(size_t n) {
    float *h = (float *)malloc(float_bytes(n));
    if (!h) die(1, "out of memory allocating a %zu-element host staging buffer", n);
    return h;
}

// dst (n) device fp32, src (n) host fp64: rounded to fp32 on the host, as the CPU fp32 backend does.
void cuda_upload_f64(void *dst, const double *src, size_t n) {
    float *h = host_floats(n);
    for (size_t i = 0; i < n; i++) h[i] = (float)src[i];
    host_to_device(dst, h, n * sizeof(float));
    free(h);
}

// dst (n) host fp64, src (n) device fp32
void cuda_download_f64(double *dst, const void *src, size_t n) {
    float *h = host_floats(n);
    device_to_host(h, src, n * sizeof(float));
    for (size_t i = 0; i < n; i++) dst[i] = (double)h[i];
    free(h);
}

// dst (n) device, src (n) host
void cuda_upload_i32(int32_t *dst, const int32_t *src, size_t n) { host_to_device(dst, src, n * sizeof(int32_t)); }

// dst (n) host, src (n) device
void cuda_download_i32(int32_t *dst, const int32_t *src, size_t n) { device_to_host(dst, src, n * sizeof(int32_t)); }

// dst (n) = 0, in stream order
void cuda_zero(void *dst, size_t n) {
    if (n == 0) return;
    cudaCheck(cudaMemsetAsync(dst, 0, n * sizeof(float), cuda_context()->stream));
}

// dst (n) = src (n) with memmove semantics (the CPU twin uses memmove): cudaMemcpyAsync is
// undefined on overlapping ranges, so an overlapping copy goes through a temporary.
void cuda_copy(void *dst, const void *src, size_t n) {
    if (n == 0 || dst == src) return;
    CudaContext *ctx = cuda_context();
    size_t bytes = n * sizeof(float);
    const char *d = (const char *)dst, *s = (const char *)src;
    int overlap = d < s + bytes && s < d + bytes;
    if (!overlap) {
        cudaCheck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, ctx->stream));
        return;
    }
    void *tmp = NULL;
    cudaCheck(cudaMallocAsync(&tmp, bytes, ctx->stream));
    cudaCheck(cudaMemcpyAsync(tmp, src, bytes, cudaMemcpyDeviceToDevice, ctx->stream));
    cudaCheck(cudaMemcpyAsync(dst, tmp, bytes, cudaMemcpyDeviceToDevice, ctx->stream));
    cudaCheck(cudaFreeAsync(tmp, ctx->stream));
}

void cuda_synchronize(void) { cudaCheck(cudaStreamSynchronize(cuda_context()->stream)); }
