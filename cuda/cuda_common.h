// cuda_common.h: what every kernel file of the CUDA backend shares: checking macros for every
// library call, the backend's context (one stream, one cuBLAS handle) and launch helpers.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cufft.h>
#include <stddef.h>
#include <stdint.h>
#include "backend_cuda.h"

extern "C" void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

// A failing CUDA/cuBLAS/cuFFT call is a bug or a broken device, never bad input: exit 1.
#define cudaCheck(call) do { cudaError_t rc_ = (call); \
    if (rc_ != cudaSuccess) die(1, "CUDA error at %s:%d: %s: %s", __FILE__, __LINE__, #call, cudaGetErrorString(rc_)); } while (0)
#define cublasCheck(call) do { cublasStatus_t rc_ = (call); \
    if (rc_ != CUBLAS_STATUS_SUCCESS) die(1, "cuBLAS error %d at %s:%d: %s", (int)rc_, __FILE__, __LINE__, #call); } while (0)
#define cufftCheck(call) do { cufftResult rc_ = (call); \
    if (rc_ != CUFFT_SUCCESS) die(1, "cuFFT error %d at %s:%d: %s", (int)rc_, __FILE__, __LINE__, #call); } while (0)
// After a kernel launch: launch-configuration errors surface here, not at the next sync.
#define cudaCheckLaunch() cudaCheck(cudaGetLastError())

struct CudaContext {
    int device;
    int sm_count;
    cudaStream_t stream;                 // every op is queued here, in program order
    cublasHandle_t cublas;               // bound to `stream`
    cublasComputeType_t gemm_compute;    // dense-layer and attention GEMMs: FAST_16BF or 32F
    double *reduce_scratch;              // device partial sums of sum/sum_squares/diag_sum (fixed size)
    double *reduce_host;                 // pinned host copy of a reduction's result
};

// The context created by backend_cuda_create (dies if there is none).
CudaContext *cuda_context(void);

#define CUDA_REDUCE_BLOCKS 256            // fixed grid of the reductions: results do not depend on the GPU
static inline unsigned int ceil_div(size_t a, size_t b) { return (unsigned int)((a + b - 1) / b); }

// Every op `name` of backend.h is the function cuda_name, defined in the file of its kernel family
// (cuda/<family>.cu: memory, bf16, encoder, layernorm, matmul, elementwise, attention, attention_fused, crossentropy,
// optimizer, linalg, entropy, sga, dct); backend_cuda.cu builds the op table from the same list.
#define CUDA_OP_DECLARATION(ret, name, params) ret cuda_##name params;
BACKEND_OPS(CUDA_OP_DECLARATION)
#undef CUDA_OP_DECLARATION

// Releases the DCT's cached tables, plans and scratch (dct.cu), before the context goes.
void cuda_dct_release_all(void);
