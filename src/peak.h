// peak.h: the machine's practical matmul ceiling, against which MFU is reported on the CPU.
#pragma once

// Best GFLOP/s of cblas_sgemm on 2048^3 over five runs after a warm-up, with the threads the
// trainer uses. Takes about half a second.
double measure_sgemm_gflops(void);
