// comm_mpi.c: the Comm interface over MPI. Communicators: one per pipeline (the ranks of one dp
// replica, ordered by stage), one per stage across replicas (dp), and a two-rank one joining the
// first and last stage of each pipeline for the tied embedding.
#include <mpi.h>
#include <string.h>
#include "comm.h"
#include "common.h"

typedef struct {
    MPI_Comm pipeline;   // ranks of this dp replica, rank = stage
    MPI_Comm dp;         // ranks holding this stage, rank = dp_index
    MPI_Comm tie;        // {first, last} stage of this pipeline; MPI_COMM_NULL elsewhere or when pp = 1
    MPI_Datatype type;   // MPI_FLOAT or MPI_DOUBLE
} MpiComm;

static MpiComm *impl(Comm *c) { return c->impl; }

static void mpi_send(Comm *c, int to_stage, const void *buf, size_t n, int tag, CommHandle *h) {
    MPI_Request *req = xmalloc(sizeof *req);
    mpiCheck(MPI_Isend(buf, (int)n, impl(c)->type, to_stage, tag, impl(c)->pipeline, req));
    h->impl = req;
}

static void mpi_recv(Comm *c, int from_stage, void *buf, size_t n, int tag) {
    mpiCheck(MPI_Recv(buf, (int)n, impl(c)->type, from_stage, tag, impl(c)->pipeline, MPI_STATUS_IGNORE));
}

static void mpi_wait(Comm *c, CommHandle *h) {
    (void)c;
    if (!h->impl) return;
    mpiCheck(MPI_Wait((MPI_Request *)h->impl, MPI_STATUS_IGNORE));
    free(h->impl);
    h->impl = NULL;
}

static void mpi_dp_allreduce_start(Comm *c, void *buf, size_t n, CommHandle *h) {
    if (c->dp == 1 || n == 0) { h->impl = NULL; return; }
    MPI_Request *req = xmalloc(sizeof *req);
    mpiCheck(MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, impl(c)->type, MPI_SUM, impl(c)->dp, req));
    h->impl = req;
}

static void mpi_dp_reduce_scatter(Comm *c, const void *full, void *shard, size_t n) {
    if (c->dp == 1) { memcpy(shard, full, n * c->elem_size); return; }
    mpiCheck(MPI_Reduce_scatter_block(full, shard, (int)n, impl(c)->type, MPI_SUM, impl(c)->dp));
}

static void mpi_dp_allgather(Comm *c, void *full, size_t n) {
    if (c->dp == 1) return;
    mpiCheck(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, full, (int)n, impl(c)->type, impl(c)->dp));
}

static void mpi_dp_sum_doubles(Comm *c, double *x, int n) {
    if (c->dp == 1) return;
    mpiCheck(MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_DOUBLE, MPI_SUM, impl(c)->dp));
}

static void mpi_dp_broadcast(Comm *c, void *buf, size_t n) {
    if (c->dp == 1) return;
    mpiCheck(MPI_Bcast(buf, (int)n, impl(c)->type, 0, impl(c)->dp));
}

static void mpi_tie_allreduce(Comm *c, void *buf, size_t n) {
    if (impl(c)->tie == MPI_COMM_NULL) return;
    mpiCheck(MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, impl(c)->type, MPI_SUM, impl(c)->tie));
}

static void mpi_world_sum(Comm *c, double *x, int n) {
    (void)c;
    mpiCheck(MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
}

static void mpi_world_max(Comm *c, double *x, int n) {
    (void)c;
    mpiCheck(MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
}

static void mpi_barrier(Comm *c) { (void)c; mpiCheck(MPI_Barrier(MPI_COMM_WORLD)); }

static void mpi_free(Comm *c) {
    MpiComm *m = impl(c);
    MPI_Comm_free(&m->pipeline);
    MPI_Comm_free(&m->dp);
    if (m->tie != MPI_COMM_NULL) MPI_Comm_free(&m->tie);
    free(m);
    free(c);
}

Comm *comm_mpi_create(int pp, size_t elem_size) {
    Comm *c = xcalloc(1, sizeof *c);
    MpiComm *m = xcalloc(1, sizeof *m);
    c->name = "mpi";
    c->impl = m;
    c->elem_size = elem_size;
    mpiCheck(MPI_Comm_rank(MPI_COMM_WORLD, &c->world_rank));
    mpiCheck(MPI_Comm_size(MPI_COMM_WORLD, &c->world_size));
    c->pp = pp;
    c->dp = c->world_size / pp;
    // A pipeline's stages are neighbouring ranks, so mpirun's by-slot mapping puts them on one node.
    c->dp_index = c->world_rank / pp;
    c->stage = c->world_rank % pp;
    m->type = elem_size == sizeof(double) ? MPI_DOUBLE : MPI_FLOAT;
    mpiCheck(MPI_Comm_split(MPI_COMM_WORLD, c->dp_index, c->stage, &m->pipeline));
    mpiCheck(MPI_Comm_split(MPI_COMM_WORLD, c->stage, c->dp_index, &m->dp));
    int in_tie = pp > 1 && (c->stage == 0 || c->stage == pp - 1);
    mpiCheck(MPI_Comm_split(MPI_COMM_WORLD, in_tie ? c->dp_index : MPI_UNDEFINED, c->stage, &m->tie));
    c->send = mpi_send;
    c->recv = mpi_recv;
    c->wait = mpi_wait;
    c->dp_allreduce_start = mpi_dp_allreduce_start;
    c->dp_reduce_scatter = mpi_dp_reduce_scatter;
    c->dp_allgather = mpi_dp_allgather;
    c->tie_allreduce = mpi_tie_allreduce;
    c->dp_sum_doubles = mpi_dp_sum_doubles;
    c->dp_broadcast = mpi_dp_broadcast;
    c->world_sum = mpi_world_sum;
    c->world_max = mpi_world_max;
    c->barrier = mpi_barrier;
    c->free = mpi_free;
    return c;
}
