// optimizer.h: learning-rate schedule, global-norm clipping and AdamW over a model's parameters.
#pragma once
#include "model.h"

// Linear warmup from lr/warmup to lr over `warmup_steps`, then cosine decay to min_lr at
// `total_steps` (llm.c / GPT-3 schedule). step is 0-based.
double lr_at_step(const Config *cfg, long step, long total_steps);

typedef struct {
    void *m;      // (num_params) first moment, fp32 on the CPU
    void *v;      // (num_params) second moment
    long t;       // updates applied so far (bias correction)
} AdamState;

void adam_init(AdamState *st, const Model *model);
void adam_free(AdamState *st, const Model *model);

// sum of squares of all gradients held by this stage (the tied wte copy on the last stage of a
// pipeline is excluded so a tensor is counted once).
double grad_sum_squares(const Model *model);

// One AdamW step with the gradients multiplied by grad_scale (clipping and any loss scaling folded
// in). Weight decay on matrices only.
void adam_step(AdamState *st, Model *model, const Config *cfg, double lr, double grad_scale);
