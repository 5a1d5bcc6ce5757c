// peak.h: the machine's practical matmul ceiling, against which MFU is reported on the CPU.
#pragma once

// Median GFLOP/s of cblas_sgemm on 1024^3 over a few runs, with the threads the trainer uses.
// Takes about a tenth of a second.
double measure_sgemm_gflops(void);
