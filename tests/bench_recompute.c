// bench_recompute: what train.recompute costs and saves on the CPU backend.
//   1. The activation bytes of one micro-batch slot (Activations.bytes: the sizes activations_init
//      and the modules' slots allocate) per mode, for tiny, tiny-sga, tiny-r3si and gpt-48l-768. The
//      sizes come from a backend that counts allocations without making them, so that the 48-layer
//      model needs no memory here.
//   2. The median step time of each mode, the three trainers stepping in turn in this one process
//      (machine noise hits all alike; short steps get more of them, see SECONDS_PER_MODE), at a
//      small shape and at d=512; the goals are "attention" at most +10% and "block" at most
//      +35% over "none".
//   build/tests/bench_recompute [steps] [all|memory|time] [tiny|tiny-sga|d512-sdpa|d512-sga|sga-780m-layers: one model's timing]
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <mpi.h>
#include "backend_count.h"
#include "bench_shapes.h"
#include "comm.h"
#include "config.h"
#include "model.h"
#include "thread_policy.h"
#include "timer.h"
#include "train.h"

static const char *const MODES[3] = {"none", "attention", "block"};

static size_t activation_bytes(const char *config, RecomputeMode mode) {
    static Config cfg;
    Error err = {{0}};
    if (config_load(config, NULL, 0, &cfg, &err)) die(EXIT_BAD_INPUT, "%s", err.msg);
    cfg.recompute = mode;
    // The counting backend (src/backend_count.c, what `entrank info` estimates with): the model
    // and the slots only record sizes, Activations.bytes adds them up.
    const Backend *counting = backend_count();
    ModelShape s = model_shape_from_config(&cfg);
    Model m;
    Activations a;
    model_init(&m, counting, s, 0, s.n_layer, 1, 1, 1);
    activations_init(&a, &m, cfg.micro_batch_size);
    size_t bytes = a.bytes;
    activations_free(&a, &m);
    model_free(&m);
    return bytes;
}

static void bench_memory(void) {
    const char *configs[] = {"configs/tiny.cfg", "configs/tiny-sga.cfg", "configs/tiny-r3si.cfg", "configs/gpt-48l-768.cfg"};
    printf("activation bytes of one micro-batch slot, one stage (fp32; Activations.bytes)\n");
    for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++) {
        size_t b[3];
        for (int mode = 0; mode < 3; mode++) b[mode] = activation_bytes(configs[i], (RecomputeMode)mode);
        printf("%-24s none %12zu B (%8.3f GiB) | attention %12zu B (%8.3f GiB, %5.1f%%) | block %12zu B (%8.3f GiB, %5.1f%%)\n",
               configs[i], b[0], b[0] / 1073741824.0, b[1], b[1] / 1073741824.0, 100.0 * b[1] / b[0], b[2],
               b[2] / 1073741824.0, 100.0 * b[2] / b[0]);
    }
}

static const char *only_model;   // argv[3]: time this model only

// Models whose steps are short get more of them than asked, up to MAX_STEPS: about SECONDS_PER_MODE
// of steps for each mode.
#define SECONDS_PER_MODE 4.0
#define MAX_STEPS 41

// The three modes of `config` with `sets`, one warm-up step each, then `steps` steps in turn.
static void bench_time(Comm *world, const char *label, const char *config, const char *const *sets, int n_sets, int steps) {
    if (only_model && strcmp(only_model, label)) return;
    static Config cfg[3];
    Trainer t[3];
    Error err = {{0}};
    const char *all[16];
    for (int i = 0; i < n_sets; i++) all[i] = sets[i];
    for (int mode = 0; mode < 3; mode++) {
        char key[64];
        snprintf(key, sizeof key, "train.recompute=%s", MODES[mode]);
        all[n_sets] = key;
        if (config_load(config, all, n_sets + 1, &cfg[mode], &err)) die(EXIT_BAD_INPUT, "%s", err.msg);
        if (trainer_init(&t[mode], &cfg[mode], backend_cpu_f32(), world, &err)) die(EXIT_BAD_INPUT, "%s", err.msg);
    }
    StepResult r;
    double loss[3];
    double warm_up = now_seconds();
    for (int mode = 0; mode < 3; mode++) trainer_step(&t[mode], 0, &r, &err);   // warm-up: page faults, threads
    warm_up = (now_seconds() - warm_up) / 3;
    // Short steps are many to a second and a few of them are a poor median: a host that slows for a
    // moment moved tiny-sga's "attention" figure by +-3 points between runs of 5. They get more.
    int wanted = warm_up * MAX_STEPS > SECONDS_PER_MODE ? (int)(SECONDS_PER_MODE / warm_up) : MAX_STEPS;
    if (wanted > steps) steps = wanted;
    double *times = xmalloc(sizeof(double) * 3 * steps);
    for (int s = 0; s < steps; s++)
        for (int mode = 0; mode < 3; mode++) {
            double t0 = now_seconds();
            if (trainer_step(&t[mode], s + 1, &r, &err)) die(EXIT_FAILURE_OTHER, "%s", err.msg);
            times[mode * steps + s] = now_seconds() - t0;
            loss[mode] = r.loss;
        }
    double median[3];
    for (int mode = 0; mode < 3; mode++) median[mode] = median_of(times + mode * steps, steps);
    ModelShape s = t[0].model.shape;
    printf("%-22s L=%d d=%d T=%d B=%d %-4s | %2d steps | none %8.1f ms | attention %8.1f ms (%+5.1f%%) | block %8.1f ms (%+5.1f%%) | "
           "same loss: %s\n",
           label, s.n_layer, s.d_model, s.seq_len, cfg[0].micro_batch_size, s.attention->name, steps, median[0] * 1e3,
           median[1] * 1e3, 100 * (median[1] / median[0] - 1), median[2] * 1e3, 100 * (median[2] / median[0] - 1),
           loss[0] == loss[1] && loss[0] == loss[2] ? "yes" : "NO");
    free(times);
    for (int mode = 0; mode < 3; mode++) trainer_free(&t[mode]);
}

int main(int argc, char **argv) {
    // The trainer's wait policy and OpenBLAS kernels, so that the figures are entrank's.
    thread_policy_apply(argv);
    MPI_Init(&argc, &argv);
    setvbuf(stdout, NULL, _IOLBF, 0);   // a line as soon as each model is measured (make bench tees it)
    Comm *world = comm_mpi_create(1, sizeof(float));
    int steps = argc > 1 ? atoi(argv[1]) : 5;
    const char *only = argc > 2 ? argv[2] : "all";
    only_model = argc > 3 ? argv[3] : NULL;
    if (!strcmp(only, "all") || !strcmp(only, "memory")) bench_memory();
    if (!strcmp(only, "all") || !strcmp(only, "time")) {
        printf("median step time of %d steps or more (about %.0f s of each mode's steps, at most %d) after one warm-up, modes in "
               "turn (goal: attention <= +10%%, block <= +35%%)\n", steps, SECONDS_PER_MODE, MAX_STEPS);
        const char *none[] = {"train.steps=100"};
        bench_time(world, "tiny", "configs/tiny.cfg", none, 1, steps);
        bench_time(world, "tiny-sga", "configs/tiny-sga.cfg", none, 1, steps);
        const char *d512[BENCH_D512_N + 1];
        memcpy(d512, BENCH_D512, sizeof BENCH_D512);
        d512[BENCH_D512_N] = "attention.kind=sdpa";
        bench_time(world, "d512-sdpa", "configs/tiny.cfg", d512, BENCH_D512_N + 1, steps);
        d512[BENCH_D512_N] = "attention.kind=sga";
        bench_time(world, "d512-sga", "configs/tiny.cfg", d512, BENCH_D512_N + 1, steps);
        // Layers of the SGA post's "780M" (jobs/sga-780m: 48 x 1152, 12 heads, T=512, post-norm), four of
        // them, with a vocabulary that gives the head the share of the step it has at 48 layers (5%, not
        // the 45% a 32k head has next to 4 layers), so that the row shows the per-layer cost.
        const char *sga780m[] = {"model.n_layer=4", "model.n_head=12", "model.d_model=1152", "model.seq_len=512",
                                 "model.vocab_size=2560", "model.norm=post", "model.scaled_init=false", "train.batch_size=1",
                                 "train.micro_batch_size=1", "train.steps=100", "attention.kind=sga"};
        bench_time(world, "sga-780m-layers", "configs/tiny.cfg", sga780m, 11, steps);
    }
    world->free(world);
    MPI_Finalize();
    return 0;
}
