// bench_gpu: training throughput of the CUDA backend (bf16 GEMMs) on one GPU, at the posts' shapes,
// against issue 9's goals: the baseline at the gpt-24l-2048 shape and T = 2048 (MFU), SGA against SDPA
// at the gpt-48l-768 shape and T = 512 (both DCT methods where the backend has both), and R3SI against
// the baseline at the gpt-24l-2048 shape. Each pair is measured in this one process, one after the
// other on the same device, with the same micro-batch: the largest power of two of the recipe's
// per-GPU batch whose estimated memory (src/flops.c) fits, the rest as gradient accumulation.
// Step time: the median of the timed steps after warm-up steps, each ended by
// cudaDeviceSynchronize. MFU = model FLOPs per token (src/flops.c) x tokens/s / the device's dense
// bf16 peak (src/peak.c). Results go to stdout and to DIR/gpu-<date>-<gpu>.txt.
//   build/tests/bench_gpu [--out DIR] [--steps N]       (make bench-gpu: --out bench/results)
#include <cuda_runtime.h>
#include <errno.h>
#include <math.h>
#include <mpi.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include "comm.h"
#include "config.h"
#include "flops.h"
#include "memory_estimate.h"
#include "peak.h"
#include "timer.h"
#include "train.h"
#include "../cuda/backend_cuda.h"
#include "../cuda/comm_nccl.h"
#if __has_include("../cuda/sga_dct.h")
#include "../cuda/sga_dct.h"
#define HAVE_DCT_METHODS 1
#else
#define HAVE_DCT_METHODS 0
#endif

#ifndef ENTRANK_REVISION
#define ENTRANK_REVISION "unknown"
#endif

enum { WARMUP_STEPS = 2, MONITOR_EVERY = 50 };

static FILE *results;          // the results file, besides stdout
static double peak_tflops;     // 0: unknown device, MFU not reported
static size_t free_bytes;      // device memory free after the backend's creation

static void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void out(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
    if (results) {
        va_start(ap, fmt);
        vfprintf(results, fmt, ap);
        va_end(ap);
        fflush(results);
    }
}

#define cudaCheck(call) do { cudaError_t rc_ = (call); \
    if (rc_ != cudaSuccess) die(EXIT_FAILURE_OTHER, "CUDA error at %s:%d: %s: %s", __FILE__, __LINE__, #call, cudaGetErrorString(rc_)); } while (0)

// ---- configurations ---------------------------------------------------------------------------------
// A preset with the overrides every benchmark needs: synthetic data (the presets name shards that
// are not here; throughput does not depend on the tokens), no traces or evaluation in the timed
// steps, a run long enough for the schedule checks.
typedef struct {
    const char *label;
    const char *preset;
    const char *sets[12];
    int per_gpu_batch;     // the recipe's sequences per GPU and step
} Bench;

static int load(const Bench *b, int micro_batch, Config *cfg) {
    const char *all[32];
    char bs[64], mbs[64];
    int n = 0;
    all[n++] = "data.kind=logic";
    all[n++] = "train.tokens=0";
    all[n++] = "train.steps=1000";
    all[n++] = "train.warmup_steps=10";
    all[n++] = "trace.every=0";
    all[n++] = "eval.every=0";
    snprintf(bs, sizeof bs, "train.batch_size=%d", b->per_gpu_batch);
    snprintf(mbs, sizeof mbs, "train.micro_batch_size=%d", micro_batch);
    all[n++] = bs;
    all[n++] = mbs;
    for (int i = 0; i < 12 && b->sets[i]; i++) all[n++] = b->sets[i];
    Error err = {{0}};
    if (config_load(b->preset, all, n, cfg, &err)) die(EXIT_BAD_INPUT, "%s: %s", b->label, err.msg);
    return 0;
}

static double estimated_bytes(const Config *cfg) {
    // One rank holding the whole model (the benchmark runs a single GPU).
    MemoryEstimate m = estimate_memory(cfg, 1, 1, 0);
    return m.peak_bytes;
}

// The largest power-of-two micro-batch dividing the per-GPU batch that fits every benchmark of a
// pair in 85% of the free memory (cuBLAS, cuFFT and the allocator need the rest).
static int fit_micro_batch(const Bench *const *pair, int n) {
    int best = 0;
    for (int mb = pair[0]->per_gpu_batch; mb >= 1; mb /= 2) {
        if (pair[0]->per_gpu_batch % mb) continue;
        int fits = 1;
        for (int i = 0; i < n; i++) {
            static Config cfg;
            load(pair[i], mb, &cfg);
            fits = fits && estimated_bytes(&cfg) <= 0.85 * (double)free_bytes;
        }
        if (fits) { best = mb; break; }
    }
    if (!best) die(EXIT_FAILURE_OTHER, "%s: one sequence does not fit in %.1f GiB", pair[0]->label, free_bytes / 1073741824.0);
    return best;
}

// ---- measurement ------------------------------------------------------------------------------------
typedef struct {
    double step_s;             // median over the timed steps
    double monitor_s;          // R3SI: median over the monitor steps (0 otherwise)
    double tokens_per_step, flops_per_token;
} Result;

static double median(double *x, int n) {
    qsort(x, (size_t)n, sizeof(double), compare_doubles);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

static double timed_step(Trainer *t, long step) {
    StepResult r;
    Error err = {{0}};
    cudaCheck(cudaDeviceSynchronize());
    double t0 = now_seconds();
    if (trainer_step(t, step, &r, &err)) die(EXIT_FAILURE_OTHER, "%s", err.msg);
    cudaCheck(cudaDeviceSynchronize());
    if (r.skipped) die(EXIT_FAILURE_OTHER, "step %ld: non-finite loss %g", step, r.loss);
    return now_seconds() - t0;
}

// Warm-up steps 0 and 1 (step 0 is an R3SI monitor step), then `steps` ordinary steps; with R3SI,
// also two monitor steps (50 and 100), timed apart.
static Result measure(const Backend *be, Comm *comm, const Bench *b, int micro_batch, int steps) {
    static Config cfg;
    load(b, micro_batch, &cfg);
    Trainer t;
    Error err = {{0}};
    if (trainer_init(&t, &cfg, be, comm, &err)) die(EXIT_BAD_INPUT, "%s: %s", b->label, err.msg);
    for (int s = 0; s < WARMUP_STEPS; s++) timed_step(&t, s);
    double *times = xmalloc(sizeof(double) * (size_t)steps);
    for (int s = 0; s < steps; s++) times[s] = timed_step(&t, WARMUP_STEPS + s);
    Result r = {median(times, steps), 0, (double)cfg.batch_size * cfg.seq_len, t.flops_per_token};
    if (cfg.r3si_enabled) {
        double m[2] = {timed_step(&t, MONITOR_EVERY), timed_step(&t, 2 * MONITOR_EVERY)};
        r.monitor_s = median(m, 2);
    }
    ModelShape s = t.model.shape;
    double tok_s = r.tokens_per_step / r.step_s, tflops = tok_s * r.flops_per_token / 1e12;
    char mfu[32] = "n/a";
    if (peak_tflops > 0) snprintf(mfu, sizeof mfu, "%.1f%%", 100 * tflops / peak_tflops);
    out("%-24s L=%d d=%d H=%d T=%d V=%d | %d seq/step = %d x %d | %8.1f ms/step | %9.0f tok/s | %6.1f TFLOP/s | MFU %s\n",
        b->label, s.n_layer, s.d_model, s.n_head, s.seq_len, s.vocab_size, cfg.batch_size, t.micro_batches, cfg.micro_batch_size,
        r.step_s * 1e3, tok_s, tflops, mfu);
    free(times);
    trainer_free(&t);
    return r;
}

static const char *goal(double value, double bound, int at_least) {
    return (at_least ? value >= bound : value <= bound) ? "met" : "NOT met";
}

// ---- output file ------------------------------------------------------------------------------------
static void mkdir_p(const char *dir) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", dir);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0775) && errno != EEXIST) die(EXIT_FAILURE_OTHER, "%s: cannot create: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0775) && errno != EEXIST) die(EXIT_FAILURE_OTHER, "%s: cannot create: %s", buf, strerror(errno));
}

static FILE *open_results(const char *dir, const char *device, char *path, size_t n) {
    char date[32], name[256];
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%d", localtime(&now));
    // "NVIDIA H100 80GB HBM3" -> "NVIDIA-H100-80GB-HBM3"
    size_t k = 0;
    for (const char *c = device; *c && k + 1 < sizeof name; c++) {
        int keep = (*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '.';
        if (keep) name[k++] = *c;
        else if (k > 0 && name[k - 1] != '-') name[k++] = '-';
    }
    while (k > 0 && name[k - 1] == '-') k--;
    name[k] = 0;
    mkdir_p(dir);
    snprintf(path, n, "%s/gpu-%s-%s.txt", dir, date, k ? name : "unknown-gpu");
    FILE *f = fopen(path, "w");
    if (!f) die(EXIT_FAILURE_OTHER, "%s: cannot write: %s", path, strerror(errno));
    return f;
}

int main(int argc, char **argv) {
    const char *out_dir = NULL;
    int steps = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--out") && i + 1 < argc) out_dir = argv[++i];
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else die(EXIT_BAD_INPUT, "usage: bench_gpu [--out DIR] [--steps N]");
    }
    if (steps < 1) die(EXIT_BAD_INPUT, "--steps: %d must be >= 1", steps);
    MPI_Init(&argc, &argv);
    char why[256] = "";
    if (cuda_device_count(why, sizeof why) == 0) {
        printf("# SKIP: no CUDA device (%s)\n", why);
        MPI_Finalize();
        return 77;
    }
    const Backend *be = backend_cuda_create(0, CUDA_GEMM_BF16, why, sizeof why);
    if (!be) die(EXIT_FAILURE_OTHER, "cannot create the CUDA backend: %s", why);
    Comm *comm = comm_nccl_create(1, be->elem_size);
    const char *device = backend_cuda_device_name(), *source = "";
    peak_tflops = gpu_bf16_peak_tflops(device, &source);
    size_t total_bytes;
    cudaCheck(cudaMemGetInfo(&free_bytes, &total_bytes));
    char path[1200] = "";
    if (out_dir) results = open_results(out_dir, device, path, sizeof path);

    char date[64];
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S %Z", localtime(&now));
    int cuda_runtime = 0;
    cudaCheck(cudaRuntimeGetVersion(&cuda_runtime));
    out("bench_gpu | %s | entrank %s | %s (%.1f of %.1f GiB free) | CUDA runtime %d.%d\n", date, ENTRANK_REVISION, device,
        free_bytes / 1073741824.0, total_bytes / 1073741824.0, cuda_runtime / 1000, cuda_runtime % 1000 / 10);
    if (peak_tflops > 0) out("peak: %.1f TFLOP/s dense bf16 (%s)\n", peak_tflops, source);
    else out("peak: unknown for this device (%s): MFU not reported\n", source);
    out("backend %s (bf16 tensor-core GEMMs, fp32 accumulation and everything else fp32) | data: synthetic logic task\n", be->name);
    out("step time: median of %d steps after %d warm-up steps, each ended by cudaDeviceSynchronize; "
        "FLOPs per token as src/flops.c (6 x matmul weights + 12 L d T, + SGA's)\n", steps, WARMUP_STEPS);

    // ---- the baseline and R3SI at the gpt-24l-2048 shape, T = 2048 (recipe: 512 sequences on 64 GPUs)
    const Bench base = {"baseline gpt-24l-2048", "configs/gpt-24l-2048.cfg", {"r3si.enabled=false", NULL}, 8};
    const Bench r3si = {"R3SI gpt-24l-2048", "configs/gpt-24l-2048.cfg",
                        {"r3si.enabled=true", "r3si.layers=[10, 13, 16, 20]", "r3si.monitor_every=50", NULL}, 8};
    const Bench *r3si_pair[2] = {&base, &r3si};
    int mb = fit_micro_batch(r3si_pair, 2);
    out("\n-- baseline and R3SI at the gpt-24l-2048 shape (T = 2048), micro-batch %d\n", mb);
    Result rb = measure(be, comm, &base, mb, steps);
    Result rr = measure(be, comm, &r3si, mb, steps);
    double base_mfu = peak_tflops > 0 ? rb.tokens_per_step / rb.step_s * rb.flops_per_token / 1e12 / peak_tflops : NAN;
    double r3si_ordinary = rr.step_s / rb.step_s - 1, r3si_monitor = rr.monitor_s / rb.step_s - 1;
    double r3si_average = ((MONITOR_EVERY - 1) * rr.step_s + rr.monitor_s) / MONITOR_EVERY / rb.step_s - 1;
    out("R3SI overhead: ordinary step %+.1f%% | monitor step %+.1f%% | average with monitor_every %d: %+.1f%%\n",
        100 * r3si_ordinary, 100 * r3si_monitor, MONITOR_EVERY, 100 * r3si_average);

    // ---- SGA against SDPA at the gpt-48l-768 shape, T = 512 (recipe: 256 sequences on 8 GPUs)
    const Bench sdpa = {"SDPA gpt-48l-768", "configs/gpt-48l-768.cfg", {"attention.kind=sdpa", NULL}, 32};
    const Bench sga = {"SGA gpt-48l-768", "configs/gpt-48l-768.cfg", {"attention.kind=sga", NULL}, 32};
    const Bench *sga_pair[2] = {&sdpa, &sga};
    mb = fit_micro_batch(sga_pair, 2);
    out("\n-- SGA and SDPA at the gpt-48l-768 shape (T = 512), micro-batch %d\n", mb);
    Result rs = measure(be, comm, &sdpa, mb, steps);
    double sga_overhead;
#if HAVE_DCT_METHODS
    CudaDctMethod default_method = cuda_get_dct_method();
    const char *method_names[2] = {"cuFFT", "GEMM"};
    double overhead[2];
    for (int m = 0; m < 2; m++) {
        cuda_set_dct_method(m == 0 ? CUDA_DCT_FFT : CUDA_DCT_GEMM);
        char label[64];
        snprintf(label, sizeof label, "SGA gpt-48l-768, DCT %s", method_names[m]);
        Bench b = sga;
        b.label = label;
        Result rg = measure(be, comm, &b, mb, steps);
        overhead[m] = rg.step_s / rs.step_s - 1;
        out("SGA overhead over SDPA with the %s DCT: %+.1f%%\n", method_names[m], 100 * overhead[m]);
    }
    cuda_set_dct_method(default_method);
    out("the backend's default DCT method: %s\n", method_names[default_method == CUDA_DCT_GEMM]);
    sga_overhead = overhead[default_method == CUDA_DCT_GEMM];
#else
    Result rg = measure(be, comm, &sga, mb, steps);
    sga_overhead = rg.step_s / rs.step_s - 1;
    out("SGA overhead over SDPA: %+.1f%%\n", 100 * sga_overhead);
#endif

    out("\n-- issue 9's goals on one GPU\n");
    if (peak_tflops > 0) out("baseline gpt-24l-2048 T=2048 MFU %.1f%% (goal >= 45%%): %s\n", 100 * base_mfu, goal(base_mfu, 0.45, 1));
    else out("baseline gpt-24l-2048 T=2048 MFU: n/a (peak unknown)\n");
    out("SGA overhead over SDPA at T=512 %+.1f%% (goal <= 6%%): %s\n", 100 * sga_overhead, goal(sga_overhead, 0.06, 0));
    out("R3SI overhead (average with monitor steps) %+.1f%% (goal <= 2%%): %s\n", 100 * r3si_average, goal(r3si_average, 0.02, 0));
    if (results) {
        fclose(results);
        printf("results written to %s\n", path);
    }
    comm->free(comm);
    backend_cuda_destroy();
    MPI_Finalize();
    return 0;
}
