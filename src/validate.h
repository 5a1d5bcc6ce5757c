// validate.h: every check of a run's input in one place, before anything is written (docs/faults.md:
// bad input exits 2 with one `entrank:` line). `train`, `eval` and `info` call
// validate_run right after config_load: config_load checks each key and the relations between
// keys; validate_run checks what needs the model shape, the topology or the data, which used to
// be found deep inside trainer_init, r3si_init, trainer_step or the model's forward pass, after
// the run directory and metrics.h5 had been created.
#pragma once
#include "common.h"
#include "config.h"

// Limits of the implementation that inputs must not exceed; the code that relies on each one
// names the same constant.
// A step of more than this many micro-batches per rank: train.micro_batch_size is almost surely
// set far too small (every micro-batch pays a full pass's fixed costs).
#define ENTRANK_MAX_MICRO_BATCHES 4096
// (attn_core.h) ATTN_ADR_MAX_HEADS: heads under reg.adr_coef > 0.
// (block_hook.h) STOCHASTIC_DEPTH_MAX_SEQUENCES: train.batch_size under stochastic depth.
// (config.h) CFG_MAX_LIST: r3si.layers entries.

// What validate_run may assume and touch.
typedef struct {
    // Ranks of the run. > 0: the topology checks (world divisible by parallel.pp, batch cut into
    // micro-batches over dp, micro-batches per step) run for it. <= 0: the topology is not known
    // (`info` without --dp / --pp) and those checks are skipped.
    int world_size;
    // 1: open the train and val data (file headers and sizes, globs, held-out split) and check
    // every token id against model.vocab_size. 0: no data file is touched (`info` describes runs
    // for machines that hold the data); synthetic tasks, which need no file, are still checked.
    int read_files;
    // The token pass is shared: this caller checks slice scan_part of scan_parts of each split
    // (0 and 1: all of it). Every other check is done whole by every caller.
    int scan_part, scan_parts;
} ValidateScope;

// Checks cfg (already loaded by config_load) against the model shape, the topology and the data.
// Returns 0, or -1 with err->msg one line naming the key (or the file and byte offset) and the
// reason. Writes nothing; allocates nothing that outlives the call.
int validate_run(const Config *cfg, const ValidateScope *scope, Error *err);
