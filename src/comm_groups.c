// comm_groups.c: the rank layout, MPI groups and host-scalar ops shared by the transports.
#include "comm_groups.h"
#include <stdlib.h>
#include "common.h"

static CommGroups *groups(Comm *c) { return c->impl; }

static void host_dp_sum_doubles(Comm *c, double *x, int n) {
    if (c->dp == 1) return;
    mpiCheck(MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_DOUBLE, MPI_SUM, groups(c)->dp));
}

static void host_world_sum(Comm *c, double *x, int n) {
    (void)c;
    mpiCheck(MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
}

static void host_world_max(Comm *c, double *x, int n) {
    (void)c;
    mpiCheck(MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
}

static void host_barrier(Comm *c) { (void)c; mpiCheck(MPI_Barrier(MPI_COMM_WORLD)); }

// MPI connects on first use and keeps no per-size state worth warming.
static void no_warm_up(Comm *c, size_t p2p_n, size_t dp_n, size_t tie_n) { (void)c; (void)p2p_n; (void)dp_n; (void)tie_n; }

Comm *comm_groups_create(const char *name, int pp, size_t elem_size, void *impl) {
    Comm *c = xcalloc(1, sizeof *c);
    CommGroups *g = impl;
    c->name = name;
    c->impl = impl;
    c->elem_size = elem_size;
    mpiCheck(MPI_Comm_rank(MPI_COMM_WORLD, &c->world_rank));
    mpiCheck(MPI_Comm_size(MPI_COMM_WORLD, &c->world_size));
    c->pp = pp;
    c->dp = c->world_size / pp;
    // A pipeline's stages are neighbouring ranks, so mpirun's by-slot mapping puts them on one node.
    c->dp_index = c->world_rank / pp;
    c->stage = c->world_rank % pp;
    mpiCheck(MPI_Comm_split(MPI_COMM_WORLD, c->dp_index, c->stage, &g->pipeline));
    mpiCheck(MPI_Comm_split(MPI_COMM_WORLD, c->stage, c->dp_index, &g->dp));
    int in_tie = pp > 1 && (c->stage == 0 || c->stage == pp - 1);
    mpiCheck(MPI_Comm_split(MPI_COMM_WORLD, in_tie ? c->dp_index : MPI_UNDEFINED, c->stage, &g->tie));
    c->dp_sum_doubles = host_dp_sum_doubles;
    c->world_sum = host_world_sum;
    c->world_max = host_world_max;
    c->barrier = host_barrier;
    c->warm_up = no_warm_up;
    return c;
}

void comm_groups_free(Comm *c) {
    CommGroups *g = groups(c);
    MPI_Comm_free(&g->pipeline);
    MPI_Comm_free(&g->dp);
    if (g->tie != MPI_COMM_NULL) MPI_Comm_free(&g->tie);
    free(c->impl);
    free(c);
}
