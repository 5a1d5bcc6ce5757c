// info.h: `entrank info`: sizes, FLOPs, memory and pipeline bubble of a config, without training.
#pragma once
#include <stdio.h>
#include "config.h"

// dp, pp: topology to report per-rank memory for (pp 0 = parallel.pp of the config, dp 0 = 1).
// Returns the bytes the busiest rank needs on a GPU (the memory gate's figure), or -1 when the
// topology cannot run the config (the reason is printed).
double print_info(const Config *cfg, int dp, int pp, FILE *out);

// `entrank info --data`: opens the train and validation sources (headers only, as data_open does)
// and prints per source its tokens, windows per epoch, samples and epochs in the run and the
// expected repetition of a window. Bad data: -1 with err set (the message data_open gives).
int print_data_info(const Config *cfg, FILE *out, Error *err);

// `entrank info --dump-order FIRST:LAST`: one line per sequence of the global batches of steps
// first..last: step, index, global sample, source, epoch, position, window, file, token offset.
// The same on every topology and after any resume: this is the order training reads.
int print_data_order(const Config *cfg, long first, long last, FILE *out, Error *err);
