// bench_throughput: training-step throughput of the CPU backend against the machine's measured
// cblas_sgemm rate, for configs/tiny.cfg and a 6-layer d=512 T=256 model (issue 2's goal: the
// d=512 step reaches 40% of sgemm throughput). Prints one line per model.
//   build/tests/bench_throughput [steps]
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "config.h"
#include "flops.h"
#include "peak.h"
#include <mpi.h>
#include "comm.h"
#include "train.h"

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void bench(Comm *world, const char *label, const char *const *sets, int n_sets, int steps, double sgemm_gflops) {
    static Config cfg;
    Error err = {{0}};
    if (config_load("configs/tiny.cfg", sets, n_sets, &cfg, &err)) die(EXIT_BAD_INPUT, "%s", err.msg);
    Trainer t;
    if (trainer_init(&t, &cfg, backend_cpu_f32(), world, &err)) die(EXIT_BAD_INPUT, "%s", err.msg);
    double *times = xmalloc(sizeof(double) * steps);
    StepResult r;
    trainer_step(&t, 0, &r, &err);   // warm-up: page faults, thread start-up
    for (int s = 0; s < steps; s++) {
        double t0 = now_seconds();
        if (trainer_step(&t, s + 1, &r, &err)) die(EXIT_FAILURE_OTHER, "%s", err.msg);
        times[s] = now_seconds() - t0;
    }
    qsort(times, steps, sizeof(double), cmp_double);
    double median = times[steps / 2];
    double tokens = (double)cfg.batch_size * cfg.seq_len;
    double gflops = tokens * t.flops_per_token / median / 1e9;
    ModelShape shape = t.model.shape;
    printf("%-34s L=%d d=%d T=%d V=%d B=%d | %8.1f ms/step | %8.0f tok/s | %6.1f GFLOP/s | %5.1f%% of sgemm\n", label,
           shape.n_layer, shape.d_model, shape.seq_len, shape.vocab_size, cfg.batch_size, median * 1e3, tokens / median,
           gflops, 100 * gflops / sgemm_gflops);
    free(times);
    trainer_free(&t);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    Comm *world = comm_mpi_create(1, sizeof(float));
    int steps = argc > 1 ? atoi(argv[1]) : 5;
    double sgemm = measure_sgemm_gflops();
    printf("cblas_sgemm 1024^3 (median of 5): %.1f GFLOP/s\n", sgemm);
    printf("step FLOPs = tokens x (6 x matmul weights + 12 x L x d x T); median of %d steps after one warm-up\n", steps);
    const char *tiny[] = {"train.steps=100"};
    bench(world, "tiny (configs/tiny.cfg)", tiny, 1, steps, sgemm);
    const char *d512[] = {"model.n_layer=6", "model.n_head=8", "model.d_model=512", "model.seq_len=256",
                          "model.vocab_size=32000", "train.batch_size=8", "train.micro_batch_size=8", "train.steps=100"};
    bench(world, "d512 (6 layers, vocab 32000)", d512, 8, steps, sgemm);
    world->free(world);
    MPI_Finalize();
    return 0;
}
