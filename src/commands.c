// commands.c: what the train and eval commands share.
#include <stdio.h>
#include "commands.h"

int commands_any_failed(Comm *comm, int failed, const Error *err) {
    // Any non-zero status counts (error_set returns -1: a maximum over -1 and 0 would be 0).
    double flags[2] = {failed != 0, failed != 0 && comm->world_rank == 0};
    comm->world_max(comm, flags, 2);
    // One line: rank 0's if it failed, else that of each failing rank (usually one).
    if (failed && (comm->world_rank == 0 || flags[1] == 0)) fprintf(stderr, "entrank: %s\n", err->msg);
    return flags[0] != 0;
}

