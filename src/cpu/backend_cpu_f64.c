// The fp64 CPU backend: the same source in double precision, the reference of gradient tests.
typedef double real;
#define CBLAS_GEMM cblas_dgemm
#define REAL_EXP exp   // the oracle keeps libm
#define REAL_LOG log
#define REAL_TINY DBL_MIN
#define FFTW(name) fftw_##name
#define BACKEND_NAME "cpu-f64"
#define BACKEND_CONSTRUCTOR backend_cpu_f64
#include "cpu_backend.inc"
