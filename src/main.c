// entrank: train, evaluate and inspect GPT-style decoders (DESIGN section 2).
#include <string.h>
#include "cli.h"
#include "config.h"
#include "info.h"
#include "train.h"

static const char *config_basename(const char *path, char *buf, size_t n) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    snprintf(buf, n, "%s", base);
    char *dot = strrchr(buf, '.');
    if (dot && dot != buf) *dot = 0;
    return buf;
}

int main(int argc, char **argv) {
    CliArgs args;
    Error err = {{0}};
    if (cli_parse(argc, argv, &args, &err)) {
        fprintf(stderr, "entrank: %s\n", err.msg);
        return EXIT_BAD_INPUT;
    }
    if (args.command == CMD_HELP) {
        cli_print_usage(stdout);
        return EXIT_DONE;
    }
    static Config cfg;   // large (paths): kept off the stack
    if (config_load(args.config_path, args.sets, args.n_sets, &cfg, &err)) {
        fprintf(stderr, "entrank: %s\n", err.msg);
        return EXIT_BAD_INPUT;
    }
    switch (args.command) {
    case CMD_INFO:
        print_info(&cfg, args.dp, args.pp, stdout);
        return EXIT_DONE;
    case CMD_TRAIN: {
        char name[256], run_dir[CFG_PATH_LEN];
        if (args.run_dir) snprintf(run_dir, sizeof run_dir, "%s", args.run_dir);
        else snprintf(run_dir, sizeof run_dir, "runs/%s", config_basename(args.config_path, name, sizeof name));
        if (args.resume == RESUME_PATH) die(EXIT_BAD_INPUT, "--resume %s: this build writes no checkpoints yet, so there is nothing to resume", args.resume_path);
        return train_command(&cfg, args.config_path, run_dir, args.resume == RESUME_NEVER);
    }
    case CMD_EVAL:
        die(EXIT_BAD_INPUT, "--checkpoint %s: this build writes no checkpoints yet, so there is nothing to evaluate", args.checkpoint_path);
    default:
        return EXIT_FAILURE_OTHER;
    }
}
