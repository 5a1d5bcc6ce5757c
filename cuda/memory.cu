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

// ---- the allocation high-water mark (memory_stats) ----------------------------------------
// cudaFreeAsync is not told the size of what it frees, so every live allocation is kept in a table
// pointer -> bytes (open addressing, linear probing, doubled when half full; deleted entries are
// re-inserted so no tombstones). Allocations come from the main thread only, so the table and the
// counters are plain variables. Counted: what alloc, alloc_i32, alloc_bf16 and cuda_copy's temporary take;
// not counted: cuBLAS/cuFFT workspace and NCCL buffers (an allowance in the estimate, flops.h).
typedef struct { void *p; size_t bytes; } AllocEntry;
static AllocEntry *alloc_table;
static size_t alloc_cap, alloc_live, mem_current, mem_peak;

static size_t alloc_hash(const void *p) { return (size_t)(((uintptr_t)p >> 8) * 0x9E3779B97F4A7C15ull); }

static void table_put(AllocEntry *table, size_t cap, void *p, size_t bytes) {
    size_t i = alloc_hash(p) & (cap - 1);
    while (table[i].p) i = (i + 1) & (cap - 1);
    table[i].p = p;
    table[i].bytes = bytes;
}

static void track_alloc(void *p, size_t bytes) {
    if (2 * (alloc_live + 1) > alloc_cap) {
        size_t cap = alloc_cap ? 2 * alloc_cap : 1024;
        AllocEntry *grown = (AllocEntry *)calloc(cap, sizeof(AllocEntry));
        if (!grown) die(1, "out of host memory for the device allocation table");
        for (size_t i = 0; i < alloc_cap; i++)
            if (alloc_table[i].p) table_put(grown, cap, alloc_table[i].p, alloc_table[i].bytes);
        free(alloc_table);
        alloc_table = grown;
        alloc_cap = cap;
    }
    table_put(alloc_table, alloc_cap, p, bytes);
    alloc_live++;
    mem_current += bytes;
    if (mem_current > mem_peak) mem_peak = mem_current;
}

static void track_free(void *p) {
    if (!alloc_cap) die(1, "internal: cuda_free of %p, which cuda_alloc did not return", p);
    size_t i = alloc_hash(p) & (alloc_cap - 1);
    while (alloc_table[i].p != p) {
        if (!alloc_table[i].p) die(1, "internal: cuda_free of %p, which cuda_alloc did not return", p);
        i = (i + 1) & (alloc_cap - 1);
    }
    mem_current -= alloc_table[i].bytes;
    alloc_table[i].p = NULL;
    alloc_live--;
    // Re-insert the rest of the probe run, so that lookups never stop at the hole.
    for (size_t j = (i + 1) & (alloc_cap - 1); alloc_table[j].p; j = (j + 1) & (alloc_cap - 1)) {
        AllocEntry e = alloc_table[j];
        alloc_table[j].p = NULL;
        table_put(alloc_table, alloc_cap, e.p, e.bytes);
    }
}

void cuda_memory_stats(size_t *current, size_t *peak) {
    if (current) *current = mem_current;
    if (peak) *peak = mem_peak;
}

// Device memory of `bytes`, zeroed before it is returned (the CPU backend's alloc zeroes too).
static void *device_alloc_zeroed(size_t bytes) {
    CudaContext *ctx = cuda_context();
    void *p = NULL;
    // Stream-ordered allocation from the device pool (kept cached by backend_cuda_create): no
    // device-wide synchronisation, which would stall NCCL transfers in flight on other streams.
    cudaCheck(cudaMallocAsync(&p, bytes, ctx->stream));
    cudaCheck(cudaMemsetAsync(p, 0, bytes, ctx->stream));
    cudaCheck(cudaStreamSynchronize(ctx->stream));
    track_alloc(p, bytes);
    return p;
}

void *cuda_alloc(size_t n) { return device_alloc_zeroed(float_bytes(n)); }

int32_t *cuda_alloc_i32(size_t n) { return (int32_t *)device_alloc_zeroed((n ? n : 1) * sizeof(int32_t)); }

// n bf16 elements (16-bit patterns, 2 bytes each; cuda/bf16.cu packs and unpacks them)
void *cuda_alloc_bf16(size_t n) { return device_alloc_zeroed((n ? n : 1) * sizeof(uint16_t)); }

// Freed in stream order: work queued before on the stream (every op, and every Comm transfer that
// was joined to it by a wait) finishes first. cudaFree would synchronise the whole device instead.
void cuda_free(void *p) {
    if (!p) return;
    track_free(p);
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
    track_alloc(tmp, bytes);   // the temporary counts towards the peak while it lives
    cudaCheck(cudaMemcpyAsync(tmp, src, bytes, cudaMemcpyDeviceToDevice, ctx->stream));
    cudaCheck(cudaMemcpyAsync(dst, tmp, bytes, cudaMemcpyDeviceToDevice, ctx->stream));
    track_free(tmp);
    cudaCheck(cudaFreeAsync(tmp, ctx->stream));
}

void cuda_synchronize(void) { cudaCheck(cudaStreamSynchronize(cuda_context()->stream)); }
