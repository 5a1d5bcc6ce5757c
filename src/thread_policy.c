// thread_policy.c: see thread_policy.h.
#include "thread_policy.h"
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include "blas_kernels.h"
#include "timer.h"
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

// Marks a policy this program set, so that the log tells it from the user's; its value is the pause
// latency (ns) the count was set from.
#define SET_BY_ENTRANK "ENTRANK_SET_GOMP_SPINCOUNT"

long thread_policy_spins_for(double pause_ns) {
    if (!(pause_ns > 0)) return THREAD_POLICY_MIN_SPINS;
    double spins = THREAD_POLICY_SPIN_US * 1e3 / pause_ns;
    return spins < THREAD_POLICY_MIN_SPINS ? THREAD_POLICY_MIN_SPINS
           : spins > THREAD_POLICY_MAX_SPINS ? THREAD_POLICY_MAX_SPINS
                                             : lround(spins);
}

// The latency of the instruction libgomp's spin waits with (x86's pause), in ns: the fastest of a few
// short runs, so that a core another job takes for a moment does not inflate it. 0 elsewhere.
static double pause_latency_ns(void) {
#if defined(__x86_64__) || defined(__i386__)
    enum { RUNS = 5, PAUSES = 8192 };
    double best = INFINITY;
    for (int r = 0; r < RUNS; r++) {
        double t0 = now_seconds();
        for (int i = 0; i < PAUSES; i++) _mm_pause();
        double t = (now_seconds() - t0) * 1e9 / PAUSES;
        best = t < best ? t : best;
    }
    return best;
#else
    return 0;
#endif
}

void thread_policy_apply(char **argv) {
    // A process entrank executed has what it needs: executing again could only loop.
    if (getenv(SET_BY_ENTRANK) || blas_kernels_marked()) return;
    int set_spin = !getenv("GOMP_SPINCOUNT") && !getenv("OMP_WAIT_POLICY");
    char spins[32] = "", pause[32] = "";
    if (set_spin) {
        double pause_ns = pause_latency_ns();
        snprintf(spins, sizeof spins, "%ld", thread_policy_spins_for(pause_ns));
        snprintf(pause, sizeof pause, "%.1f", pause_ns);
    }
    if (set_spin && (setenv("GOMP_SPINCOUNT", spins, 1) || setenv(SET_BY_ENTRANK, pause, 1))) {
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
    const char *spin = getenv("GOMP_SPINCOUNT"), *wait = getenv("OMP_WAIT_POLICY"), *pause = getenv(SET_BY_ENTRANK);
    int threads = omp_get_max_threads();
    if (spin && pause)
        snprintf(buf, n, "threads: %d OpenMP (OpenBLAS in the same pool); idle threads sleep after %s spins "
                         "(GOMP_SPINCOUNT, set by entrank for about %d us at the %s ns this CPU's pause took: the "
                         "environment chose none)", threads, spin, THREAD_POLICY_SPIN_US, pause);
    else if (spin || wait)
        snprintf(buf, n, "threads: %d OpenMP (OpenBLAS in the same pool); wait policy from the environment:%s%s%s%s", threads,
                 spin ? " GOMP_SPINCOUNT=" : "", spin ? spin : "", wait ? " OMP_WAIT_POLICY=" : "", wait ? wait : "");
    else
        snprintf(buf, n, "threads: %d OpenMP (OpenBLAS in the same pool); libgomp's default wait policy (spinning: "
                         "entrank could not execute itself with GOMP_SPINCOUNT set)", threads);
}
