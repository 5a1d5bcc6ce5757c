// The fp32 CPU backend: the trainer's reference implementation.
typedef float real;
#define CBLAS_GEMM cblas_sgemm
#define REAL_EXP expf_fast
#define REAL_LOG logf_fast
#define REAL_TINY FLT_MIN
#define FFTW(name) fftwf_##name
#define BACKEND_NAME "cpu-f32"
// Timed FFTW plans for SGA's DCTs (tests/gen_fftw_wisdom.c); the fp64 oracle keeps FFTW's estimates.
#include "dct_wisdom_f32.inc"
#define DCT_WISDOM_STRING dct_wisdom_f32
#define BACKEND_CONSTRUCTOR backend_cpu_f32
#include "cpu_backend.inc"
