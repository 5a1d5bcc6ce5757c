// metrics.h: the run's metrics.h5 (docs/metrics-schema.md).
//
// Datasets grow along their first axis (chunked, H5S_UNLIMITED), each carries the attributes
// `description` and `units`. Rows are buffered in memory and written by metrics_flush(), which
// opens the file, appends and closes it again: between flushes the file is closed and complete,
// so h5py can read it while the run goes on, and a crash loses at most the rows since the last flush.
//
// Readers: the project uses one locking mode everywhere, HDF5's default: locking on (best effort
// where the file system has no flock; HDF5_USE_FILE_LOCKING, when set, overrides it for every open
// of a process alike). analysis/entrank_metrics.py opens files with h5py's defaults, so a plain
// h5py.File and its RunData agree within one process (HDF5 refuses to open one file twice in a
// process with different locking flags). HDF5 1.10 locks a file while it is open (flock: exclusive
// for the writer, shared for readers), so a reader can open metrics.h5 only between flushes, and a reader that keeps it open
// makes the next flush wait: metrics_flush() retries briefly, then keeps the rows queued for the
// following flush (with a warning) instead of stopping the run; metrics_close() waits up to 10 s,
// then warns and drops the rows (it also runs on the requeue path, whose exit code must survive).
// A crash in the middle of a flush can leave the file damaged.
//
// Only one process (rank 0) writes the file, through HDF5's default serial (sec2) driver.
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

// Rewrites the root attributes of an existing metrics file (config, config_json, revision,
// device, dp, pp; `created` stays) with those of the run that resumes it: the file then describes
// the run as it continues (a resume may change train.steps or the topology). Call on the closed
// file, before metrics_open_append. Returns -1 with err set on failure.
int metrics_set_run_info(const char *path, const MetricsRunInfo *info, Error *err);

// Reopens an existing metrics file (a resumed run) to append to it. Its datasets continue after
// their current length once declared again. Returns NULL with err set on failure.
MetricsFile *metrics_open_append(const char *path, Error *err);

// Declares a dataset before its first row: `name` is a path like "/steps/loss"; a row has
// shape row_dims[0..row_rank) (row_rank = 0 for a scalar per step). Declaring the same name
// twice is a programming error. The dataset (and its groups) is created at the next flush.
// In a reopened file, a dataset that already exists must have the same row shape: a mismatch
// is bad input (a resumed run with a different model shape) and exits with EXIT_BAD_INPUT.
void metrics_declare(MetricsFile *mf, const char *name, int row_rank, const size_t *row_dims,
                     const char *description, const char *units);

// metrics_declare that reports a row-shape mismatch with an existing dataset through `err`
// (returns -1) instead of exiting. Programming errors (bad name, duplicate) still die.
int metrics_try_declare(MetricsFile *mf, const char *name, int row_rank, const size_t *row_dims,
                        const char *description, const char *units, Error *err);

// Names axis `axis` of dataset `name` (0 = the growing row axis, k >= 1 = row_dims[k-1]) and,
// when `values` is not NULL, stores them as the int attribute "axis<k>_<axis_name>" (n must equal
// row_dims[axis-1]; e.g. axis1_layer = [0..L-1]) and as the HDF5 dimension scale
// "<group>/<axis_name>" (int32, n values) attached to that axis: datasets of one group that name
// an axis alike share its scale, so one name means one set of values per group. The string
// attribute "axes" lists every axis name, comma-separated ("step,layer,head"); unnamed axes appear
// as "step" (axis 0) or "dim<k>"; named axes also carry it as their dimension label. Axis 0 of
// every dataset of a group that has a `step` dataset is attached to it (a dimension scale too).
// Written at the next flush.
void metrics_set_axis(MetricsFile *mf, const char *name, int axis, const char *axis_name,
                      const int *values, int n);

// How a dataset's values are stored. Rows are always handed over as doubles; HDF5 converts them.
// A group's step axis (a dataset named `step`: /steps/step, /trace/step, ...) is METRICS_I64 from
// its declaration on, every other dataset METRICS_F64 unless set otherwise; METRICS_F16 (IEEE half,
// which h5py reads as float16) is for bulky rows such as attention maps.
typedef enum { METRICS_F64, METRICS_I64, METRICS_F16 } MetricsStorage;

// Sets how `name` is stored when the file does not have it yet (a dataset already in a reopened
// file keeps its type: rows are converted to it). Call after metrics_declare, before its first flush.
void metrics_set_storage(MetricsFile *mf, const char *name, MetricsStorage storage);

// Queues one row (prod(row_dims) doubles, stored as the dataset's storage type) for `name`.
void metrics_append(MetricsFile *mf, const char *name, const double *row);

// Writes every queued row to disk (open, extend, write, close). With nothing queued and nothing
// declared since the last flush, it does not touch the file.
void metrics_flush(MetricsFile *mf);

// Rows queued in memory and not yet on disk, over all datasets.
size_t metrics_queued_rows(const MetricsFile *mf);

// Flushes and frees.
void metrics_close(MetricsFile *mf);

// For a resumed run: drops the rows of every dataset in `group` (e.g. "/steps") whose
// `group`/step value is >= first_dropped_step, so the series continues without duplicates after
// the checkpoint. Call on the closed file, before metrics_open_append.
int metrics_rewind(const char *path, const char *group, double first_dropped_step, Error *err);

// metrics_rewind of every top-level group that has a `step` dataset (/steps, /eval, /trace, /sga,
// /r3si, /snapshot, and any group added later): a resumed run recomputes all of their rows from
// the checkpoint's step on, so none may stay twice.
int metrics_rewind_all(const char *path, double first_dropped_step, Error *err);
