// eval_checkpoint.h: what `eval` (and `generate`) accept as --checkpoint: a checkpoint file, the
// RUN/checkpoints/latest pointer, or a run directory (its latest checkpoint).
#pragma once
#include <stddef.h>
#include "common.h"

// Resolves `given` to a checkpoint file in out (n bytes) without MPI or HDF5, so a wrong path is
// one line (exit 2) and never the MPI-IO library's errors. Returns -1 with err naming the path and
// the three accepted forms.
int eval_resolve_checkpoint(const char *given, char *out, size_t n, Error *err);

// The run directory a checkpoint belongs to (RUN for RUN/checkpoints/step_N.h5) into out, when
// RUN/metrics.h5 exists. Returns 1 if found, else 0.
int eval_run_dir_of(const char *checkpoint, char *out, size_t n);
