// backend_cuda.cu: device discovery, the backend's context and the assembly of its op table.
#include <stdio.h>
#include <string.h>
#include "cuda_common.h"

// One backend per process (one rank per GPU): the context lives as long as the backend.
static CudaContext context;
static int context_ready = 0;
static char device_name[256];

CudaContext *cuda_context(void) {
    if (!context_ready) die(1, "CUDA backend used before backend_cuda_create");
    return &context;
}

// A driver too old for the runtime this binary links statically: 1, with why naming both versions.
extern "C" int cuda_driver_too_old(char *why, size_t why_len) {
    int driver = 0, runtime = 0;
    if (cudaDriverGetVersion(&driver) != cudaSuccess || cudaRuntimeGetVersion(&runtime) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    if (driver == 0 || driver >= runtime) return 0;   // 0: no driver at all (a CPU node)
    snprintf(why, why_len, "the NVIDIA driver supports CUDA %d.%d but this binary's CUDA runtime is %d.%d (linked statically): "
             "update the driver, or rebuild with CUDA_HOME pointing at a toolkit the driver supports",
             driver / 1000, driver % 1000 / 10, runtime / 1000, runtime % 1000 / 10);
    return 1;
}

extern "C" int cuda_device_count(char *why, size_t why_len) {
    int n = 0;
    cudaError_t rc = cudaGetDeviceCount(&n);
    if (rc != cudaSuccess) {
        // No driver (a CPU node) reads as "insufficient driver": no device, not a failure. A
        // driver that exists but is older than the runtime says so, with both versions.
        if (!cuda_driver_too_old(why, why_len)) snprintf(why, why_len, "%s", cudaGetErrorString(rc));
        (void)cudaGetLastError();
        return 0;
    }
    if (n == 0) snprintf(why, why_len, "no CUDA device visible");
    return n;
}

static Backend table;
static int table_ready = 0;

extern "C" const Backend *backend_cuda_table(void) {
    if (!table_ready) {
        memset(&table, 0, sizeof table);
        table.name = "cuda";
        table.elem_size = sizeof(float);
        table.working_set_bytes = 0;   // whole tensors per launch
        // Every op of backend.h, from its list: an op without a cuda_<name> does not link.
#define CUDA_OP_ENTRY(ret, name, params) table.name = cuda_##name;
        BACKEND_OPS(CUDA_OP_ENTRY)
#undef CUDA_OP_ENTRY
        table_ready = 1;
    }
    return &table;
}

extern "C" const Backend *backend_cuda_create(int device, CudaGemmPrecision precision, char *why, size_t why_len) {
    const Backend *be = backend_cuda_table();
    if (context_ready) { snprintf(why, why_len, "the CUDA backend is already active on device %d", context.device); return NULL; }
    int n = cuda_device_count(why, why_len);
    if (device < 0 || device >= n) {
        if (n > 0) snprintf(why, why_len, "CUDA device %d requested but %d visible", device, n);
        return NULL;
    }
    cudaCheck(cudaSetDevice(device));
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, device));
    snprintf(device_name, sizeof device_name, "%s", prop.name);
    context.device = device;
    context.sm_count = prop.multiProcessorCount;
    cudaCheck(cudaStreamCreateWithFlags(&context.stream, cudaStreamNonBlocking));
    // Every tensor and scratch buffer comes from the stream-ordered pool; without a release
    // threshold the pool hands memory back to the driver at each synchronisation and the next
    // step allocates it again.
    cudaMemPool_t pool;
    cudaCheck(cudaDeviceGetDefaultMemPool(&pool, device));
    uint64_t keep = UINT64_MAX;
    cudaCheck(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
    cublasCheck(cublasCreate(&context.cublas));
    cublasCheck(cublasSetStream(context.cublas, context.stream));
    context.gemm_compute = precision == CUDA_GEMM_BF16 ? CUBLAS_COMPUTE_32F_FAST_16BF : CUBLAS_COMPUTE_32F;
    cudaCheck(cudaMalloc((void **)&context.reduce_scratch, CUDA_REDUCE_BLOCKS * sizeof(double)));
    cudaCheck(cudaMallocHost((void **)&context.reduce_host, sizeof(double)));
    context_ready = 1;
    table.name = precision == CUDA_GEMM_BF16 ? "cuda-bf16" : "cuda-f32";
    return be;
}

extern "C" void backend_cuda_destroy(void) {
    if (!context_ready) return;
    cuda_dct_release_all();
    cudaCheck(cudaStreamSynchronize(context.stream));
    cudaCheck(cudaFree(context.reduce_scratch));
    cudaCheck(cudaFreeHost(context.reduce_host));
    cublasCheck(cublasDestroy(context.cublas));
    cudaCheck(cudaStreamDestroy(context.stream));
    context_ready = 0;
    device_name[0] = 0;
}

extern "C" void *backend_cuda_stream(void) { return (void *)cuda_context()->stream; }
extern "C" const char *backend_cuda_device_name(void) { return device_name; }
