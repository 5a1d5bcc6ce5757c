// comm.h: the communication interface the schedule and the optimizer use. One implementation per
// transport (MPI on the CPU, NCCL on the GPU) so that the schedule never names one. Buffers are
// backend device pointers of `elem_size`-byte floats; host scalars travel as doubles.
#pragma once
#include <stddef.h>

typedef struct {
    void *impl;          // transport request, NULL when nothing is in flight
} CommHandle;

typedef struct Comm Comm;

struct Comm {
    const char *name;    // "mpi"
    int world_rank, world_size;
    int dp, pp;          // world = dp x pp
    int dp_index, stage; // world_rank = dp_index * pp + stage
    size_t elem_size;    // bytes per float element of the buffers
    void *impl;

    // ---- pipeline: point to point within this rank's pipeline (same dp_index) --------------
    // Non-blocking send: buf must stay untouched until wait(h) returns.
    void (*send)(Comm *c, int to_stage, const void *buf, size_t n, int tag, CommHandle *h);
    void (*recv)(Comm *c, int from_stage, void *buf, size_t n, int tag);
    void (*wait)(Comm *c, CommHandle *h);           // no-op when nothing is in flight

    // ---- data parallel: sums over the dp replicas of this stage ---------------------------
    void (*dp_allreduce_start)(Comm *c, void *buf, size_t n, CommHandle *h);   // in place
    // shard (n) = sum over replicas of full[dp_index * n .. (dp_index + 1) * n)
    void (*dp_reduce_scatter)(Comm *c, const void *full, void *shard, size_t n);
    // full (dp * n) <- every replica's shard (n); this replica's part is already in place
    void (*dp_allgather)(Comm *c, void *full, size_t n);

    // host doubles summed over the dp replicas of this stage, in place (identical on each)
    void (*dp_sum_doubles)(Comm *c, double *x, int n);
    // buf (n floats) from dp replica 0 to the other replicas of this stage
    void (*dp_broadcast)(Comm *c, void *buf, size_t n);

    // ---- tied embedding: sum between the first and the last stage of this pipeline ---------
    void (*tie_allreduce)(Comm *c, void *buf, size_t n);

    // ---- host scalars ------------------------------------------------------------------------
    void (*world_sum)(Comm *c, double *x, int n);   // in place, identical result on every rank
    void (*world_max)(Comm *c, double *x, int n);
    void (*barrier)(Comm *c);

    // Collective, once before the first step: every connection set up at the largest message the
    // run sends on it (pipeline activations and gradients of p2p_n elements, dp transfers of up
    // to dp_n, the tied embedding's tie_n), so that no step pays for it or fails on it later.
    void (*warm_up)(Comm *c, size_t p2p_n, size_t dp_n, size_t tie_n);
    void (*free)(Comm *c);
};

// The MPI transport over MPI_COMM_WORLD (MPI must be initialised). pp must divide the world size.
Comm *comm_mpi_create(int pp, size_t elem_size);
