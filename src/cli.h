// cli.h: the command line (docs/design.md section 8).
#pragma once
#include "common.h"

#define CLI_MAX_SETS 256

typedef enum { CMD_NONE, CMD_TRAIN, CMD_EVAL, CMD_INFO, CMD_GENERATE, CMD_HELP } Command;
typedef enum { RESUME_AUTO, RESUME_NEVER, RESUME_PATH } ResumeMode;

typedef struct {
    Command command;
    const char *config_path;                 // -c FILE
    const char *sets[CLI_MAX_SETS];          // --set key=value, in order
    int n_sets;
    const char *run_dir;                     // --run-dir DIR (train)
    ResumeMode resume;                       // --resume auto|never|PATH (train)
    const char *resume_path;
    const char *checkpoint_path;             // --checkpoint PATH (eval, generate)
    const char *init_from;                   // --init-from PATH (train): parameters only, step 0
    // generate
    const char *prompt;                      // --prompt "ID ID ..."
    const char *prompt_file;                 // --prompt-file FILE: one prompt of token ids per line
    const char *logprobs_out;                // --logprobs-out FILE.npy: log-probabilities of the prompts' positions
    int max_tokens;                          // --max-tokens N (default 64; 0: only the prompts' pass)
    double temperature;                      // --temperature T (default 1; 0: greedy)
    int top_k;                               // --top-k K (0: off)
    double top_p;                            // --top-p P (1: off)
    long long seed;                          // --seed N (default 1337)
    int stop_token;                          // --stop ID: a prompt's generation ends after it (-1: none)
    double prune_heads;                      // --prune-heads FRAC (eval)
    const char *task;                        // --task NAME (eval): a downstream task instead of validation loss
    const char *task_file;                   // eval's FILE after --task NAME: the task's token file
    int dp, pp;                              // --dp N --pp N (info); 0 = not given
    double gpu_memory_gib;                   // --gpu-memory-gib X (info): the memory gate's budget; 0 = none
    int data;                                // --data (info): windows, epochs and repetition per source
    int dump_order;                          // --dump-order FIRST[:LAST] (info): the windows of those steps
    long dump_first, dump_last;              // inclusive step range
} CliArgs;

// Parses argv. On a usage error returns -1 with err naming the argument.
int cli_parse(int argc, char **argv, CliArgs *args, Error *err);

void cli_print_usage(FILE *out);
