// entrank: train, evaluate and inspect GPT-style decoders (docs/design.md section 8).
#include <mpi.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "checkpoint.h"
#include "cli.h"
#include "comm.h"
#include "config.h"
#include "info.h"
#include "device.h"
#include "eval_checkpoint.h"
#include "commands.h"
#include "signals.h"
#include "thread_policy.h"
#include "validate.h"

static const char *config_basename(const char *path, char *buf, size_t n) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    snprintf(buf, n, "%s", base);
    char *dot = strrchr(buf, '.');
    if (dot && dot != buf) *dot = 0;
    return buf;
}

int main(int argc, char **argv) {
    // Before anything starts a thread: OpenMP's wait policy, set by executing again (thread_policy.h).
    thread_policy_apply(argv);
    // Then: a SIGTERM or SIGUSR1 that arrives while a training starts (config, validation,
    // MPI start-up, loading a checkpoint) is kept and honoured at the first step boundary (a
    // checkpoint, exit 3) instead of killing the process with nothing written. eval and info keep
    // the default action: nothing of theirs needs saving, and they must stay stoppable.
    if (argc > 1 && !strcmp(argv[1], "train")) signals_install();
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
    if (args.command == CMD_INFO) {
        if (config_load(args.config_path, args.sets, args.n_sets, &cfg, &err)) {
            fprintf(stderr, "entrank: %s\n", err.msg);
            return EXIT_BAD_INPUT;
        }
        // The topology is known when --dp or --pp is given (the other defaults to 1 / parallel.pp);
        // data files are not read: info plans runs for machines that hold the data.
        if (args.pp > 0) cfg.pp = args.pp;
        ValidateScope scope = {.world_size = args.dp > 0 || args.pp > 0 ? (args.dp > 0 ? args.dp : 1) * cfg.pp : 0, .read_files = 0};
        if (validate_run(&cfg, &scope, &err)) {
            fprintf(stderr, "entrank: %s\n", err.msg);
            return EXIT_BAD_INPUT;
        }
        // --data and --dump-order read the files' headers (not every token), after the checks above.
        if (args.dump_order) {
            if (print_data_order(&cfg, args.dump_first, args.dump_last, stdout, &err)) {
                fprintf(stderr, "entrank: %s\n", err.msg);
                return EXIT_BAD_INPUT;
            }
            return EXIT_DONE;
        }
        // The data section is composed first: bad data prints its one line and nothing else.
        char *data_text = NULL;
        size_t data_len = 0;
        if (args.data) {
            FILE *f = open_memstream(&data_text, &data_len);
            CHECK_ALLOC(f);
            int failed = print_data_info(&cfg, f, &err);
            fclose(f);
            if (failed) {
                free(data_text);
                fprintf(stderr, "entrank: %s\n", err.msg);
                return EXIT_BAD_INPUT;
            }
        }
        double need = print_info(&cfg, args.dp, args.pp, stdout);
        if (data_text) fputs(data_text, stdout);
        free(data_text);
        if (args.gpu_memory_gib > 0) {
            // The memory gate: a rank may use 90% of its GPU's memory; the rest is headroom for
            // what no estimate sees (allocator fragmentation, library growth).
            double budget = args.gpu_memory_gib * 1024.0 * 1024 * 1024, gib = 1024.0 * 1024 * 1024;
            if (need < 0) {
                fprintf(stderr, "entrank: --gpu-memory-gib: no memory estimate for this topology (see the \"memory per rank\" line)\n");
                return EXIT_BAD_INPUT;
            }
            if (need > 0.9 * budget) {
                fprintf(stderr, "entrank: %s: needs %.1f GiB per rank (fp32, train.recompute \"%s\"), more than 90%% of the "
                                "%.1f GiB budget (%.1f GiB); try train.recompute, a smaller train.micro_batch_size or a larger pp\n",
                        args.config_path ? args.config_path : "config", need / gib, recompute_name(cfg.recompute),
                        args.gpu_memory_gib, 0.9 * budget / gib);
                return EXIT_BAD_INPUT;
            }
            printf("memory gate: %.1f GiB per rank fits 90%% of %.1f GiB (%.1f GiB)\n", need / gib, args.gpu_memory_gib, 0.9 * budget / gib);
        }
        return EXIT_DONE;
    }

    // eval and generate accept a checkpoint file, the `latest` pointer or a run directory: resolved
    // here, before MPI starts, so a wrong path is one line and not the MPI-IO library's errors.
    static char checkpoint[4096];
    if (args.checkpoint_path) {
        if (eval_resolve_checkpoint(args.checkpoint_path, checkpoint, sizeof checkpoint, &err)) {
            fprintf(stderr, "entrank: %s\n", err.msg);
            return EXIT_BAD_INPUT;
        }
        args.checkpoint_path = checkpoint;
    }

    // train and eval run as MPI ranks (a single process is a world of one).
    // Open MPI's OMPIO opens a shared-file-pointer helper with every file, and its "sm" one takes
    // a named semaphore /dev/shm/sem.OMPIO_<file name>: a rank killed while holding it (SIGKILL
    // during a checkpoint's open) leaves it locked, and every later open of a file with that name
    // on the node (step_N.h5.tmp of any run) waits for ever. Checkpoints never use a shared file
    // pointer; without "sm" OMPIO picks a component whose locks die with their holder. A user's
    // own OMPI_MCA_sharedfp wins; other MPIs ignore the variable.
    setenv("OMPI_MCA_sharedfp", "^sm", 0);
    mpiCheck(MPI_Init(&argc, &argv));
    int rank;
    mpiCheck(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    int code = EXIT_DONE;
    // generate and eval without -c use the config the checkpoint was written with: each rank copies the
    // checkpoint's `config` attribute to a private temporary file that config_load reads.
    char tmp_config[64] = "";
    int config_failed = 0;
    if ((args.command == CMD_GENERATE || args.command == CMD_EVAL) && !args.config_path) {
        char *text = checkpoint_read_config(args.checkpoint_path, &err);
        if (!text) {
            config_failed = 1;
        } else {
            snprintf(tmp_config, sizeof tmp_config, "/tmp/entrank-config-XXXXXX");
            int fd = mkstemp(tmp_config);
            FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
            if (!f || fputs(text, f) < 0 || fclose(f)) die(EXIT_FAILURE_OTHER, "%s: cannot write a temporary config", tmp_config);
            free(text);
            args.config_path = tmp_config;
        }
    }
    // The checkpoint's config names the topology it was written on; this run's is the world it
    // runs in: parallel.pp starts at 1 (any topology loads any checkpoint), and --set may change it.
    const char *sets[CLI_MAX_SETS + 1];
    int n_sets = 0;
    if (tmp_config[0]) sets[n_sets++] = "parallel.pp=1";
    for (int i = 0; i < args.n_sets; i++) sets[n_sets++] = args.sets[i];
    // Every rank reads the same config and reaches the same verdict: rank 0 reports it once.
    int config_rc = config_failed || config_load(args.config_path, sets, n_sets, &cfg, &err);
    if (tmp_config[0]) unlink(tmp_config);
    if (config_rc) {
        if (rank == 0) fprintf(stderr, "entrank: %s\n", err.msg);
        code = EXIT_BAD_INPUT;
    } else {
        int world;
        mpiCheck(MPI_Comm_size(MPI_COMM_WORLD, &world));
        // Nothing is written before the whole input is checked. The device verdict comes first:
        // train.device names the machine, not the run, so "cuda" where no GPU is usable is the
        // error to report even if the run is also wrong. Then validate_run: every rank checks the
        // config, shape and topology whole, and its slice of the data's token ids; the lowest
        // failing rank's message is printed once, by rank 0. Only then train_command creates the
        // run directory.
        Device dev;
        if ((code = select_device(&cfg, rank, &dev)) == EXIT_DONE) {
            // generate and eval --task read no training data: the checkpoint and their file are the input.
            int reads_data = args.command == CMD_TRAIN || (args.command == CMD_EVAL && !args.task);
            ValidateScope scope = {.world_size = world, .read_files = reads_data, .scan_part = rank, .scan_parts = world};
            int mine = validate_run(&cfg, &scope, &err) ? rank : world, first;
            mpiCheck(MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
            if (first < world) {
                mpiCheck(MPI_Bcast(err.msg, (int)sizeof err.msg, MPI_CHAR, first, MPI_COMM_WORLD));
                if (rank == 0) fprintf(stderr, "entrank: %s\n", err.msg);
                code = EXIT_BAD_INPUT;
            } else {
                char name[256], run_dir[CFG_PATH_LEN];
                if (args.run_dir) snprintf(run_dir, sizeof run_dir, "%s", args.run_dir);
                else snprintf(run_dir, sizeof run_dir, "runs/%s", config_basename(args.config_path, name, sizeof name));
                // The backend is chosen first; the Comm follows it (MPI for the CPU, NCCL for CUDA).
                Comm *comm = comm_for(&dev, cfg.pp);
                if (args.command == CMD_TRAIN) code = train_command(&cfg, &dev.run, comm, run_dir, args.resume, args.resume_path, args.init_from);
                else if (args.command == CMD_GENERATE) code = generate_command(&cfg, &dev.run, comm, &args);
                else code = eval_command(&cfg, &dev.run, comm, &args);
                comm->free(comm);
            }
            release_device(&dev);
        }
    }
    MPI_Finalize();
    return code;
}
