// run_dir.h: what `entrank train` does with the run directory it is given: the one rule that
// decides between starting, restarting and resuming, and refusing (docs/faults.md, "The run directory").
#pragma once
#include <stddef.h>
#include "cli.h"
#include "common.h"
#include "config.h"

typedef struct {
    char checkpoint[CFG_PATH_LEN + 64];   // the checkpoint to resume from, or "" to start at step 0
    int have_metrics;                      // RUN/metrics.h5 exists
    int drop_metrics;                      // start at step 0 over the metrics.h5 of a start that never checkpointed
} RunDirPlan;

// The rule, for a run directory that may or may not exist (nothing is written):
//   --resume PATH                  resume from PATH (metrics rows after its step are dropped);
//   a published checkpoint (`checkpoints/latest`):
//       auto  resumes from it;   never  refuses (exit 2): the directory holds a run;
//   complete checkpoints but no `latest`: refused in both modes (name one with --resume PATH);
//   no checkpoint at all (a new directory, or one left by a start that failed or was killed before
//   its first checkpoint): start at step 0 in both modes; a metrics.h5 found there is replaced,
//   and the log says how many of its rows were dropped.
// Returns 0, or -1 with err set (bad input: exit 2). Every rank may call it; rank 0 reports.
int run_dir_plan(const char *run_dir, ResumeMode resume, const char *resume_path, RunDirPlan *plan, Error *err);

// The number of /steps rows of an existing metrics.h5, or -1 if the file cannot be read (a start
// killed while creating it): for the log line that says what a restart drops.
long run_dir_metrics_rows(const char *path);
