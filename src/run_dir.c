// run_dir.c: the rule between a run directory and `entrank train` (see run_dir.h). It lives in
// one place so that the refusal that protects a run and the restart that keeps a failed start from
// becoming a dead end (a requeued job that exits 2 for ever) cannot drift apart.
#include "run_dir.h"
#include <dirent.h>
#include <hdf5.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "checkpoint.h"

long run_dir_metrics_rows(const char *path) {
    H5E_auto2_t old_func;
    void *old_data;
    H5Eget_auto2(H5E_DEFAULT, &old_func, &old_data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    long rows = -1;
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file >= 0) {
        hid_t dset = H5Dopen2(file, "/steps/step", H5P_DEFAULT);
        if (dset >= 0) {
            hid_t space = H5Dget_space(dset);
            hsize_t dims[1];
            if (space >= 0 && H5Sget_simple_extent_ndims(space) == 1 && H5Sget_simple_extent_dims(space, dims, NULL) == 1)
                rows = (long)dims[0];
            if (space >= 0) H5Sclose(space);
            H5Dclose(dset);
        } else {
            rows = 0;   // created, but no step finished
        }
        H5Fclose(file);
    }
    H5Eset_auto2(H5E_DEFAULT, old_func, old_data);
    return rows;
}

// The newest complete checkpoint file in RUN/checkpoints ("step_%08ld.h5" exactly), or 0 if none.
static int newest_checkpoint_file(const char *run_dir, char *name, size_t n) {
    char dir[CFG_PATH_LEN + 32];
    snprintf(dir, sizeof dir, "%s/checkpoints", run_dir);
    DIR *d = opendir(dir);
    if (!d) return 0;
    long best = -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        long s;
        char tail[8];
        if (sscanf(e->d_name, "step_%ld.h%7s", &s, tail) == 2 && !strcmp(tail, "5") && s > best) {
            best = s;
            snprintf(name, n, "%s/%s", dir, e->d_name);
        }
    }
    closedir(d);
    return best >= 0;
}

int run_dir_plan(const char *run_dir, ResumeMode resume, const char *resume_path, RunDirPlan *plan, Error *err) {
    memset(plan, 0, sizeof *plan);
    char metrics[CFG_PATH_LEN + 64], published[CFG_PATH_LEN + 64] = "", orphan[CFG_PATH_LEN + 320];
    snprintf(metrics, sizeof metrics, "%s/metrics.h5", run_dir);
    plan->have_metrics = access(metrics, F_OK) == 0;
    if (resume == RESUME_PATH) {
        snprintf(plan->checkpoint, sizeof plan->checkpoint, "%s", resume_path);
        return 0;
    }
    if (checkpoint_latest(run_dir, published, sizeof published)) {
        if (resume == RESUME_AUTO) {
            snprintf(plan->checkpoint, sizeof plan->checkpoint, "%s", published);
            return 0;
        }
        return error_set(err, "%s: the run directory holds a run (checkpoints/latest names %s) and --resume never does not "
                         "overwrite it; resume it with --resume auto or choose a new --run-dir",
                         plan->have_metrics ? metrics : published, published);
    }
    // A published checkpoint always has `latest` (it moves after the rename): complete files
    // without it were tampered with, and which one to continue from is the user's choice.
    if (newest_checkpoint_file(run_dir, orphan, sizeof orphan))
        return error_set(err, "%s/checkpoints/latest: missing although %s exists; resume it with --resume %s or choose a new --run-dir",
                         run_dir, orphan, orphan);
    // Nothing to resume: a new directory, or what a start that failed or was killed before its
    // first checkpoint left. Its rows belong to steps that run again now.
    plan->drop_metrics = plan->have_metrics;
    return 0;
}
