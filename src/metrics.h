// metrics.h: the run's metrics.h5 (DESIGN section 7).
//
// Datasets grow along their first axis (chunked, H5S_UNLIMITED), each carries the attributes
// `description` and `units`. Rows are buffered in memory and written by metrics_flush(), which
// opens the file, appends and closes it again: between flushes the file is closed and complete,
// so h5py can read it while the run goes on, and a crash loses at most the rows since the last flush.
#pragma once
#include <stddef.h>
#include "common.h"

typedef struct MetricsFile MetricsFile;

typedef struct {
    const char *config_text;   // resolved config
    const char *revision;      // git revision of the binary
    int dp, pp;
    const char *device;        // "cpu" | "cuda"
} MetricsRunInfo;

// Creates (truncates) `path` with the root attributes of `info`. Returns NULL with err set on failure.
MetricsFile *metrics_create(const char *path, const MetricsRunInfo *info, Error *err);

// Declares a dataset before its first row: `name` is a path like "/steps/loss"; a row has
// shape row_dims[0..row_rank) (row_rank = 0 for a scalar per step). Declaring the same name
// twice is a programming error.
void metrics_declare(MetricsFile *mf, const char *name, int row_rank, const size_t *row_dims,
                     const char *description, const char *units);

// Queues one row (prod(row_dims) doubles, stored as float64) for `name`.
void metrics_append(MetricsFile *mf, const char *name, const double *row);

// Writes every queued row to disk (open, extend, write, close).
void metrics_flush(MetricsFile *mf);

// Flushes and frees.
void metrics_close(MetricsFile *mf);
