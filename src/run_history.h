// run_history.h: what a resume changes, said and kept.
//
// A run resumed with another config (`--resume auto --set train.steps=75` on a finished 60-step
// run) used to change its learning rate silently and overwrite config.cfg. Here:
//   - run_history_resume (every rank, after the checkpoint is loaded) compares the checkpoint's
//     resolved config with this run's, lists the keys that differ, the LR of the resume step under
//     both schedules, and resolves train.extend: when the schedule changed and train.extend is
//     "constant" or "rewarm", the tail starts at the resume step from the LR the previous schedule
//     had reached (train.extend_step / train.extend_lr, written into cfg, so the resolved config,
//     config.cfg and later checkpoints carry it and a later resume follows the same tail). An
//     unchanged schedule inherits the checkpoint's tail: a requeued run stays bitwise identical.
//   - run_history_save (rank 0) writes RUN/config.cfg; a previous config.cfg whose text differs is
//     kept first as RUN/config.N.cfg, N = 1, 2, ... in the order of the resumes that changed it.
#pragma once
#include "common.h"
#include "config.h"

typedef struct {
    long step;            // the resume step; -1: not a resume (a fresh run)
    int readable;         // the checkpoint's config could be read and loaded (else `why`)
    char why[256];
    char *changes;        // malloc'd "  key: old -> new\n" lines (NULL: none)
    int schedule_changed; // the LR schedule differs from the checkpoint's
    double lr_old, lr_new;   // LR of the resume step under the checkpoint's and under this schedule
} RunResume;

// Compares checkpoint's config with cfg and resolves cfg's train.extend_step / extend_lr (see
// above). Not collective; every rank calls it with the same input and reaches the same result.
// Returns 0; the checkpoint's config being unreadable is reported, not an error (the load has
// already checked what matters for the state).
int run_history_resume(Config *cfg, const char *checkpoint, long step, RunResume *out);

// Rank 0: writes run_dir/config.cfg, keeping a different previous one as config.N.cfg. Returns
// the log lines that say what changed (malloc'd; "" for a fresh run or an unchanged resume), or
// NULL with err naming the file.
char *run_history_save(const char *run_dir, const Config *cfg, const RunResume *resume, Error *err);

void run_history_free(RunResume *r);
