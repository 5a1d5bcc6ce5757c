// blas_kernels.h: the OpenBLAS kernels (core type) a process runs, put in its environment before
// the library loads, and the run log's line about them (README.md, "Parallel runs"; issue 21).
//
// OpenBLAS reads OPENBLAS_CORETYPE only when it loads, before main, so the first process decides
// (src/cpu_kernels.h, with the type OpenBLAS chose there) and src/thread_policy.c executes the
// program once more with the result. Markers in the environment tell the new process what entrank
// set, and what it started from, so that its log line gives the reason.
#pragma once
#include <stddef.h>

typedef struct {
    int changed;        // OPENBLAS_CORETYPE now differs from what this process's OpenBLAS loaded with
    int unsafe_here;    // this process's OpenBLAS loaded the environment's type, which the CPU cannot run
    char why[768];      // when unsafe_here: what was loaded and why it cannot run
    char *original;     // the environment's OPENBLAS_CORETYPE as it was (NULL: unset); kept for the process's life
} BlasKernelsPlan;

// In a process that entrank did not execute itself: chooses the core type and, when it differs from
// what OpenBLAS loaded here, sets OPENBLAS_CORETYPE (or removes the environment's) and the markers
// for the process that the caller then executes. Exits 2 when ENTRANK_CPU_FEATURES_HIDE names no
// feature. Changes nothing in a process entrank executed (blas_kernels_marked).
BlasKernelsPlan blas_kernels_prepare(void);

// Whether entrank set this process's OPENBLAS_CORETYPE (it was executed by blas_kernels_prepare's caller).
int blas_kernels_marked(void);

// After the execution that a changed plan asked for failed (errno `exec_errno`): the environment as
// it was. When this process's kernels cannot run on this CPU, prints why and exits 1: its first
// GEMM would end it with SIGILL.
void blas_kernels_exec_failed(const BlasKernelsPlan *plan, int exec_errno);

// The type OpenBLAS runs in this process (openblas_get_corename).
const char *blas_kernels_running(void);

// One line for the run log, "blas: <OpenBLAS's configuration>, kernels <type> (<why>); cpu: ...".
void blas_kernels_describe(char *buf, size_t n);
