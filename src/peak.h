// peak.h: the ceilings against which MFU is reported: the machine's measured matmul rate on the
// CPU, the datasheet's dense bf16 tensor-core peak on a GPU.
#pragma once

// Best GFLOP/s of cblas_sgemm on 2048^3 over five runs after a warm-up, with the threads the
// trainer uses. Takes about half a second.
double measure_sgemm_gflops(void);

// Dense (no sparsity) bf16 tensor-core peak of the GPU named `device_name` (as the CUDA runtime
// names it, e.g. "NVIDIA H100 80GB HBM3"), in TFLOP/s; 0 when the device is not in the table.
// *source (if not NULL) names the figure's origin, or says that the device is unknown.
double gpu_bf16_peak_tflops(const char *device_name, const char **source);
