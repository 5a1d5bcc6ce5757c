// thread_policy.h: how the process's OpenMP threads wait (README.md, "Parallel runs" and "Measured
// figures"), and the one execution at start that also sets OpenBLAS's kernels (src/blas_kernels.h).
//
// libgomp's idle threads spin for a long while (GOMP_SPINCOUNT, 300000 by default) before they
// sleep. On a machine whose cores are shared with other jobs every one of the many short parallel
// regions of a step then waits for threads that spin where the other jobs want to run: a tiny-model
// step took 11x its quiet time next to two busy processes on two cores, against 2.6x with 1000 spins,
// and quiet steps were no slower (README.md, "Measured figures"). Too short a spin costs too: every
// region then wakes its threads through the kernel. A spin is a count of x86 `pause` instructions,
// whose latency differs by an order of magnitude between CPUs, so entrank sets the count for a
// spin of about THREAD_POLICY_SPIN_US, from the latency measured at start. On the 10-11 ns pause
// of an AVX-512 Xeon, 100 us (10000 spins) made the small shape's quiet step 78-81 ms instead of
// 86-97 and its busy step 169-208 ms instead of 224-241 against 1000 spins (11 us); 300 us did as
// well at the median but took 4x its quiet step in 2 runs of 11, and libgomp's 3 ms 3.3-3.7x.
// OpenBLAS (its OpenMP build) runs in the same thread pool. libgomp reads the setting when it
// loads, before main, so it is set by executing the program once more with it in the environment.
#pragma once
#include <stddef.h>

// How long an idle OpenMP thread spins before it sleeps, when the environment chooses nothing, and
// the bounds of the count that stands for it (a CPU whose pause could not be timed gets the least).
#define THREAD_POLICY_SPIN_US 100
#define THREAD_POLICY_MIN_SPINS 1000
#define THREAD_POLICY_MAX_SPINS 100000

// The spin count for THREAD_POLICY_SPIN_US on a CPU whose pause takes `pause_ns` (<= 0: unknown).
long thread_policy_spins_for(double pause_ns);

// First thing in main: what must be in the environment before libgomp and OpenBLAS load, set by
// executing this program again, once, same arguments. Unless the environment sets GOMP_SPINCOUNT or
// OMP_WAIT_POLICY (the user's choice stands), GOMP_SPINCOUNT = thread_policy_spins_for(the pause
// latency measured now); and the OpenBLAS kernels src/blas_kernels.h chooses (OPENBLAS_CORETYPE).
// Returns only when nothing was to be done, in the process executed again, or when the execution
// failed: the process then runs with libgomp's default and the kernels OpenBLAS loaded (the log
// reports both), unless those kernels are ones the CPU cannot run (then it exits 1 and says why).
void thread_policy_apply(char **argv);

// One line for the run log: OpenMP's thread count and wait policy, and where the policy came from.
void thread_policy_describe(char *buf, size_t n);
