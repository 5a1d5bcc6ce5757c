// comm_mpi.c: the Comm interface over MPI. Communicators: one per pipeline (the ranks of one dp
// replica, ordered by stage), one per stage across replicas (dp), and a two-rank one joining the
// first and last stage of each pipeline for the tied embedding.
#include <mpi.h>
#include <string.h>
#include "comm.h"
#include "comm_groups.h"
#include "common.h"

typedef struct {
    CommGroups groups;   // first: comm_groups.c finds the groups here
    MPI_Datatype type;   // MPI_FLOAT or MPI_DOUBLE
} MpiComm;

static MpiComm *impl(Comm *c) { return c->impl; }

static void mpi_send(Comm *c, int to_stage, const void *buf, size_t n, int tag, CommHandle *h) {
    MPI_Request *req = xmalloc(sizeof *req);
    mpiCheck(MPI_Isend(buf, (int)n, impl(c)->type, to_stage, tag, impl(c)->groups.pipeline, req));
    h->impl = req;
}

static void mpi_recv(Comm *c, int from_stage, void *buf, size_t n, int tag) {
    mpiCheck(MPI_Recv(buf, (int)n, impl(c)->type, from_stage, tag, impl(c)->groups.pipeline, MPI_STATUS_IGNORE));
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
    mpiCheck(MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, impl(c)->type, MPI_SUM, impl(c)->groups.dp, req));
    h->impl = req;
}

static void mpi_dp_reduce_scatter(Comm *c, const void *full, void *shard, size_t n) {
    if (c->dp == 1) { memcpy(shard, full, n * c->elem_size); return; }
    mpiCheck(MPI_Reduce_scatter_block(full, shard, (int)n, impl(c)->type, MPI_SUM, impl(c)->groups.dp));
}

static void mpi_dp_allgather(Comm *c, void *full, size_t n) {
    if (c->dp == 1) return;
    mpiCheck(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, full, (int)n, impl(c)->type, impl(c)->groups.dp));
}

static void mpi_dp_broadcast(Comm *c, void *buf, size_t n) {
    if (c->dp == 1) return;
    mpiCheck(MPI_Bcast(buf, (int)n, impl(c)->type, 0, impl(c)->groups.dp));
}

static void mpi_tie_allreduce(Comm *c, void *buf, size_t n) {
    if (impl(c)->groups.tie == MPI_COMM_NULL) return;
    mpiCheck(MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, impl(c)->type, MPI_SUM, impl(c)->groups.tie));
}

Comm *comm_mpi_create(int pp, size_t elem_size) {
    MpiComm *m = xcalloc(1, sizeof *m);
    m->type = elem_size == sizeof(double) ? MPI_DOUBLE : MPI_FLOAT;
    Comm *c = comm_groups_create("mpi", pp, elem_size, m);
    c->send = mpi_send;
    c->recv = mpi_recv;
    c->wait = mpi_wait;
    c->dp_allreduce_start = mpi_dp_allreduce_start;
    c->dp_reduce_scatter = mpi_dp_reduce_scatter;
    c->dp_allgather = mpi_dp_allgather;
    c->tie_allreduce = mpi_tie_allreduce;
    c->dp_broadcast = mpi_dp_broadcast;
    c->free = comm_groups_free;
    return c;
}
