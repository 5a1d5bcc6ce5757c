// checkpoint.h: parallel-HDF5 checkpoints (docs/checkpoint-format.md).
//
// checkpoints/step_NNNNNNNN.h5 (NNNNNNNN = optimizer steps completed) is written collectively by
// all ranks through MPI-IO. Every tensor is stored with its full logical shape, per-layer tensors
// stacked over layers: /params/NAME, /adam_m/NAME, /adam_v/NAME (fp32). Each rank writes the
// hyperslab it owns (its stage's layers; its ZeRO-1 shard of the AdamW state), so any dp x pp
// topology can read any checkpoint. Root attributes hold the step, tokens seen, the AdamW step
// count, the data cursor, the seed, the model shape, the resolved config and the writing topology.
//
// The file is written as step_N.h5.tmp, closed (which flushes), fsynced, renamed, and only then is
// checkpoints/latest replaced (write, fsync, rename): a run killed at any moment leaves `latest`
// naming a complete checkpoint.
#pragma once
#include "comm.h"
#include "config.h"
#include "model.h"
#include "optimizer.h"

// What a checkpoint holds of a rank: its stage's parameters, its AdamW state (the whole arena or
// its ZeRO-1 shard) and the bad-step count; `cfg` gives the seed, parallel.zero and checkpoint.keep.
typedef struct {
    Model *model;
    AdamState *adam;
    Comm *comm;
    const Config *cfg;
    int *bad_in_row;
} CheckpointTarget;

typedef struct {
    long step;            // optimizer steps completed; the run continues with this step index
    double tokens;        // tokens consumed
} CheckpointProgress;

// Collective. Writes the checkpoint of `t` after `progress.step` steps into run_dir/checkpoints and
// then deletes all but the newest `checkpoint.keep` complete ones. Every dataset carries a
// "checksum" attribute (uint64): the sum mod 2^64 over its elements of a mix of (flat index,
// value bits), the same whatever topology wrote it. A failed write (a full disk) returns -1 on
// every rank with err naming the file, after removing the .tmp: `latest` still names the previous
// complete checkpoint. Failures are I/O failures (exit 1).
int checkpoint_save(const CheckpointTarget *t, const char *run_dir, CheckpointProgress progress, const char *config_text,
                    Error *err);

// Collective. Loads parameters (and, if with_optimizer, AdamW state, step count and bad-step
// count) from `path` into `t`, whatever topology wrote it. Returns -1 with err naming the file and
// the dataset or key on a missing, truncated, corrupt or incompatible checkpoint; nothing is changed
// on disk. Checked: the file is a regular file; format_version; the model shape; step, tokens,
// adam_t and bad_in_row are integers >= 0 (adam_t, bad_in_row <= step); every dataset read has
// the element type float32 (the R3SI vectors float64), its logical shape, its checksum (version 2),
// and finite values (adam_v also >= 0).
int checkpoint_load(const CheckpointTarget *t, const char *path, int with_optimizer, CheckpointProgress *progress, Error *err);

// The checkpoint named by run_dir/checkpoints/latest, if any: returns 1 and fills path.
int checkpoint_latest(const char *run_dir, char *path, size_t n);

// The resolved config text a checkpoint was written with (its `config` attribute), malloc'd; NULL
// with err naming the file when it cannot be read. Not collective.
char *checkpoint_read_config(const char *path, Error *err);
