// train_command.c: `entrank train`: the run directory, the human log, metrics.h5 and the loop
// around trainer_step with logging, evaluation and the bad-step policy.
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "flops.h"
#include "memory_estimate.h"
#include "peak.h"
#include "checkpoint.h"
#include "metrics.h"
#include "r3si.h"
#include "run_dir.h"
#include "run_history.h"
#include "signals.h"
#include "timer.h"
#include "commands.h"
#include "thread_policy.h"
#include "blas_kernels.h"
#include "train.h"

#ifndef ENTRANK_REVISION
#define ENTRANK_REVISION "unknown"
#endif

typedef struct {
    FILE *file;
    const char *path;
    int write_failed;   // a failed write of log.txt is reported once, not at every line
} RunLog;

// One line to stdout and to the run's log.txt. A write error (a full disk) is reported once on
// stderr; training goes on, since the checkpoints decide whether the run can continue: a
// checkpoint that cannot be written stops it with exit 1.
static void runlog(RunLog *log, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void runlog(RunLog *log, const char *fmt, ...) {
    if (!log) return;
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
    if (log->file) {
        va_start(ap, fmt);
        errno = 0;
        int bad = vfprintf(log->file, fmt, ap) < 0;
        va_end(ap);
        bad = fflush(log->file) != 0 || bad || ferror(log->file);
        if (bad && !log->write_failed) {
            log->write_failed = 1;
            fprintf(stderr, "entrank: %s: write failed: %s (lines from now on may be missing from this file; they still go to stdout)\n",
                    log->path, errno ? strerror(errno) : "I/O error");
        }
        if (bad) clearerr(log->file);
    }
}

static int mkdir_p(const char *path, Error *err) {
    char buf[CFG_PATH_LEN];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return error_set(err, "--run-dir: path too long");
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0775) && errno != EEXIST) return error_set(err, "%s: cannot create directory: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0775) && errno != EEXIST) return error_set(err, "%s: cannot create directory: %s", buf, strerror(errno));
    return 0;
}

static void format_duration(double seconds, char *out, size_t n) {
    long s = (long)(seconds + 0.5);
    if (s >= 3600) snprintf(out, n, "%ldh%02ldm", s / 3600, s / 60 % 60);
    else if (s >= 60) snprintf(out, n, "%ldm%02lds", s / 60, s % 60);
    else snprintf(out, n, "%lds", s);
}

static void declare_r3si_metrics(MetricsFile *mf, const R3si *r) {
    metrics_declare(mf, "/steps/lsd", 0, NULL, "R3SI rank hinge loss L_SD (part of aux_loss)", "1");
    metrics_declare(mf, "/r3si/step", 0, NULL, "step of the monitor update", "step");
    metrics_declare(mf, "/r3si/tau", 0, NULL, "rank threshold tau after the update", "dimensions");
    metrics_declare(mf, "/r3si/rho", 0, NULL, "mean over checkpoint layers of the variance of head-gradient cosines", "1");
    size_t dims[1] = {(size_t)r->n_ckpt};
    metrics_declare(mf, "/r3si/rank", 1, dims, "participation ratio of the global-batch covariance entering each checkpoint block", "dimensions");
    metrics_declare(mf, "/r3si/alpha", 1, dims, "injection strength max(0, tau - rank) / tau after the update", "fraction");
    metrics_declare(mf, "/r3si/inject_ratio", 1, dims, "||delta|| / ||H|| on the first micro-batch of the monitor step", "fraction");
    const char *names[3] = {"/r3si/rank", "/r3si/alpha", "/r3si/inject_ratio"};
    for (int i = 0; i < 3; i++) metrics_set_axis(mf, names[i], 1, "layer", r->layers, r->n_ckpt);
}

static void record_r3si(MetricsFile *mf, const R3si *r, long step, double lsd, int monitored) {
    metrics_append(mf, "/steps/lsd", &lsd);
    if (!monitored) return;
    double s = (double)step;
    metrics_append(mf, "/r3si/step", &s);
    metrics_append(mf, "/r3si/tau", &r->tau);
    metrics_append(mf, "/r3si/rho", &r->rho);
    metrics_append(mf, "/r3si/rank", r->rank);
    metrics_append(mf, "/r3si/alpha", r->alpha);
    metrics_append(mf, "/r3si/inject_ratio", r->inject_ratio);
}

static void declare_trace_metrics(MetricsFile *mf, Trainer *t) { trace_declare_metrics(mf, &t->trace); }

static void record_trace(MetricsFile *mf, Trainer *t, long step) { trace_append_metrics(mf, &t->trace, step); }

// The per-step scalars of /steps and the evaluation scalars of /eval: X(id, name, description, units).
#define STEP_METRICS(X)                                                                                            \
    X(STEP, "/steps/step", "optimizer step (0-based)", "step")                                                     \
    X(TOKENS, "/steps/tokens", "tokens consumed after this step", "tokens")                                        \
    X(LOSS, "/steps/loss", "total training loss (LM loss + auxiliary losses)", "nats/token")                       \
    X(LM_LOSS, "/steps/lm_loss", "language-model cross-entropy over scored positions", "nats/token")               \
    X(AUX_LOSS, "/steps/aux_loss", "auxiliary losses (regularisers); 0 without any", "nats/token")                 \
    X(LR, "/steps/lr", "learning rate of this step", "1")                                                          \
    X(GRAD_NORM, "/steps/grad_norm", "global gradient L2 norm before clipping", "1")                               \
    X(STEP_MS, "/steps/step_ms", "wall time of the step", "ms")                                                    \
    X(TOKENS_PER_S, "/steps/tokens_per_s", "training throughput", "tokens/s")                                      \
    X(MFU, "/steps/mfu", "achieved FLOP/s over the device peak (CPU: measured cblas_sgemm; GPU: dense bf16 datasheet peak)", "fraction") \
    X(EPOCH, "/steps/epoch", "data epoch of the step's first sample (of its blend source; random sampling: nominal, samples / windows); NaN for synthetic tasks", "epoch") \
    X(POSITION, "/steps/position", "position of the step's first sample in that epoch's window permutation; NaN for synthetic tasks", "window")
#define EVAL_METRICS(X)                                                                                            \
    X(EVAL_STEP, "/eval/step", "step after which the evaluation ran", "step")                                      \
    X(VAL_LOSS, "/eval/val_loss", "validation cross-entropy over scored positions", "nats/token")                  \
    X(VAL_PPL, "/eval/val_ppl", "exp(val_loss)", "1")

#define METRIC_ID(id, name, description, units) METRIC_##id,
enum { STEP_METRICS(METRIC_ID) NUM_STEP_METRICS };
enum { EVAL_METRICS(METRIC_ID) NUM_EVAL_METRICS };
#undef METRIC_ID
#define METRIC_ROW(id, name, description, units) {name, description, units},
typedef struct { const char *name, *description, *units; } MetricRow;
static const MetricRow STEP_METRIC_ROWS[] = {STEP_METRICS(METRIC_ROW)};
static const MetricRow EVAL_METRIC_ROWS[] = {EVAL_METRICS(METRIC_ROW)};
#undef METRIC_ROW

static void declare_metrics(MetricsFile *mf, int n_buckets) {
    for (int i = 0; i < NUM_STEP_METRICS; i++)
        metrics_declare(mf, STEP_METRIC_ROWS[i].name, 0, NULL, STEP_METRIC_ROWS[i].description, STEP_METRIC_ROWS[i].units);
    for (int i = 0; i < NUM_EVAL_METRICS; i++)
        metrics_declare(mf, EVAL_METRIC_ROWS[i].name, 0, NULL, EVAL_METRIC_ROWS[i].description, EVAL_METRIC_ROWS[i].units);
    if (n_buckets > 0) {
        size_t dims[1] = {(size_t)n_buckets};
        metrics_declare(mf, "/eval/task_acc", 1, dims, "answer accuracy per task bucket (depth or distance); NaN if empty", "fraction");
        int buckets[DATA_MAX_BUCKETS];
        for (int b = 0; b < n_buckets; b++) buckets[b] = b;
        metrics_set_axis(mf, "/eval/task_acc", 1, "bucket", buckets, n_buckets);
    }
}

static void report_eval(RunLog *log, MetricsFile *mf, Trainer *t, long step, const EvalResult *ev) {
    char line[2048];
    int len = snprintf(line, sizeof line, "eval step %ld | val loss %.6f | val ppl %.4f", step, ev->loss, ev->ppl);
    double acc[DATA_MAX_BUCKETS];
    for (int b = 0; b < ev->n_buckets; b++) {
        acc[b] = ev->total[b] > 0 ? (double)ev->correct[b] / ev->total[b] : NAN;
        len += snprintf(line + len, sizeof line - (size_t)len, " | %s acc %.3f (n=%ld)", data_bucket_label(t->val_data, b),
                        acc[b], ev->total[b]);
        if (len >= (int)sizeof line) break;
    }
    runlog(log, "%s\n", line);
    double row[NUM_EVAL_METRICS] = {[METRIC_EVAL_STEP] = (double)step, [METRIC_VAL_LOSS] = ev->loss, [METRIC_VAL_PPL] = ev->ppl};
    for (int i = 0; i < NUM_EVAL_METRICS; i++) metrics_append(mf, EVAL_METRIC_ROWS[i].name, &row[i]);
    if (ev->n_buckets > 0) metrics_append(mf, "/eval/task_acc", acc);
    metrics_flush(mf);
}

// The step loop, run by every rank; log and mf are NULL except on rank 0.
typedef struct {
    const char *run_dir;
    const char *config_text;
    long start_step;       // first step to run (0, or the resumed checkpoint's step)
    const RunDevice *dev;
} LoopSetup;

// Collective. The metric rows up to the checkpoint reach metrics.h5 before `latest` moves, so a
// run killed after it and resumed from it has every row. Returns -1 (err set) if the checkpoint
// could not be written.
static int save_checkpoint(Trainer *t, const LoopSetup *setup, RunLog *log, MetricsFile *mf, long steps_done, Error *err) {
    double t0 = now_seconds();
    if (mf) metrics_flush(mf);
    CheckpointProgress progress = {steps_done, (double)steps_done * t->cfg->batch_size * t->cfg->seq_len};
    CheckpointTarget target = trainer_checkpoint_target(t);
    if (checkpoint_save(&target, setup->run_dir, progress, setup->config_text, err)) return -1;
    runlog(log, "checkpoint %s/checkpoints/step_%08ld.h5 written in %.2f s\n", setup->run_dir, steps_done, now_seconds() - t0);
    return 0;
}

// A checkpoint that cannot be written ends the run: exit 1 on every rank, rank 0 says why.
static int checkpoint_failed(Trainer *t, const Error *err) {
    if (t->comm->world_rank == 0) fprintf(stderr, "entrank: %s\n", err->msg);
    return EXIT_FAILURE_OTHER;
}

static int train_loop(Trainer *t, const Config *cfg, RunLog *log, MetricsFile *mf, const LoopSetup *setup) {
    Error err = {{0}};
    double tokens_per_step = (double)cfg->batch_size * cfg->seq_len;
    // MFU's ceiling: on the CPU the measured sgemm rate, on a GPU the datasheet's dense bf16 peak
    // (0 when the device is not in src/peak.c's table: MFU is then NaN).
    const RunDevice *dev = setup->dev;
    int on_gpu = !strcmp(dev->kind, "cuda");
    const char *peak_source = "";
    double peak_gflops = 0;
    // ENTRANK_CPU_PEAK_GFLOPS gives the CPU ceiling instead of measuring it (a second of sgemm at
    // every start: the test suite starts hundreds of short runs); the log says which it was.
    const char *given_peak = getenv("ENTRANK_CPU_PEAK_GFLOPS");
    double given = given_peak ? atof(given_peak) : 0;
    if (log) peak_gflops = on_gpu ? 1e3 * gpu_bf16_peak_tflops(dev->name, &peak_source) : given > 0 ? given : measure_sgemm_gflops();
    if (log) {
        ModelShape shape = t->model.shape;
        ParamCounts pc = count_params(&shape);
        runlog(log, "entrank %s | device %s%s%s (%s) | %d ranks: dp %d x pp %d%s\n", ENTRANK_REVISION, dev->kind,
               on_gpu ? ": " : "", on_gpu ? dev->name : "", t->be->name, t->comm->world_size, t->comm->dp, t->comm->pp,
               cfg->zero ? " | ZeRO-1" : "");
        runlog(log, "model: %d layers, %d heads, d_model %d, seq_len %d, vocab %d, %s-norm | %.3fM parameters\n",
               shape.n_layer, shape.n_head, shape.d_model, shape.seq_len, shape.vocab_size,
               shape.norm == NORM_PRE ? "pre" : "post", pc.total / 1e6);
        if (!on_gpu) {
            char threads[256], blas[2048];
            thread_policy_describe(threads, sizeof threads);
            blas_kernels_describe(blas, sizeof blas);
            runlog(log, "%s\n%s\n", threads, blas);
        }
        runlog(log, "train: %ld steps x %d sequences (%d micro-batches of %d per replica) = %.0f tokens/step | data %s\n",
               t->total_steps, cfg->batch_size, t->micro_batches, t->micro_batch_size, tokens_per_step, cfg->data_kind);
        // MFU is per rank: the FLOPs of the step over world_size times one rank's peak.
        if (on_gpu)
            runlog(log, "throughput reference: %s dense bf16 tensor-core peak %.1f TFLOP/s (%s; MFU is relative to %d x that); "
                   "%.4f GFLOP per token\n", dev->name, peak_gflops / 1e3, peak_source, t->comm->world_size, t->flops_per_token / 1e9);
        else {
            // Measured in this process, so with the kernels the blas line names, which the steps run.
            char kernels[96] = "";
            if (given <= 0) snprintf(kernels, sizeof kernels, " with OpenBLAS's %s kernels", blas_kernels_running());
            runlog(log, "throughput reference: cblas_sgemm 2048^3 %s %.1f GFLOP/s%s on rank 0 (MFU is relative to "
                   "%d x that); %.4f GFLOP per token\n", given > 0 ? "given by ENTRANK_CPU_PEAK_GFLOPS as" : "(best of 5) measured at",
                   peak_gflops, kernels, t->comm->world_size, t->flops_per_token / 1e9);
        }
    }
    int exit_code = EXIT_DONE;
    double run_start = now_seconds(), steps_time = 0;
    long timed_steps = 0;
    if (setup->start_step > 0) runlog(log, "resuming at step %ld\n", setup->start_step);
    for (long step = setup->start_step; step < t->total_steps; step++) {
        // All ranks agree at the step boundary whether a stop signal arrived anywhere.
        double stop_signal = signals_stop_requested();
        t->comm->world_max(t->comm, &stop_signal, 1);
        if (stop_signal) {
            runlog(log, "stop signal received: checkpointing at step %ld and exiting with code %d (requeue me)\n", step, EXIT_REQUEUE);
            if (save_checkpoint(t, setup, log, mf, step, &err)) return checkpoint_failed(t, &err);
            return EXIT_REQUEUE;
        }
        double t0 = now_seconds();
        StepResult r;
        if (trainer_step(t, step, &r, &err)) die(EXIT_BAD_INPUT, "%s", err.msg);
        double dt = now_seconds() - t0;
        if (log && step == setup->start_step) {
            // The backend's measured high-water mark (initialisation and a whole step, traced at
            // step 0) next to `entrank info`'s figure for this rank's stage.
            size_t peak = 0;
            t->be->memory_stats(NULL, &peak);
            MemoryEstimate e = estimate_memory(cfg, t->comm->dp, t->comm->pp, t->comm->stage);
            runlog(log, "memory: backend allocation peak %.2f MiB after the first step; estimated %.2f MiB (stage %d, fp32, "
                   "recompute %s): %+.2f%%\n", peak / 1048576.0, e.peak_bytes / 1048576.0, t->comm->stage,
                   recompute_name(cfg->recompute), 100.0 * ((double)peak - e.peak_bytes) / e.peak_bytes);
        }
        // The first steps pay for page faults and thread start-up: keep them out of the ETA.
        if (step >= 2) { steps_time += dt; timed_steps++; }
        int last = step == t->total_steps - 1;
        if (log) {
            double tok_s = tokens_per_step / dt;
            double mfu = peak_gflops > 0 ? tok_s * t->flops_per_token / (peak_gflops * 1e9 * t->comm->world_size) : NAN;
            if (r.skipped)
                runlog(log, "step %ld: non-finite loss or gradient (loss %g, grad norm %g): update skipped (%d in a row)\n",
                       step, r.loss, r.grad_norm, r.bad_in_row);
            DataSampleInfo at;
            int files = data_locate(t->train_data, (uint64_t)step, 0, &at) == 0;
            double row[NUM_STEP_METRICS] = {
                [METRIC_EPOCH] = files ? (double)at.epoch : NAN, [METRIC_POSITION] = files ? (double)at.position : NAN,
                [METRIC_STEP] = (double)step, [METRIC_TOKENS] = (step + 1) * tokens_per_step, [METRIC_LOSS] = r.loss,
                [METRIC_LM_LOSS] = r.lm_loss, [METRIC_AUX_LOSS] = r.aux_loss, [METRIC_LR] = r.lr,
                [METRIC_GRAD_NORM] = r.grad_norm, [METRIC_STEP_MS] = dt * 1e3, [METRIC_TOKENS_PER_S] = tok_s, [METRIC_MFU] = mfu};
            for (int i = 0; i < NUM_STEP_METRICS; i++) metrics_append(mf, STEP_METRIC_ROWS[i].name, &row[i]);
            if (r.traced) record_trace(mf, t, step);
            const R3si *q = model_hook_state(&t->model, &BLOCK_HOOK_R3SI);
            if (q) {
                record_r3si(mf, q, step, r.lsd, r.monitored);
                if (r.monitored) {
                    char line[1024];
                    int len = snprintf(line, sizeof line, "r3si monitor step %ld | tau %.1f | rho %.4g | rank/alpha:", step, q->tau, q->rho);
                    for (int c = 0; c < q->n_ckpt && len < (int)sizeof line; c++)
                        len += snprintf(line + len, sizeof line - (size_t)len, " L%d %.1f/%.3f", q->layers[c], q->rank[c], q->alpha[c]);
                    runlog(log, "%s\n", line);
                }
            }
            if (step % cfg->log_every == 0 || last || r.stop) {
                char eta[32];
                double mean = timed_steps > 0 ? steps_time / timed_steps : dt;
                format_duration(mean * (double)(t->total_steps - step - 1), eta, sizeof eta);
                char where[64] = "";
                if (files) snprintf(where, sizeof where, " | epoch %llu pos %llu", (unsigned long long)at.epoch, (unsigned long long)at.position);
                // A device without a known peak has no MFU: say so rather than print "nan%".
                char mfu_text[16] = "n/a";
                if (isfinite(mfu)) snprintf(mfu_text, sizeof mfu_text, "%.1f%%", 100 * mfu);
                runlog(log, "step %6ld/%ld | loss %.6f | lr %.3e | norm %.4f | %.1f ms | %.0f tok/s | MFU %s | ETA %s%s\n",
                       step, t->total_steps, r.loss, r.lr, r.grad_norm, dt * 1e3, tok_s, mfu_text, eta, where);
                metrics_flush(mf);
            }
        }
        if (r.stop) {   // every rank sees the same StepResult, so all leave together
            if (log) runlog(log, "stopping: %d non-finite steps in a row (train.max_bad_steps = %d)\n", r.bad_in_row, cfg->max_bad_steps);
            exit_code = EXIT_FAILURE_OTHER;
            break;
        }
        if ((cfg->eval_every > 0 && (step + 1) % cfg->eval_every == 0) || last) {
            EvalResult ev;
            if (trainer_evaluate(t, &ev, NULL, &err)) die(EXIT_BAD_INPUT, "%s", err.msg);
            if (log) report_eval(log, mf, t, step, &ev);
        }
        if (((cfg->checkpoint_every > 0 && (step + 1) % cfg->checkpoint_every == 0) || last) &&
            save_checkpoint(t, setup, log, mf, step + 1, &err))
            return checkpoint_failed(t, &err);
    }
    if (log) {
        char total[32];
        format_duration(now_seconds() - run_start, total, sizeof total);
        runlog(log, "done in %s\n", total);
    }
    return exit_code;
}

// The run directory's lock: an exclusive advisory fcntl lock on RUN/lock, taken by rank 0 before
// it reads anything of the run and held (fd open) until the process ends, so that two trainings
// never share one directory. fcntl rather than flock: it also works over NFS. The file holds the
// holder's host and pid for the message of the run that is refused. Returns the fd, or -1 with err.
static int lock_run_dir(const char *run_dir, Error *err) {
    char path[CFG_PATH_LEN + 16];
    snprintf(path, sizeof path, "%s/lock", run_dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0664);
    if (fd < 0) return error_set(err, "%s: cannot open: %s", path, strerror(errno));
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    if (fcntl(fd, F_SETLK, &fl) != 0) {
        int e = errno;
        char holder[256] = "";
        ssize_t n = pread(fd, holder, sizeof holder - 1, 0);
        holder[n > 0 ? n : 0] = 0;
        holder[strcspn(holder, "\n")] = 0;
        close(fd);
        if (e != EACCES && e != EAGAIN) return error_set(err, "%s: cannot lock: %s", path, strerror(e));
        return error_set(err, "%s: the run directory is in use by another training (%s); wait for it to end or choose another --run-dir",
                         path, holder[0] ? holder : "holder unknown");
    }
    char host[128] = "?", line[256];
    gethostname(host, sizeof host - 1);
    int len = snprintf(line, sizeof line, "host %s, pid %ld\n", host, (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, line, (size_t)len, 0) != len) {
        int e = errno;
        close(fd);
        return error_set(err, "%s: cannot write: %s", path, strerror(e));
    }
    return fd;
}

int train_command(Config *cfg, const RunDevice *dev, Comm *comm, const char *run_dir, ResumeMode resume,
                  const char *resume_path, const char *init_from) {
    Error err = {{0}};
    char path[CFG_PATH_LEN + 64], checkpoint[CFG_PATH_LEN + 64] = "";
    int is_root = comm->world_rank == 0;
    int failed = 0, lock_fd = -1;
    // The lock comes before anything of the run is read: an existing directory is locked now, a
    // new one right after rank 0 creates it (below), before anything is written into it.
    struct stat dir_st;
    int dir_exists = stat(run_dir, &dir_st) == 0;
    if (is_root && dir_exists && !S_ISDIR(dir_st.st_mode)) failed = error_set(&err, "%s: --run-dir is not a directory", run_dir);
    else if (is_root && dir_exists) failed = (lock_fd = lock_run_dir(run_dir, &err)) < 0;
    if (commands_any_failed(comm, failed, &err)) return EXIT_BAD_INPUT;
    // train.device was settled by main (an unusable "cuda" never gets here). Whether to resume,
    // start or refuse is run_dir.c's one rule; rank 0's verdict decides for every rank.
    RunDirPlan plan;
    failed = run_dir_plan(run_dir, resume, resume_path, &plan, &err) != 0 && is_root;
    if (commands_any_failed(comm, failed, &err)) { if (lock_fd >= 0) close(lock_fd); return EXIT_BAD_INPUT; }
    snprintf(checkpoint, sizeof checkpoint, "%s", plan.checkpoint);
    snprintf(path, sizeof path, "%s/metrics.h5", run_dir);
    int have_metrics = plan.have_metrics;
    // main's validate_run has checked the config, topology and data. The trainer and the
    // checkpoint to resume from can still refuse their input: the run directory is created only
    // after them, so that a refused run leaves nothing behind.
    Trainer t;
    failed = trainer_init(&t, cfg, dev->be, comm, &err) != 0;
    if (commands_any_failed(comm, failed, &err)) { if (lock_fd >= 0) close(lock_fd); return EXIT_BAD_INPUT; }
    CheckpointProgress progress = {0, 0};
    double load_seconds = 0;
    RunResume resumed = {.step = -1};
    if (checkpoint[0]) {
        double t0 = now_seconds();
        CheckpointTarget target = trainer_checkpoint_target(&t);
        failed = checkpoint_load(&target, checkpoint, 1, &progress, &err) != 0;
        load_seconds = now_seconds() - t0;
        if (commands_any_failed(comm, failed, &err)) { trainer_free(&t); if (lock_fd >= 0) close(lock_fd); return EXIT_BAD_INPUT; }
        run_history_resume(cfg, checkpoint, progress.step, &resumed);   // what changed; train.extend's tail
    } else if (init_from) {
        // Parameters only: the optimizer starts fresh at step 0 and the data from its first batch.
        // A run that already has a checkpoint resumes from it instead (the branch above): the
        // initialisation happened when that run started.
        CheckpointTarget target = trainer_checkpoint_target(&t);
        CheckpointProgress ignored;
        failed = checkpoint_load(&target, init_from, 0, &ignored, &err) != 0;
        if (commands_any_failed(comm, failed, &err)) { trainer_free(&t); if (lock_fd >= 0) close(lock_fd); return EXIT_BAD_INPUT; }
    }
    if (is_root) {
        failed = mkdir_p(run_dir, &err) != 0;
        if (!failed && lock_fd < 0) {
            failed = (lock_fd = lock_run_dir(run_dir, &err)) < 0;
            // Another training may have created the directory and started writing since we looked.
            if (!failed && access(path, F_OK) == 0 && !have_metrics)
                failed = error_set(&err, "%s: appeared while this run was starting (another training?); choose a new --run-dir", path);
        }
    }
    if (commands_any_failed(comm, failed, &err)) {
        trainer_free(&t);
        if (lock_fd >= 0) close(lock_fd);
        return EXIT_BAD_INPUT;
    }
    char *config_text = config_to_string(cfg);
    LoopSetup setup = {run_dir, config_text, progress.step, dev};
    if (!is_root) {
        int code = train_loop(&t, cfg, NULL, NULL, &setup);
        trainer_free(&t);
        free(config_text);
        run_history_free(&resumed);
        return code;
    }

    char *history = run_history_save(run_dir, cfg, &resumed, &err);   // config.cfg, the previous one kept
    if (!history) die(EXIT_FAILURE_OTHER, "%s", err.msg);
    RunLog log = {0};
    snprintf(path, sizeof path, "%s/log.txt", run_dir);
    log.file = fopen(path, "a");
    static char log_path[CFG_PATH_LEN + 64];
    snprintf(log_path, sizeof log_path, "%s", path);
    log.path = log_path;
    if (!log.file) die(EXIT_FAILURE_OTHER, "%s: cannot write: %s", path, strerror(errno));
    if (dev->notice[0]) runlog(&log, "%s\n", dev->notice);
    MetricsRunInfo info = {.config_text = config_text, .revision = ENTRANK_REVISION, .dp = comm->dp, .pp = comm->pp, .device = dev->kind};
    snprintf(path, sizeof path, "%s/metrics.h5", run_dir);
    MetricsFile *mf;
    long dropped_rows = plan.drop_metrics ? run_dir_metrics_rows(path) : -1;   // counted before metrics_create replaces it
    if (have_metrics && checkpoint[0]) {
        // Rows written after the checkpoint belong to steps that run again now.
        if (metrics_rewind_all(path, (double)progress.step, &err) || metrics_set_run_info(path, &info, &err))
            die(EXIT_FAILURE_OTHER, "%s", err.msg);
        mf = metrics_open_append(path, &err);
    } else {
        mf = metrics_create(path, &info, &err);
    }
    if (!mf) die(EXIT_FAILURE_OTHER, "%s", err.msg);
    declare_metrics(mf, data_n_buckets(t.val_data));
    const R3si *r3si = model_hook_state(&t.model, &BLOCK_HOOK_R3SI);
    if (r3si) declare_r3si_metrics(mf, r3si);
    if (cfg->trace_every > 0) declare_trace_metrics(mf, &t);
    if (dropped_rows >= 0)
        runlog(&log, "%s: no checkpoint from the earlier start: starting at step 0, its %ld step rows dropped\n", path, dropped_rows);
    else if (plan.drop_metrics)
        runlog(&log, "%s: no checkpoint from the earlier start: starting at step 0, the unreadable file replaced\n", path);
    if (checkpoint[0]) runlog(&log, "loaded %s (step %ld) in %.2f s\n%s", checkpoint, progress.step, load_seconds, history);
    else if (init_from) runlog(&log, "initialised from %s (parameters only; fresh optimizer, step 0)\n", init_from);

    int code = train_loop(&t, cfg, &log, mf, &setup);
    runlog(&log, "metrics in %s/metrics.h5\n", run_dir);
    metrics_close(mf);
    fclose(log.file);
    close(lock_fd);   // the lock ends with the run
    free(config_text);
    free(history);
    run_history_free(&resumed);
    trainer_free(&t);
    return code;
}

