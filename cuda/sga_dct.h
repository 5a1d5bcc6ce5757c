// sga_dct.h: which method the CUDA backend's dct_rows uses (C linkage: the C tests and the GPU
// benchmark switch it to time and check both). The default is the one measured faster on an H100.
//
//   CUDA_DCT_FFT   cuFFT: Makhoul's length-T reordering, a batched real FFT and a twiddle pass.
//                  O(T log T) per row, fp32 throughout.
//   CUDA_DCT_GEMM  one cuBLAS GEMM against the orthonormal (T,T) DCT matrix: O(T^2) per row on
//                  tensor cores (TF32) when the backend runs its GEMMs in bf16, plain fp32 GEMM
//                  when it was created with CUDA_GEMM_FP32.
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { CUDA_DCT_FFT = 0, CUDA_DCT_GEMM = 1 } CudaDctMethod;

// Takes effect for the dct_rows calls queued after it (any time, also before backend creation).
void cuda_set_dct_method(CudaDctMethod m);
CudaDctMethod cuda_get_dct_method(void);

#ifdef __cplusplus
}
#endif
