// eval_command.c: `entrank eval`: the parameters of a checkpoint on this topology, evaluated on
// the validation data (optionally after head pruning) or on a downstream task's items.
#include <math.h>
#include <stdio.h>
#include "checkpoint.h"
#include "commands.h"
#include "eval_checkpoint.h"
#include "eval_hellaswag.h"
#include "head_pruning.h"
#include "metrics.h"
#include "train.h"

// The rows a task evaluation appends to RUN/metrics.h5, in the group /eval/<task>: one row per
// `eval --task` run. The group's name is the task's.
#define TASK_METRICS(X)                                                                                            \
    X(STEP, "step", "checkpoint step the task was evaluated at", "step")                                         \
    X(ACC_NORM, "acc_norm", "items whose lowest mean loss per ending token is the label (llm.c's acc_norm)", "fraction") \
    X(ACC, "acc", "items whose lowest summed ending loss is the label (llm.c's acc)", "fraction")                  \
    X(ITEMS, "items", "items scored", "count")

#define TASK_ID(id, name, description, units) TASK_##id,
enum { TASK_METRICS(TASK_ID) NUM_TASK_METRICS };
#undef TASK_ID
#define TASK_ROW(id, name, description, units) {name, description, units},
static const struct { const char *name, *description, *units; } TASK_METRIC_ROWS[] = {TASK_METRICS(TASK_ROW)};
#undef TASK_ROW

// Rank 0: the result line in the log.txt and the task's row in the metrics.h5 of the checkpoint's
// run directory, if it has one.
static void record_task(const char *task, const char *checkpoint, const McScore *sc, const char *line) {
    char run[4096], path[4200];
    if (!eval_run_dir_of(checkpoint, run, sizeof run)) {
        printf("%s: not in a run directory (RUN/checkpoints/) with a metrics.h5: the accuracy is not recorded\n", checkpoint);
        return;
    }
    // One short append (O_APPEND): a training that writes the same log meanwhile keeps its lines whole.
    snprintf(path, sizeof path, "%s/log.txt", run);
    FILE *log = fopen(path, "a");
    if (log) {
        fprintf(log, "eval step %ld | %s", sc->step, line);
        fclose(log);
    }
    snprintf(path, sizeof path, "%s/metrics.h5", run);
    Error err = {{0}};
    MetricsFile *mf = metrics_open_append(path, &err);
    if (!mf) {
        fprintf(stderr, "entrank: %s (the accuracy above is not recorded)\n", err.msg);
        return;
    }
    double row[NUM_TASK_METRICS] = {[TASK_STEP] = (double)sc->step, [TASK_ACC_NORM] = (double)sc->correct_norm / sc->items,
                                    [TASK_ACC] = (double)sc->correct_sum / sc->items, [TASK_ITEMS] = (double)sc->items};
    for (int i = 0; i < NUM_TASK_METRICS; i++) {
        char name[256];
        snprintf(name, sizeof name, "/eval/%s/%s", task, TASK_METRIC_ROWS[i].name);
        if (metrics_try_declare(mf, name, 0, NULL, TASK_METRIC_ROWS[i].description, TASK_METRIC_ROWS[i].units, &err)) {
            fprintf(stderr, "entrank: %s: %s (the accuracy above is not recorded)\n", path, err.msg);
            metrics_close(mf);
            return;
        }
        metrics_append(mf, name, &row[i]);
    }
    metrics_close(mf);
    printf("appended to %s /eval/%s\n", path, task);
}

static int eval_task(const Config *cfg, const RunDevice *dev, Comm *comm, const CliArgs *args) {
    Error err = {{0}};
    McItems items;
    // Every rank reads the file: the verdict is the same everywhere, and every stage needs the ids.
    int failed = mc_items_read(args->task_file, cfg->vocab_size, cfg->seq_len, &items, &err) != 0;
    if (commands_any_failed(comm, failed, &err)) return EXIT_BAD_INPUT;
    McScore sc;
    if (eval_multiple_choice(cfg, dev, comm, args->checkpoint_path, &items, &sc, &err)) {
        mc_items_free(&items);
        return EXIT_BAD_INPUT;
    }
    if (comm->world_rank == 0) {
        printf("checkpoint %s (step %ld) | %d ranks: dp %d x pp %d\n", args->checkpoint_path, sc.step, comm->world_size, comm->dp,
               comm->pp);
        char line[8192];
        snprintf(line, sizeof line, "%s %s | %ld items, %d endings | acc_norm %.4f (%ld) | acc %.4f (%ld)\n", args->task,
                 args->task_file, sc.items, items.n_endings, (double)sc.correct_norm / sc.items, sc.correct_norm,
                 (double)sc.correct_sum / sc.items, sc.correct_sum);
        fputs(line, stdout);
        fflush(stdout);
        record_task(args->task, args->checkpoint_path, &sc, line);
    }
    mc_items_free(&items);
    return EXIT_DONE;
}

int eval_command(const Config *cfg, const RunDevice *dev, Comm *comm, const CliArgs *args) {
    Error err = {{0}};
    if (comm->world_rank == 0 && dev->notice[0]) printf("%s\n", dev->notice);
    if (args->task) return eval_task(cfg, dev, comm, args);
    const char *checkpoint = args->checkpoint_path;
    Trainer t;
    int failed = trainer_init(&t, cfg, dev->be, comm, &err) != 0;
    if (commands_any_failed(comm, failed, &err)) return EXIT_BAD_INPUT;
    CheckpointProgress progress;
    CheckpointTarget target = trainer_checkpoint_target(&t);
    failed = checkpoint_load(&target, checkpoint, 0, &progress, &err) != 0;
    if (commands_any_failed(comm, failed, &err)) { trainer_free(&t); return EXIT_BAD_INPUT; }
    // Evaluate under the attention temperature the weights were trained at, as training's own evaluations do.
    t.attn_temperature = attention_temperature_after(cfg, progress.step);
    if (comm->world_rank == 0)
        printf("checkpoint %s (step %ld) | %d ranks: dp %d x pp %d\n", checkpoint, progress.step, comm->world_size, comm->dp, comm->pp);
    if (args->prune_heads > 0 && prune_heads(&t, cfg, args->prune_heads, &err)) die(EXIT_BAD_INPUT, "%s", err.msg);
    EvalResult ev;
    if (trainer_evaluate(&t, &ev, NULL, &err)) die(EXIT_BAD_INPUT, "%s", err.msg);
    if (comm->world_rank == 0) print_eval(&t, cfg, "", &ev);
    trainer_free(&t);
    return EXIT_DONE;
}
