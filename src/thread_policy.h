// thread_policy.h: how the process's OpenMP threads wait (README.md, "Parallel runs" and "Measured
// figures").
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

// First thing in main: unless the environment sets GOMP_SPINCOUNT or OMP_WAIT_POLICY (the user's
// choice stands), executes this program again, same arguments, with GOMP_SPINCOUNT =
// THREAD_POLICY_SPINCOUNT. Returns only when nothing was to be done or the execution failed (the
// process then runs with libgomp's default, which thread_policy_describe reports).
void thread_policy_apply(char **argv);

// One line for the run log: OpenMP's thread count and wait policy, and where the policy came from.
void thread_policy_describe(char *buf, size_t n);
