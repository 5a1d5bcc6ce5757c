// The fp32 CPU backend: the trainer's reference implementation.
typedef float real;
#define CBLAS_GEMM cblas_sgemm
#define REAL_EXP expf_fast
#define REAL_LOG logf_fast
#define REAL_TINY FLT_MIN
#define FFTW(name) fftwf_##name
#define BACKEND_NAME "cpu-f32"
#define BACKEND_CONSTRUCTOR backend_cpu_f32
#include "cpu_backend.inc"
