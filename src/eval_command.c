// eval_command.c: `entrank eval`: the parameters of a checkpoint on this topology, evaluated on
// the validation data, optionally after head pruning.
#include <stdio.h>
#include "checkpoint.h"
#include "commands.h"
#include "head_pruning.h"
#include "train.h"

int eval_command(const Config *cfg, const RunDevice *dev, Comm *comm, const char *checkpoint, double prune_fraction) {
    Error err = {{0}};
    if (comm->world_rank == 0 && dev->notice[0]) printf("%s\n", dev->notice);
    Trainer t;
    int failed = trainer_init(&t, cfg, dev->be, comm, &err) != 0;
    if (commands_any_failed(comm, failed, &err)) return EXIT_BAD_INPUT;
    CheckpointProgress progress;
    CheckpointTarget target = trainer_checkpoint_target(&t);
    failed = checkpoint_load(&target, checkpoint, 0, &progress, &err) != 0;
    if (commands_any_failed(comm, failed, &err)) { trainer_free(&t); return EXIT_BAD_INPUT; }
    if (comm->world_rank == 0)
        printf("checkpoint %s (step %ld) | %d ranks: dp %d x pp %d\n", checkpoint, progress.step, comm->world_size, comm->dp, comm->pp);
    if (prune_fraction > 0 && prune_heads(&t, cfg, prune_fraction, &err)) die(EXIT_BAD_INPUT, "%s", err.msg);
    EvalResult ev;
    if (trainer_evaluate(&t, &ev, NULL, &err)) die(EXIT_BAD_INPUT, "%s", err.msg);
    if (comm->world_rank == 0) print_eval(&t, cfg, "", &ev);
    trainer_free(&t);
    return EXIT_DONE;
}
