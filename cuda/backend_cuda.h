// backend_cuda.h: the CUDA backend as the C side sees it (device discovery, creation, the stream
// the NCCL transport overlaps with). Everything else about CUDA stays inside cuda/.
//
// Tensors are fp32 in device memory: master weights, gradients (accumulated in fp32), AdamW
// state, softmax, entropies, spectral statistics and the DCT. GEMMs of the dense layers and of
// attention run on bf16 tensor cores with fp32 accumulation (CUBLAS_COMPUTE_32F_FAST_16BF, which
// rounds the fp32 operands to bf16 inside cuBLAS) unless the fp32 precision is asked for.
#pragma once
#include <stddef.h>
#include "../src/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    CUDA_GEMM_BF16 = 0,   // training: bf16 tensor cores, fp32 accumulation and output
    CUDA_GEMM_FP32 = 1,   // tests: plain fp32 GEMMs, so that GPU and CPU agree to ~1e-5
} CudaGemmPrecision;

// Number of usable CUDA devices; 0 when there is none or no driver, with the reason in `why`.
int cuda_device_count(char *why, size_t why_len);
// 1 when an NVIDIA driver is installed but older than the CUDA runtime of this binary (why names
// both versions): a GPU machine that cannot run this build, not a machine without a GPU.
int cuda_driver_too_old(char *why, size_t why_len);

// The op table without touching a device: lets a machine without a GPU check that every op of
// backend.h has a CUDA implementation. Ops must not be called through it before backend_cuda_create.
const Backend *backend_cuda_table(void);

// Selects `device`, creates the stream, the cuBLAS handle and scratch space, and returns the
// table. One CUDA backend per process (one rank per GPU). Returns NULL with `why` filled on failure.
const Backend *backend_cuda_create(int device, CudaGemmPrecision precision, char *why, size_t why_len);
void backend_cuda_destroy(void);

// The stream every op is queued on (a cudaStream_t); the NCCL transport orders its work after it.
void *backend_cuda_stream(void);

// Name of the active device ("NVIDIA H100 80GB HBM3"), empty before creation.
const char *backend_cuda_device_name(void);

#ifdef __cplusplus
}
#endif
