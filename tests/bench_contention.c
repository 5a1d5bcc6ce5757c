// bench_contention: the CPU trainer's step on a machine whose cores other processes keep busy
// (issue 21). For the small shape and the d=512 one (tests/bench_shapes.h), the median step quiet and
// the median step while this benchmark's own load runs (one child process per online core, each
// spinning on an integer loop at normal priority), quiet and busy steps alternating in this one
// process with the same trainer.
// Goal: the busy step at most 2.5x the quiet one (llm.c's CPU trainer: about 8x at the small shape).
// The process runs with entrank's wait policy (src/thread_policy.h), as the trainer does.
//   build/tests/bench_contention [steps] [all|small|d512]
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <mpi.h>
#include "bench_shapes.h"
#include "comm.h"
#include "config.h"
#include "blas_kernels.h"
#include "thread_policy.h"
#include "timer.h"
#include "train.h"

static double timed_step(Trainer *t, long step) {
    StepResult r;
    Error err = {{0}};
    double t0 = now_seconds();
    if (trainer_step(t, step, &r, &err)) die(EXIT_FAILURE_OTHER, "%s", err.msg);
    return now_seconds() - t0;
}

// The load: n children that spin until killed; stopped (SIGSTOP) between the busy steps.
static void load_start(pid_t *pids, int n) {
    for (int i = 0; i < n; i++) {
        pids[i] = fork();
        if (pids[i] < 0) die(EXIT_FAILURE_OTHER, "bench_contention: fork failed");
        if (pids[i] == 0) {
            volatile unsigned long x = 0;
            for (;;) x++;
        }
        kill(pids[i], SIGSTOP);
    }
}

static void load_signal(pid_t *pids, int n, int sig) {
    for (int i = 0; i < n; i++) kill(pids[i], sig);
}

static void load_end(pid_t *pids, int n) {
    for (int i = 0; i < n; i++) {
        kill(pids[i], SIGKILL);
        waitpid(pids[i], NULL, 0);
    }
}

// Quiet and busy steps alternate (the load stopped, then running), so that the host's own drift,
// which moves a shared machine's speed by tens of percent within minutes, hits both alike.
static void bench(Comm *world, const char *label, const char *const *sets, int n_sets, int steps, int cores) {
    static Config cfg;
    Trainer t;
    Error err = {{0}};
    if (config_load("configs/tiny.cfg", sets, n_sets, &cfg, &err)) die(EXIT_BAD_INPUT, "%s", err.msg);
    if (trainer_init(&t, &cfg, backend_cpu_f32(), world, &err)) die(EXIT_BAD_INPUT, "%s", err.msg);
    long step = 0;
    timed_step(&t, step++);   // warm-up: page faults, threads
    pid_t pids[256];
    int n = cores < 256 ? cores : 256;
    double *quiet = xmalloc(sizeof(double) * steps), *busy = xmalloc(sizeof(double) * steps);
    load_start(pids, n);
    for (int s = 0; s < steps; s++) {
        quiet[s] = timed_step(&t, step++);
        load_signal(pids, n, SIGCONT);
        busy[s] = timed_step(&t, step++);
        load_signal(pids, n, SIGSTOP);
    }
    load_end(pids, n);
    double q = median_of(quiet, steps), b = median_of(busy, steps);
    printf("%-10s quiet %8.1f ms | busy (%d spinning processes) %8.1f ms | busy / quiet %.2fx (goal <= 2.5x)\n", label,
           q * 1e3, n, b * 1e3, b / q);
    free(quiet);
    free(busy);
    trainer_free(&t);
}

int main(int argc, char **argv) {
    thread_policy_apply(argv);
    MPI_Init(&argc, &argv);
    setvbuf(stdout, NULL, _IOLBF, 0);
    Comm *world = comm_mpi_create(1, sizeof(float));
    int steps = argc > 1 ? atoi(argv[1]) : 7;
    int cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
    char policy[256];
    thread_policy_describe(policy, sizeof policy);
    char blas[2048];
    blas_kernels_describe(blas, sizeof blas);
    printf("median of %d steps each, quiet and next to %d spinning processes alternating; %s\n%s\n", steps, cores, policy, blas);
    const char *only = argc > 2 ? argv[2] : "all";
    if (strcmp(only, "d512")) bench(world, "small", BENCH_SMALL, BENCH_SMALL_N, steps, cores);
    if (strcmp(only, "small")) bench(world, "d512", BENCH_D512, BENCH_D512_N, steps, cores);
    world->free(world);
    MPI_Finalize();
    return 0;
}
