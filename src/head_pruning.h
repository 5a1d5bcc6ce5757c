// head_pruning.h: post-hoc head pruning, the SGA post's baseline (`entrank eval --prune-heads F`).
#pragma once
#include "train.h"

// Prints evaluation results of `t` with a prefix (rank 0).
void print_eval(const Trainer *t, const Config *cfg, const char *what, const EvalResult *ev);

// Evaluates once to gather, per head, the variance over validation sequences of its mean row
// entropy, prints the result, and masks the `fraction` of heads with the lowest variance in t's
// model (collectively; every rank picks the same heads). Returns -1 with err on bad data.
int prune_heads(Trainer *t, const Config *cfg, double fraction, Error *err);
