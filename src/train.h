// train.h: the training step of one rank: its pipeline stage, its dp slice of the global batch,
// the 1F1B schedule, data-parallel reduction and the optimizer (docs/design.md sections 6-7, docs/faults.md).
#pragma once
#include <stdint.h>
#include <stdio.h>
#include "backend.h"
#include "checkpoint.h"
#include "comm.h"
#include "config.h"
#include "data/data.h"
#include "model.h"
#include "optimizer.h"
#include "schedule.h"
#include "trace.h"

typedef struct {
    double loss;          // total loss: lm_loss + aux_loss
    double lm_loss;       // mean cross-entropy over the scored positions of the global batch
    double aux_loss;      // auxiliary losses (entropy regularisation, L_SD)
    double lsd;           // R3SI's L_SD
    int monitored;        // R3SI's monitor ran at this step
    double temperature;   // temp(t) of the temperature schedule (1 when off)
    int traced;           // t->trace holds this step's per-layer traces
    double grad_norm;     // global gradient L2 norm before clipping
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

// Message tags of the pipeline's point-to-point hand-over (training, evaluation, generation).
enum { TAG_ACTIVATION = 1, TAG_GRADIENT = 2 };

#define MAX_GRAD_BUCKETS 4096

typedef struct {
    const Config *cfg;
    const Backend *be;
    Comm *comm;
    Model model;                       // this rank's stage
    int n_slots;                       // micro-batches alive at once on this stage (1F1B)
    Activations *slots;                // (n_slots)
    CommHandle *act_sends, *grad_sends;// (n_slots) pipeline sends in flight, per slot
    AdamState adam;                    // the whole arena, or this replica's ZeRO-1 shard
    void *shard_grads;                 // ZeRO-1: this replica's shard of the reduced gradients
    CommHandle grad_buckets[MAX_GRAD_BUCKETS];   // dp reductions in flight
    int n_grad_buckets;
    int reduce_in_backward;            // start dp reductions from the backward pass (not ZeRO-1)
    DataSource *train_data;
    DataSource *val_data;
    long total_steps;
    int micro_batches;                 // per step on this rank
    int micro_batch_size;
    int sequences_per_rank;            // micro_batches x micro_batch_size
    // host staging for this rank's sequences of one step: (micro_batches, micro_batch_size, T)
    int32_t *host_tokens, *host_targets, *host_buckets, *host_predictions;
    int32_t *device_predictions;       // (micro_batch_size, T)
    double flops_per_token;
    int bad_in_row;
    Action *actions;                   // (2 micro_batches) this stage's 1F1B schedule
    double attn_temperature;           // logit temperature of the last training step (evaluation keeps it)
    TraceRecord trace;                 // per-layer traces of the last trace step (trace.every)
    int trace_step;
} Trainer;

// Checks that the topology fits the config (before any work): world divisible by pp, pp <= layers,
// micro-batches >= pp, batch divisible. Returns -1 with err naming the key.
int check_topology(const Config *cfg, int world_size, Error *err);

// Sets up this rank's stage, optimizer and data. Returns -1 with err on bad input (exit 2).
int trainer_init(Trainer *t, const Config *cfg, const Backend *be, Comm *comm, Error *err);
// The device state of the rank at (stage of pp, dp_index of dp): the model, the activation slots,
// AdamW and the trainer's buffers; allocations only (no upload, no op), so that estimate_memory
// can run it on a counting backend. trainer_init calls it; trainer_free_state frees what it made.
void trainer_alloc_state(Trainer *t, const Config *cfg, const Backend *be, int stage, int pp, int dp, int dp_index);
void trainer_free_state(Trainer *t);
// Elements of the largest message of the start-up Comm warm-up (comm->warm_up), whose NCCL form
// holds twice that in a temporary device buffer.
size_t trainer_warm_up_numel(const Trainer *t);
void trainer_free(Trainer *t);

// One optimizer step on the global batch of `step` (0-based), collectively over all ranks. A
// non-finite loss or gradient skips the update and counts; out->stop is set after
// train.max_bad_steps of them in a row. Every rank returns the same StepResult.
// Returns -1 with err on bad data.
int trainer_step(Trainer *t, long step, StepResult *out, Error *err);

// Per (layer, head): sum and sum of squares over validation sequences of the head's mean row
// entropy, for head pruning. Arrays (n_layer x n_head), summed over all ranks.
typedef struct {
    double *sum, *sum_sq;
    double sequences;
} HeadEntropyStats;

// Validation loss, perplexity and per-bucket accuracy over cfg->eval_batches batches,
// collectively. If stats is not NULL it also gathers the heads' entropy statistics.
int trainer_evaluate(Trainer *t, EvalResult *out, HeadEntropyStats *stats, Error *err);

// temp(t) = base (1 + beta tanh(gamma (t - t_switch))) of the temperature schedule; 1 when off.
double temperature_at(const Config *cfg, long step);

// The temperature that divides attention logits at a step: temp(step) when temperature.mode is
// "attention", else 1 ("loss" scales the objective, not the logits).
double attention_temperature_at(const Config *cfg, long step);

// What evaluation, generation and task scoring use after steps_done training steps: the last
// trained step's attention temperature, the one the weights were fitted under.
double attention_temperature_after(const Config *cfg, long steps_done);

// Number of optimizer steps of the run: train.steps, or train.tokens / tokens per step rounded up.
long total_steps_of(const Config *cfg);

// The rank's part of a checkpoint: its model, AdamW state and bad-step count.
CheckpointTarget trainer_checkpoint_target(Trainer *t);
