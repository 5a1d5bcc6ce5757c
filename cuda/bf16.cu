// bf16.cu: bf16 storage of the CUDA backend (train.activations = "bf16"): pack fp32 -> bf16 and
// unpack bf16 -> fp32, the twins of src/cpu/bf16.inc.
//
// A bf16 tensor holds 16-bit patterns (the top half of an fp32), allocated by cuda_alloc_bf16
// (memory.cu). The rounding is written out on the bit pattern rather than taken from cuda_bf16.h
// (__float2bfloat16_rn), so that it is the CPU twin's operation by construction, NaN payloads
// included: round to nearest, ties to even. That is also how cuBLAS rounds fp32 operands under
// CUBLAS_COMPUTE_32F_FAST_16BF, so a GEMM fed an unpacked tensor sees the operand values it would
// have made of the fp32 original (docs/design.md, "Numerics").
#include <stdint.h>
#include "reduce.cuh"

#define BF16_THREADS 256

// dst (n) bf16 patterns = src (n) fp32 rounded to nearest even (see bf16_from_f32 in the twin:
// the carry of 0x7FFF plus the lowest kept bit; NaN stays a quiet NaN with its sign)
static __global__ void pack_bf16_kernel(uint16_t *dst, const float *src, size_t n) {
    GRID_STRIDE(i, n) {
        uint32_t u = (uint32_t)__float_as_int(src[i]);
        if ((u & 0x7FFFFFFFu) > 0x7F800000u) {
            dst[i] = (uint16_t)((u >> 16) | 0x0040u);
        } else {
            u += 0x7FFFu + ((u >> 16) & 1u);
            dst[i] = (uint16_t)(u >> 16);
        }
    }
}

// dst (n) fp32 = src (n) bf16 patterns, exact
static __global__ void unpack_bf16_kernel(float *dst, const uint16_t *src, size_t n) {
    GRID_STRIDE(i, n) dst[i] = __int_as_float((int)((uint32_t)src[i] << 16));
}

void cuda_pack_bf16(void *dst, const void *src, size_t n) {
    if (n == 0) return;
    pack_bf16_kernel<<<stride_grid(n, BF16_THREADS), BF16_THREADS, 0, cuda_context()->stream>>>((uint16_t *)dst,
                                                                                                (const float *)src, n);
    cudaCheckLaunch();
}

void cuda_unpack_bf16(void *dst, const void *src, size_t n) {
    if (n == 0) return;
    unpack_bf16_kernel<<<stride_grid(n, BF16_THREADS), BF16_THREADS, 0, cuda_context()->stream>>>((float *)dst,
                                                                                                  (const uint16_t *)src, n);
    cudaCheckLaunch();
}
