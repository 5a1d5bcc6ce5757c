// thread_policy.c: see thread_policy.h.
#include "thread_policy.h"
#include <errno.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include "blas_kernels.h"

// Marks a policy this program set, so that the log tells it from the user's.
#define SET_BY_ENTRANK "ENTRANK_SET_GOMP_SPINCOUNT"

void thread_policy_apply(char **argv) {
    // A process entrank executed has what it needs: executing again could only loop.
    if (getenv(SET_BY_ENTRANK) || blas_kernels_marked()) return;
    int set_spin = !getenv("GOMP_SPINCOUNT") && !getenv("OMP_WAIT_POLICY");
    if (set_spin && (setenv("GOMP_SPINCOUNT", THREAD_POLICY_SPINCOUNT, 1) || setenv(SET_BY_ENTRANK, "1", 1))) {
        unsetenv("GOMP_SPINCOUNT");
        unsetenv(SET_BY_ENTRANK);
        set_spin = 0;
    }
    BlasKernelsPlan kernels = blas_kernels_prepare();
    if (!set_spin && !kernels.changed) return;
    execv("/proc/self/exe", argv);
    int exec_errno = errno;
    // Not executed again (no /proc): this process keeps libgomp's default and the kernels OpenBLAS
    // loaded, which the log reports; kernels the CPU cannot run end it here.
    if (set_spin) {
        unsetenv("GOMP_SPINCOUNT");
        unsetenv(SET_BY_ENTRANK);
    }
    blas_kernels_exec_failed(&kernels, exec_errno);
}

void thread_policy_describe(char *buf, size_t n) {
    const char *spin = getenv("GOMP_SPINCOUNT"), *wait = getenv("OMP_WAIT_POLICY");
    int threads = omp_get_max_threads();
    if (spin && getenv(SET_BY_ENTRANK))
        snprintf(buf, n, "threads: %d OpenMP (OpenBLAS in the same pool); idle threads sleep after %s spins "
                         "(GOMP_SPINCOUNT, set by entrank: the environment chose none)", threads, spin);
    else if (spin || wait)
        snprintf(buf, n, "threads: %d OpenMP (OpenBLAS in the same pool); wait policy from the environment:%s%s%s%s", threads,
                 spin ? " GOMP_SPINCOUNT=" : "", spin ? spin : "", wait ? " OMP_WAIT_POLICY=" : "", wait ? wait : "");
    else
        snprintf(buf, n, "threads: %d OpenMP (OpenBLAS in the same pool); libgomp's default wait policy (spinning: "
                         "entrank could not execute itself with GOMP_SPINCOUNT set)", threads);
}
