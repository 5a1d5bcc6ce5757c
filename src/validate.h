// validate.h: every check of a run's input in one place, before anything is written (DESIGN
// section 2: bad input exits 2 with one `entrank:` line). `train`, `eval` and `info` call
// validate_run right after config_load: config_load checks each key and the relations between
// keys; validate_run checks what needs the model shape, the topology or the data, which used to
// be found deep inside trainer_init, r3si_init, trainer_step or the model's forward pass, after
// the run directory and metrics.h5 had been created.
#pragma once
#include "common.h"
#include "config.h"

// Fixed capacities of the implementation, which inputs must not exceed. The code that relies on
// each one should use the constant instead of the bare number.
#define ENTRANK_MAX_MICRO_BATCHES 4096           // micro-batches per step on one rank (train.c: the 1F1B action list of trainer_step)
#define ENTRANK_MAX_ADR_HEADS 64                 // heads under reg.adr_coef > 0 (model.c: head_map_cosines' NH x NH Gram on the stack)
#define ENTRANK_MAX_STOCHASTIC_DEPTH_BATCH 4096  // micro_batch_size under stochastic depth (model.c: branch_gains' per-sequence gains)
#define ENTRANK_MAX_LAYERS 1024                  // block indices (model.h: ModelShape.r3si_is_checkpoint)
#define ENTRANK_MAX_R3SI_LAYERS CFG_MAX_LIST     // r3si.layers entries (r3si.h: R3si's per-checkpoint arrays)

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
