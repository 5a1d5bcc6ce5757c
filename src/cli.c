#include "cli.h"
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <string.h>

void cli_print_usage(FILE *out) {
    fputs("usage:\n"
          "  entrank train -c FILE [--set key=value]... [--run-dir DIR] [--resume auto|never|PATH] [--init-from PATH]\n"
          "  entrank eval  --checkpoint PATH [-c FILE] [--prune-heads FRAC] [--set key=value]... [--task hellaswag FILE]\n"
          "  entrank info  -c FILE [--set key=value]... [--dp N --pp N] [--gpu-memory-gib X] [--data] [--dump-order FIRST[:LAST]]\n"
          "  entrank generate --checkpoint PATH [-c FILE] (--prompt \"ID ...\" | --prompt-file FILE) [--max-tokens N]\n"
          "                   [--temperature T] [--top-k K] [--top-p P] [--seed N] [--stop ID] [--logprobs-out FILE.npy]\n"
          "  entrank --help\n"
          "\n"
          "  -c FILE           libconfig file (see configs/ and README.md for every key)\n"
          "  --set key=value   override one key, value in libconfig syntax (3, 3.0, \"text\", true, [1, 2])\n"
          "  --run-dir DIR     where config.cfg, log.txt, metrics.h5 and checkpoints/ go (default runs/<config name>)\n"
          "  --resume MODE     auto: newest complete checkpoint if any; never: start fresh; or a checkpoint path\n"
          "  eval              --checkpoint is a checkpoint file, RUN/checkpoints/latest or a run directory (its\n"
          "                    latest checkpoint); the config defaults to the checkpoint's own. Without --task:\n"
          "                    validation loss; --task hellaswag FILE: multiple-choice accuracy on the token file\n"
          "                    tools/prepare-hellaswag writes (lowest mean loss per ending token wins), logged and\n"
          "                    appended to RUN/metrics.h5 /eval/hellaswag when the checkpoint is in a run directory\n"
          "  --dp N --pp N     topology for info's per-rank memory and pipeline bubble\n"
          "  --gpu-memory-gib X  info: the memory gate: exit 2 when a rank needs more than 90% of X GiB on a GPU\n"
          "  --init-from PATH  train: start from the parameters of a checkpoint (fresh optimizer, step 0)\n"
          "  generate          token ids in (one prompt per line of --prompt-file), one line of generated ids per\n"
          "                    prompt out; the config defaults to the checkpoint's own. --temperature 0 is greedy;\n"
          "                    the same --seed gives the same tokens on any topology. --logprobs-out writes the\n"
          "                    log-probabilities (prompts, positions, vocab) of the prompts' own pass as float32 .npy\n"
          "  --data            info: reads the data files' headers; windows per epoch, epochs in the run, tokens per\n"
          "                    source and the expected repetition\n"
          "  --dump-order S    info: one line per sequence of steps FIRST..LAST (S = FIRST or FIRST:LAST): the\n"
          "                    source, epoch, position, window, file and token offset it reads\n"
          "\n"
          "exit codes: 0 done, 1 other failure, 2 bad usage/config/input, 3 stopped by a signal after a checkpoint\n",
          out);
}

static int parse_positive_int(const char *flag, const char *text, int *out, Error *err) {
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || *end || end == text || v < 1 || v > INT_MAX)
        return error_set(err, "%s: expected a positive integer, got '%s'", flag, text);
    *out = (int)v;
    return 0;
}

int cli_parse(int argc, char **argv, CliArgs *args, Error *err) {
    memset(args, 0, sizeof *args);
    args->resume = RESUME_AUTO;
    args->prune_heads = 0;
    args->max_tokens = 64;
    args->temperature = 1.0;
    args->top_p = 1.0;
    args->seed = 1337;
    args->stop_token = -1;
    if (argc < 2) return error_set(err, "missing command (train, eval, generate or info); see entrank --help");
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) { args->command = CMD_HELP; return 0; }
    if (!strcmp(cmd, "train")) args->command = CMD_TRAIN;
    else if (!strcmp(cmd, "eval")) args->command = CMD_EVAL;
    else if (!strcmp(cmd, "info")) args->command = CMD_INFO;
    else if (!strcmp(cmd, "generate")) args->command = CMD_GENERATE;
    else return error_set(err, "unknown command '%s' (expected train, eval, generate or info)", cmd);

    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { args->command = CMD_HELP; return 0; }
        if (!strcmp(a, "--data") && args->command == CMD_INFO) { args->data = 1; continue; }   // the one flag without a value
        // eval's task file is the one positional argument, right after --task NAME.
        if (args->command == CMD_EVAL && a[0] != '-' && args->task && !args->task_file) { args->task_file = a; continue; }
        // Every other option takes one value.
        if (i + 1 >= argc) return error_set(err, "%s: missing value", a);
        const char *v = argv[++i];
        if (!strcmp(a, "-c") || !strcmp(a, "--config")) {
            args->config_path = v;
        } else if (!strcmp(a, "--set")) {
            if (args->n_sets == CLI_MAX_SETS) return error_set(err, "--set: more than %d overrides", CLI_MAX_SETS);
            args->sets[args->n_sets++] = v;
        } else if (!strcmp(a, "--run-dir") && args->command == CMD_TRAIN) {
            args->run_dir = v;
        } else if (!strcmp(a, "--resume") && args->command == CMD_TRAIN) {
            if (!strcmp(v, "auto")) args->resume = RESUME_AUTO;
            else if (!strcmp(v, "never")) args->resume = RESUME_NEVER;
            else { args->resume = RESUME_PATH; args->resume_path = v; }
        } else if (!strcmp(a, "--checkpoint") && (args->command == CMD_EVAL || args->command == CMD_GENERATE)) {
            args->checkpoint_path = v;
        } else if (!strcmp(a, "--init-from") && args->command == CMD_TRAIN) {
            args->init_from = v;
        } else if (args->command == CMD_GENERATE && !strcmp(a, "--prompt")) {
            args->prompt = v;
        } else if (args->command == CMD_GENERATE && !strcmp(a, "--prompt-file")) {
            args->prompt_file = v;
        } else if (args->command == CMD_GENERATE && !strcmp(a, "--logprobs-out")) {
            args->logprobs_out = v;
        } else if (args->command == CMD_GENERATE && !strcmp(a, "--max-tokens")) {
            char *end;
            errno = 0;
            long n = strtol(v, &end, 10);
            if (errno || *end || end == v || n < 0 || n > INT_MAX) return error_set(err, "--max-tokens: expected an integer >= 0, got '%s'", v);
            args->max_tokens = (int)n;
        } else if (args->command == CMD_GENERATE && !strcmp(a, "--temperature")) {
            char *end;
            args->temperature = strtod(v, &end);
            if (*end || end == v || !(args->temperature >= 0 && args->temperature < 1e6))
                return error_set(err, "--temperature: expected a number >= 0, got '%s'", v);
        } else if (args->command == CMD_GENERATE && !strcmp(a, "--top-k")) {
            if (parse_positive_int(a, v, &args->top_k, err)) return -1;
        } else if (args->command == CMD_GENERATE && !strcmp(a, "--top-p")) {
            char *end;
            args->top_p = strtod(v, &end);
            if (*end || end == v || !(args->top_p > 0 && args->top_p <= 1))
                return error_set(err, "--top-p: expected a probability in (0, 1], got '%s'", v);
        } else if (args->command == CMD_GENERATE && !strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            args->seed = strtoll(v, &end, 10);
            if (errno || *end || end == v || args->seed < 0) return error_set(err, "--seed: expected an integer >= 0, got '%s'", v);
        } else if (args->command == CMD_GENERATE && !strcmp(a, "--stop")) {
            char *end;
            errno = 0;
            long n = strtol(v, &end, 10);
            if (errno || *end || end == v || n < 0 || n > INT_MAX) return error_set(err, "--stop: expected a token id, got '%s'", v);
            args->stop_token = (int)n;
        } else if (!strcmp(a, "--task") && args->command == CMD_EVAL) {
            if (strcmp(v, "hellaswag")) return error_set(err, "--task: unknown task '%s' (known: hellaswag)", v);
            args->task = v;
        } else if (!strcmp(a, "--prune-heads") && args->command == CMD_EVAL) {
            char *end;
            args->prune_heads = strtod(v, &end);
            if (*end || end == v || !(args->prune_heads >= 0 && args->prune_heads < 1))
                return error_set(err, "--prune-heads: expected a fraction in [0, 1), got '%s'", v);
        } else if (!strcmp(a, "--gpu-memory-gib") && args->command == CMD_INFO) {
            char *end;
            args->gpu_memory_gib = strtod(v, &end);
            if (*end || end == v || !(args->gpu_memory_gib > 0 && args->gpu_memory_gib < 1e6))
                return error_set(err, "--gpu-memory-gib: expected a positive number of GiB, got '%s'", v);
        } else if (!strcmp(a, "--dp") && args->command == CMD_INFO) {
            if (parse_positive_int(a, v, &args->dp, err)) return -1;
        } else if (!strcmp(a, "--dump-order") && args->command == CMD_INFO) {
            char *end;
            errno = 0;
            long first = strtol(v, &end, 10), last = first;
            if (*end == ':') last = strtol(end + 1, &end, 10);
            if (errno || *end || end == v || !isdigit((unsigned char)v[0]) || first < 0 || last < first)
                return error_set(err, "--dump-order: expected FIRST or FIRST:LAST steps (0 <= FIRST <= LAST), got '%s'", v);
            args->dump_order = 1;
            args->dump_first = first;
            args->dump_last = last;
        } else if (!strcmp(a, "--pp") && args->command == CMD_INFO) {
            if (parse_positive_int(a, v, &args->pp, err)) return -1;
        } else {
            return error_set(err, "%s: unknown option for '%s'; see entrank --help", a, cmd);
        }
    }
    if (args->command == CMD_GENERATE) {
        if (!args->checkpoint_path) return error_set(err, "generate: missing --checkpoint PATH");
        if (!args->prompt == !args->prompt_file) return error_set(err, "generate: give exactly one of --prompt and --prompt-file");
        return 0;   // the config defaults to the checkpoint's own
    }
    if (args->command == CMD_EVAL) {
        if (!args->checkpoint_path) return error_set(err, "eval: missing --checkpoint PATH");
        if (args->task && !args->task_file) return error_set(err, "--task %s: missing FILE (the token file of tools/prepare-hellaswag)", args->task);
        if (args->task && args->prune_heads > 0) return error_set(err, "eval: --prune-heads applies to the validation loss, not to --task");
        return 0;   // the config defaults to the checkpoint's own
    }
    if (!args->config_path) return error_set(err, "%s: missing -c FILE", cmd);
    return 0;
}
