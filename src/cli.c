#include "cli.h"
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <string.h>

void cli_print_usage(FILE *out) {
    fputs("usage:\n"
          "  entrank train -c FILE [--set key=value]... [--run-dir DIR] [--resume auto|never|PATH]\n"
          "  entrank eval  -c FILE --checkpoint PATH [--prune-heads FRAC] [--set key=value]...\n"
          "  entrank info  -c FILE [--set key=value]... [--dp N --pp N] [--data] [--dump-order FIRST[:LAST]]\n"
          "  entrank --help\n"
          "\n"
          "  -c FILE           libconfig file (see configs/ and README.md for every key)\n"
          "  --set key=value   override one key, value in libconfig syntax (3, 3.0, \"text\", true, [1, 2])\n"
          "  --run-dir DIR     where config.cfg, log.txt, metrics.h5 and checkpoints/ go (default runs/<config name>)\n"
          "  --resume MODE     auto: newest complete checkpoint if any; never: start fresh; or a checkpoint path\n"
          "  --dp N --pp N     topology for info's per-rank memory and pipeline bubble\n"
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
    if (argc < 2) return error_set(err, "missing command (train, eval or info); see entrank --help");
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) { args->command = CMD_HELP; return 0; }
    if (!strcmp(cmd, "train")) args->command = CMD_TRAIN;
    else if (!strcmp(cmd, "eval")) args->command = CMD_EVAL;
    else if (!strcmp(cmd, "info")) args->command = CMD_INFO;
    else return error_set(err, "unknown command '%s' (expected train, eval or info)", cmd);

    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { args->command = CMD_HELP; return 0; }
        if (!strcmp(a, "--data") && args->command == CMD_INFO) { args->data = 1; continue; }   // the one flag without a value
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
        } else if (!strcmp(a, "--checkpoint") && args->command == CMD_EVAL) {
            args->checkpoint_path = v;
        } else if (!strcmp(a, "--prune-heads") && args->command == CMD_EVAL) {
            char *end;
            args->prune_heads = strtod(v, &end);
            if (*end || end == v || !(args->prune_heads >= 0 && args->prune_heads < 1))
                return error_set(err, "--prune-heads: expected a fraction in [0, 1), got '%s'", v);
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
    if (!args->config_path) return error_set(err, "%s: missing -c FILE", cmd);
    if (args->command == CMD_EVAL && !args->checkpoint_path) return error_set(err, "eval: missing --checkpoint PATH");
    return 0;
}
