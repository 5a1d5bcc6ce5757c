// commands.h: the commands main dispatches to (docs/design.md section 8), and what they share.
#pragma once
#include "cli.h"
#include "comm.h"
#include "config.h"
#include "backend.h"

// Where a command runs, chosen by main from train.device before the Comm is built (the Comm
// follows the backend: MPI on the CPU, NCCL on CUDA).
typedef struct {
    const Backend *be;
    const char *kind;      // "cpu" | "cuda": metrics.h5's `device` attribute
    const char *name;      // the log's device line: "cpu", or the GPU's name
    const char *notice;    // one line for rank 0's log (train.device = "auto" fell back to the CPU), or ""
} RunDevice;

// The `train` command on every rank: run directory, resume, log, metrics, evaluation,
// checkpoints, stop signals. With init_from (not NULL) and nothing to resume, the parameters start
// from that checkpoint's. A resume resolves train.extend's tail into cfg (run_history.h).
// Returns the exit code (the same on every rank).
int train_command(Config *cfg, const RunDevice *dev, Comm *comm, const char *run_dir, ResumeMode resume,
                  const char *resume_path, const char *init_from);

// The `eval` command: loads the parameters of `args->checkpoint_path` (a file, resolved by main)
// on this topology and evaluates the validation loss; with --prune-heads FRAC, first masks that
// fraction of heads (lowest entropy variance) and reports both; with --task hellaswag FILE, scores
// the file's multiple-choice items instead and appends the accuracy to the run's metrics.h5.
int eval_command(const Config *cfg, const RunDevice *dev, Comm *comm, const CliArgs *args);

// The `generate` command: samples continuations of args' prompts from `args->checkpoint_path`
// and prints one line of token ids per prompt (generate_command.c).
int generate_command(const Config *cfg, const RunDevice *dev, Comm *comm, const CliArgs *args);

// Bad input may be seen by every rank alike (config, topology, data headers) or by one rank only
// (the run directory, on rank 0): all ranks agree, the ranks that saw it print one line, and all
// return exit 2 together. `failed` is any non-zero status. Returns 1 if any rank failed.
int commands_any_failed(Comm *comm, int failed, const Error *err);
