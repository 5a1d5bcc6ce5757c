// bench_throughput: training-step throughput of the CPU backend against the machine's measured
// cblas_sgemm rate, for configs/tiny.cfg, the small shape and the d=512 one (tests/bench_shapes.h;
// goals: d=512 at 40% of sgemm (issue 2), the small shape at 50% (issue 21)). One line per model.
//   build/tests/bench_throughput [steps] [all|throughput|sga|r3si]
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "bench_shapes.h"
#include "config.h"
#include "flops.h"
#include "peak.h"
#include <mpi.h>
#include "comm.h"
#include "blas_kernels.h"
#include "thread_policy.h"
#include "timer.h"
#include "train.h"

// The model's median step against the sgemm ceiling measured between its steps (the best of five
// 2048^3 products after each step): on a shared host whose speed drifts within minutes, a ceiling
// measured once at start compared steps and ceiling from different moments.
static void bench(Comm *world, const char *label, const char *const *sets, int n_sets, int steps) {
    static Config cfg;
    Error err = {{0}};
    if (config_load("configs/tiny.cfg", sets, n_sets, &cfg, &err)) die(EXIT_BAD_INPUT, "%s", err.msg);
    Trainer t;
    if (trainer_init(&t, &cfg, backend_cpu_f32(), world, &err)) die(EXIT_BAD_INPUT, "%s", err.msg);
    double *times = xmalloc(sizeof(double) * steps);
    StepResult r;
    trainer_step(&t, 0, &r, &err);   // warm-up: page faults, thread start-up
    double sgemm_gflops = 0;
    for (int s = 0; s < steps; s++) {
        double t0 = now_seconds();
        if (trainer_step(&t, s + 1, &r, &err)) die(EXIT_FAILURE_OTHER, "%s", err.msg);
        times[s] = now_seconds() - t0;
        double ceiling = measure_sgemm_gflops();
        sgemm_gflops = ceiling > sgemm_gflops ? ceiling : sgemm_gflops;
    }
    double median = median_of(times, steps);
    double tokens = (double)cfg.batch_size * cfg.seq_len;
    double gflops = tokens * t.flops_per_token / median / 1e9;
    ModelShape shape = t.model.shape;
    printf("%-30s L=%d d=%d T=%d V=%d B=%d | %7.1f ms/step | %6.0f tok/s | %6.1f GFLOP/s | sgemm %6.1f | %5.1f%% of sgemm\n",
           label, shape.n_layer, shape.d_model, shape.seq_len, shape.vocab_size, cfg.batch_size, median * 1e3,
           tokens / median, gflops, sgemm_gflops, 100 * gflops / sgemm_gflops);
    free(times);
    trainer_free(&t);
}

// Two trainers on the same machine, one warm-up step each (step 0), then `steps` steps taken in
// turn so that machine noise hits both alike; the median step time of each.
static void alternate_steps(Trainer *a, Trainer *b, int steps, double *median_a, double *median_b) {
    Error err = {{0}};
    StepResult r;
    double *ta = xmalloc(sizeof(double) * steps), *tb = xmalloc(sizeof(double) * steps);
    trainer_step(a, 0, &r, &err);
    trainer_step(b, 0, &r, &err);
    for (int s = 0; s < steps; s++) {
        double t0 = now_seconds();
        trainer_step(a, s + 1, &r, &err);
        double t1 = now_seconds();
        trainer_step(b, s + 1, &r, &err);
        ta[s] = t1 - t0;
        tb[s] = now_seconds() - t1;
    }
    *median_a = median_of(ta, steps);
    *median_b = median_of(tb, steps);
    free(ta);
    free(tb);
}

// SGA against SDPA on the same model in this one process: steps of the two alternate, so that
// machine noise hits both alike; the overhead is the ratio of median step times.
static void bench_sga_overhead(Comm *world, int T, int batch, int steps) {
    static Config cfg_sdpa, cfg_sga;
    Error err = {{0}};
    char seq[64], bs[64], mbs[64];
    snprintf(seq, sizeof seq, "model.seq_len=%d", T);
    snprintf(bs, sizeof bs, "train.batch_size=%d", batch);
    snprintf(mbs, sizeof mbs, "train.micro_batch_size=%d", batch);
    const char *base[] = {"model.n_layer=6", "model.n_head=8", "model.d_model=512", seq, "model.vocab_size=32000", bs, mbs,
                          "train.steps=100", "attention.kind=sdpa"};
    if (config_load("configs/tiny.cfg", base, 9, &cfg_sdpa, &err)) die(EXIT_BAD_INPUT, "%s", err.msg);
    base[8] = "attention.kind=sga";
    if (config_load("configs/tiny.cfg", base, 9, &cfg_sga, &err)) die(EXIT_BAD_INPUT, "%s", err.msg);
    Trainer a, b;
    if (trainer_init(&a, &cfg_sdpa, backend_cpu_f32(), world, &err)) die(EXIT_BAD_INPUT, "%s", err.msg);
    if (trainer_init(&b, &cfg_sga, backend_cpu_f32(), world, &err)) die(EXIT_BAD_INPUT, "%s", err.msg);
    double ma, mb;
    alternate_steps(&a, &b, steps, &ma, &mb);
    printf("SGA vs SDPA, 6 layers d=512 8 heads vocab 32000, T=%d, B=%d | SDPA %8.1f ms/step | SGA %8.1f ms/step | overhead %+.1f%%\n",
           T, batch, ma * 1e3, mb * 1e3, 100 * (mb / ma - 1));
    trainer_free(&a);
    trainer_free(&b);
}

// R3SI against the baseline on the same model in this process: ordinary steps alternate as
// above; monitor steps (every 50) are timed apart. The average overhead weighs 49 ordinary steps
// and one monitor step, as a run with r3si.monitor_every = 50 does.
static void bench_r3si_overhead(Comm *world, int steps) {
    static Config cfg_base, cfg_r3si;
    Error err = {{0}};
    const char *base[BENCH_D512_N + 3];
    memcpy(base, BENCH_D512, sizeof BENCH_D512);
    base[BENCH_D512_N + 1] = "r3si.layers=[2, 3, 4, 5]";
    base[BENCH_D512_N + 2] = "r3si.monitor_every=50";
    base[BENCH_D512_N] = "r3si.enabled=false";
    if (config_load("configs/tiny.cfg", base, BENCH_D512_N + 3, &cfg_base, &err)) die(EXIT_BAD_INPUT, "%s", err.msg);
    base[BENCH_D512_N] = "r3si.enabled=true";
    if (config_load("configs/tiny.cfg", base, BENCH_D512_N + 3, &cfg_r3si, &err)) die(EXIT_BAD_INPUT, "%s", err.msg);
    Trainer a, b;
    if (trainer_init(&a, &cfg_base, backend_cpu_f32(), world, &err)) die(EXIT_BAD_INPUT, "%s", err.msg);
    if (trainer_init(&b, &cfg_r3si, backend_cpu_f32(), world, &err)) die(EXIT_BAD_INPUT, "%s", err.msg);
    // b's warm-up is step 0, a monitor step: alpha > 0 from there on, so the injection runs.
    double base_t, ordinary, tm[3];
    alternate_steps(&a, &b, steps, &base_t, &ordinary);
    StepResult r;
    for (int i = 0; i < 3; i++) {
        double t0 = now_seconds();
        trainer_step(&b, 50 * (i + 1), &r, &err);
        tm[i] = now_seconds() - t0;
    }
    double monitor = median_of(tm, 3);
    double average = (49 * ordinary + monitor) / 50;
    printf("R3SI vs baseline, 6 layers d=512 T=256 B=8, checkpoints 2-5, k 64, d_s 32 | baseline %.1f ms | R3SI %.1f ms "
           "(%+.1f%%) | monitor step %.1f ms (%+.1f%%) | average with monitor_every 50: %+.1f%%\n",
           base_t * 1e3, ordinary * 1e3, 100 * (ordinary / base_t - 1), monitor * 1e3, 100 * (monitor / base_t - 1),
           100 * (average / base_t - 1));
    trainer_free(&a);
    trainer_free(&b);
}

int main(int argc, char **argv) {
    // The trainer's wait policy and OpenBLAS kernels, so that the figures are entrank's.
    thread_policy_apply(argv);
    MPI_Init(&argc, &argv);
    Comm *world = comm_mpi_create(1, sizeof(float));
    int steps = argc > 1 ? atoi(argv[1]) : 5;
    const char *only = argc > 2 ? argv[2] : "all";
    int all = !strcmp(only, "all");
    if (all || !strcmp(only, "throughput")) {
        char blas[2048];
        blas_kernels_describe(blas, sizeof blas);
        printf("%s\nsgemm: cblas_sgemm 2048^3 with these kernels, the best of 5 after each step\n", blas);
        printf("step FLOPs = tokens x (6 x matmul weights + 12 x L x d x T); median of %d steps after one warm-up\n", steps);
        const char *tiny[] = {"train.steps=100"};
        bench(world, "tiny (configs/tiny.cfg)", tiny, 1, steps);
        bench(world, "small (8 x 128, vocab 256)", BENCH_SMALL, BENCH_SMALL_N, steps);
        bench(world, "d512 (6 layers, vocab 32000)", BENCH_D512, BENCH_D512_N, steps);
    }
    if (all || !strcmp(only, "sga")) {
        bench_sga_overhead(world, 256, 8, steps);
        bench_sga_overhead(world, 512, 4, steps);
    }
    if (all || !strcmp(only, "r3si")) bench_r3si_overhead(world, steps);
    world->free(world);
    MPI_Finalize();
    return 0;
}
