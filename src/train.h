// train.h: the training loop of one process (DESIGN sections 2, 7, 11).
#pragma once
#include <stdint.h>
#include <stdio.h>
#include "backend.h"
#include "config.h"
#include "data/data.h"
#include "metrics.h"
#include "model.h"
#include "optimizer.h"

typedef struct {
    double loss;          // mean loss over the scored positions of the global batch
    double grad_norm;     // global gradient norm before clipping
    double lr;
    int skipped;          // non-finite loss or gradient: no update was applied
    int bad_in_row;       // consecutive skipped steps, this one included
    int stop;             // bad_in_row reached train.max_bad_steps: the run must end
} StepResult;

typedef struct {
    double loss;                              // mean over scored positions
    double ppl;
    long scored;                              // positions that carried a target
    int n_buckets;
    long correct[DATA_MAX_BUCKETS];           // argmax == target at bucketed positions
    long total[DATA_MAX_BUCKETS];
} EvalResult;

typedef struct {
    const Config *cfg;
    const Backend *be;
    Model model;
    Activations acts;
    AdamState adam;
    DataSource *train_data;
    DataSource *val_data;
    long total_steps;
    int micro_batches;                 // per step on this rank
    int micro_batch_size;
    // host staging for every micro-batch of one step: (micro_batches, micro_batch_size, T)
    int32_t *host_tokens, *host_targets, *host_buckets, *host_predictions;
    int32_t *device_predictions;       // (micro_batch_size, T)
    double flops_per_token;
    int bad_in_row;
} Trainer;

// Sets up model, optimizer and data for cfg. Returns -1 with err on bad input (exit 2).
int trainer_init(Trainer *t, const Config *cfg, const Backend *be, Error *err);
void trainer_free(Trainer *t);

// One optimizer step on the global batch of `step` (0-based). A non-finite loss or gradient skips
// the update and counts; out->stop is set after train.max_bad_steps of them in a row.
// Returns -1 with err on bad data.
int trainer_step(Trainer *t, long step, StepResult *out, Error *err);

// Validation loss, perplexity and per-bucket accuracy over cfg->eval_batches batches.
int trainer_evaluate(Trainer *t, EvalResult *out, Error *err);

// Number of optimizer steps of the run: train.steps, or train.tokens / tokens per step rounded up.
long total_steps_of(const Config *cfg);

// The full `train` command: run directory, log, metrics, periodic evaluation. Returns the exit code.
int train_command(const Config *cfg, const char *config_path, const char *run_dir, int resume_never);
