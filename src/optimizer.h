// optimizer.h: learning-rate schedule, gradient norm and AdamW over a range of a model's arena.
//
// The range is the whole arena normally, and one dp replica's shard of it under ZeRO-1, where
// each replica keeps AdamW state for, and updates, only its shard.
#pragma once
#include "model.h"

// Linear warmup from lr/warmup to lr over `warmup_steps`, then cosine decay to min_lr at
// `total_steps` (llm.c / GPT-3 schedule). step is 0-based. From train.extend_step on (a resumed
// run extended under train.extend) the tail of optimizer.c's lr_tail instead.
double lr_at_step(const Config *cfg, long step, long total_steps);

typedef struct {
    size_t begin, numel;   // the arena range this state covers
    void *m;               // (numel) first moment
    void *v;               // (numel) second moment
    long t;                // updates applied so far (bias correction)
} AdamState;

void adam_init(AdamState *st, const Model *model, size_t begin, size_t numel);
void adam_free(AdamState *st, const Model *model);

// Sum of squares of the gradients of the arena range [begin, begin + numel), given in `grads`
// (grads[0] is arena element `begin`). The last stage's copy of a tied wte is skipped so that a
// tensor is counted once over the pipeline; alignment padding holds zeros.
double grad_sum_squares(const Model *model, const void *grads, size_t begin, size_t numel);

// One AdamW step on the state's range, gradients (laid out as in grad_sum_squares) multiplied by
// grad_scale first (clipping folded in). Weight decay on matrices only.
void adam_step(AdamState *st, Model *model, const Config *cfg, double lr, double grad_scale, const void *grads);
