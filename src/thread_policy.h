// thread_policy.h: how the process's OpenMP threads wait (README.md, "Parallel runs" and "Measured
// figures"), and the one execution at start that also sets OpenBLAS's kernels (src/blas_kernels.h).
//
// libgomp's idle threads spin for a long while (GOMP_SPINCOUNT, 300000 by default) before they
// sleep. On a machine whose cores are shared with other jobs every one of the many short parallel
// regions of a step then waits for threads that spin where the other jobs want to run: a tiny-model
// step took 11x its quiet time next to two busy processes on two cores, against 2.6x with 1000 spins,
// and quiet steps were no slower (README.md, "Measured figures"). OpenBLAS (its OpenMP build) runs in
// the same thread pool. libgomp reads the setting when it loads, before main, so it is set by
// executing the program once more with it in the environment.
#pragma once
#include <stddef.h>

// Spins before an idle OpenMP thread sleeps, when the environment chooses nothing.
#define THREAD_POLICY_SPINCOUNT "1000"

// First thing in main: what must be in the environment before libgomp and OpenBLAS load, set by
// executing this program again, once, same arguments. Unless the environment sets GOMP_SPINCOUNT or
// OMP_WAIT_POLICY (the user's choice stands), GOMP_SPINCOUNT = THREAD_POLICY_SPINCOUNT; and the
// OpenBLAS kernels src/blas_kernels.h chooses (OPENBLAS_CORETYPE). Returns only when nothing was to
// be done, in the process executed again, or when the execution failed: the process then runs with
// libgomp's default and the kernels OpenBLAS loaded (the log reports both), unless those kernels
// are ones the CPU cannot run (then it exits 1 and says why).
void thread_policy_apply(char **argv);

// One line for the run log: OpenMP's thread count and wait policy, and where the policy came from.
void thread_policy_describe(char *buf, size_t n);
