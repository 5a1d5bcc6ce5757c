// comm_nccl.c: the Comm interface over NCCL, for ranks running the CUDA backend (docs/design.md section 7).
// The semantics are those of comm_mpi.c; what differs is how completion is expressed.
//
// Communicators. The MPI sub-communicators of comm_mpi.c (a pipeline: the ranks of one dp replica,
// by stage; a dp group: the ranks holding one stage, by dp index; the tie pair: first and last
// stage of a pipeline when pp > 1) carry each NCCL communicator's unique id, broadcast from their
// rank 0; NCCL ranks equal the MPI sub-communicator ranks. Host scalars (dp_sum_doubles,
// world_sum, world_max) and the barrier stay on MPI: they are host data.
//
// Ordering. No call blocks the host on the GPU. Receives, collectives and the wait for a send are
// queued on the compute stream (the backend's), so every op queued after them also runs after
// them: stream order replaces MPI's blocking. Sends and the dp all-reduce buckets run on streams
// of their own, after an event recorded on the compute stream (so they see the finished data)
// while the compute stream goes on with the backward pass; their CommHandle holds an event
// recorded after them, and wait() makes the compute stream wait for it, after which the buffer
// may be overwritten by anything queued later.
//
// Deadlock freedom of the pipeline under 1F1B. Two NCCL facts shape the design:
//  (a) a send or receive kernel holds its stream until the peer's matching kernel runs (messages
//      of activation size are not buffered), and
//  (b) NCCL runs one communicator's kernels on a rank in the order they were launched, whatever
//      their streams (each launch waits for the communicator's previous one: enqueue.cc).
// One communicator for both directions deadlocks 1F1B: with pp = 2 and two micro-batches, stage 0
// launches send(act 1) then recv(grad 0) while stage 1 launches send(grad 0) then recv(act 1);
// by (b) each receive waits behind its own rank's send, by (a) each send waits for the other
// rank's receive. (MPI does not see this: its sends progress in the background.) So each pipeline
// has two communicators, one per direction, chosen by the peer's side (the tag is not matched;
// messages between two stages in one direction arrive in the order sent, which is the order the
// trainer receives them):
//  - `down` carries activations (stage s to s + 1): stage s launches on it recv(act i) from s - 1
//    and send(act i) to s + 1 for i = 0, 1, ... The i-th send of s meets the i-th receive of
//    s + 1; a wait along this chain ends at the last stage, which only receives, so `down` alone
//    has no cycle. `up` is the mirror image for gradients (stage s + 1 to s), ending at stage 0.
//  - Between the two directions the only links are the compute stream (receives and waits) and
//    the host (ops that return host data synchronise the compute stream), i.e. the points where
//    the MPI transport blocks the host, plus one link from (b): stage s's receive of act i + 1 runs
//    after its send of act i has met stage s + 1's receive, which s + 1 posts at its forward of
//    micro-batch i; in 1F1B that forward needs nothing of stage s beyond its forward of i.
//  - In a step no rank needs two of its own p2p ops on one communicator to progress together, so
//    no ncclGroupStart/End is needed there (a group would tie a send to a receive that the
//    schedule wants apart); only the start-up exchange (first_transfers) groups them.
// Concurrent communicators. NCCL's kernels of one operation wait on the device for the peers'
// matching kernels, so kernels of different communicators in flight at once must all fit on the
// device together, or one waits for SMs that another holds while that one waits for data: NCCL's
// documentation warns that concurrent operations on different communicators "might work provided
// they can fit within the GPU". Here a rank has at most four NCCL kernels in flight, one per
// stream: a send on `down` (down_stream) or `up` (up_stream) of each direction, a receive or a
// collective on the compute stream, a dp bucket (dp_stream). The rule: every communicator is
// created with maxCTAs = SMs / 4 (NCCL_MAX_CONCURRENT_COMMS), so that any four of them fit on the
// device at once whatever else is resident (compute kernels never wait for NCCL, so they drain).
// Operations on one communicator are serialised by NCCL itself (fact b); no two of the four
// streams ever carry the same communicator's work at the same time except `down`/`up` on the
// compute stream (receives), which (b) orders behind that communicator's sends.
// The rules above were checked by simulating this transport (facts a and b, one stream per send
// direction, host synchronisation after every compute-stream op) under train.c's step for
// pp <= 6, dp <= 3, m <= pp + 5: every step completes; with one communicator most deadlock.
// (One shared send stream, or the dp buckets on it too, also completes; separate streams only
// keep a gradient from queueing behind an activation or a bucket.) One constraint follows for
// everything else: a device-wide synchronisation (cudaDeviceSynchronize, or a plain cudaFree)
// while this rank has a send in flight waits for that send, i.e. makes it blocking, and blocking
// sends deadlock 1F1B. The backend never does one inside a step: its memory (alloc, free and every
// op's scratch) is stream-ordered, cudaMallocAsync / cudaFreeAsync on the compute stream (alloc
// then synchronises that stream only, a host synchronisation the simulation above assumes after
// every op); plain cudaMalloc / cudaFree appear only at start-up and shut-down
// (backend_cuda_create and _destroy, first_transfers below).
#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>
#include <string.h>
#include "../src/comm_groups.h"
#include "../src/common.h"
#include "backend_cuda.h"
#include "comm_nccl.h"

// Streams that may each have one NCCL kernel in flight: down sends, up sends, compute, dp.
#define NCCL_MAX_CONCURRENT_COMMS 4

// A failing NCCL or CUDA call is a broken device or network, never bad input: exit 1.
#define ncclCheck(call) do { ncclResult_t rc_ = (call); \
    if (rc_ != ncclSuccess) die(EXIT_FAILURE_OTHER, "NCCL error at %s:%d: %s: %s", __FILE__, __LINE__, #call, ncclGetErrorString(rc_)); } while (0)
#define cudaCheck(call) do { cudaError_t rc_ = (call); \
    if (rc_ != cudaSuccess) die(EXIT_FAILURE_OTHER, "CUDA error at %s:%d: %s: %s", __FILE__, __LINE__, #call, cudaGetErrorString(rc_)); } while (0)

// An event marking the end of one transfer in flight; recycled once waited for.
typedef struct Pending {
    cudaEvent_t done;
    struct Pending *next;       // free list
    struct Pending *all_next;   // every event made, for comm_free
} Pending;

typedef struct {
    CommGroups groups;          // first: comm_groups.c finds the MPI groups here
    ncclComm_t down, up;        // pipeline p2p by direction (NULL when pp = 1)
    ncclComm_t dp_nccl;         // NULL when dp = 1
    ncclComm_t tie_nccl;        // NULL off the tie pair
    ncclDataType_t type;        // ncclFloat (or ncclDouble for 8-byte elements)
    cudaStream_t compute;       // the backend's stream (not owned)
    cudaStream_t down_stream;   // sends of activations
    cudaStream_t up_stream;     // sends of gradients
    cudaStream_t dp_stream;     // dp all-reduce buckets
    cudaEvent_t ready;          // "the compute stream got here": consumed at once by one cudaStreamWaitEvent
    Pending *free_list, *all;
} NcclComm;

static NcclComm *impl(Comm *c) { return c->impl; }

// ---- events --------------------------------------------------------------------------------------

// Makes `stream` wait for everything queued so far on the compute stream. The event may be
// recorded again at once: a wait binds to the record that preceded it.
static void follow_compute(NcclComm *m, cudaStream_t stream) {
    cudaCheck(cudaEventRecord(m->ready, m->compute));
    cudaCheck(cudaStreamWaitEvent(stream, m->ready, 0));
}

// An event recorded on `stream` after the work just queued there.
static Pending *mark_end(NcclComm *m, cudaStream_t stream) {
    Pending *p = m->free_list;
    if (p) {
        m->free_list = p->next;
    } else {
        p = xcalloc(1, sizeof *p);
        cudaCheck(cudaEventCreateWithFlags(&p->done, cudaEventDisableTiming));
        p->all_next = m->all;
        m->all = p;
    }
    cudaCheck(cudaEventRecord(p->done, stream));
    return p;
}

// ---- pipeline point to point ---------------------------------------------------------------------

static void check_peer(Comm *c, int peer, const char *what) {
    if (peer < 0 || peer >= c->pp || peer == c->stage)
        die(EXIT_FAILURE_OTHER, "internal: %s stage %d from stage %d of %d", what, peer, c->stage, c->pp);
}

static void nccl_send(Comm *c, int to_stage, const void *buf, size_t n, int tag, CommHandle *h) {
    (void)tag;   // NCCL has no tags: see "Deadlock freedom" above for why order is enough
    NcclComm *m = impl(c);
    check_peer(c, to_stage, "send to");
    h->impl = NULL;
    if (n == 0) return;
    int down = to_stage > c->stage;
    cudaStream_t stream = down ? m->down_stream : m->up_stream;
    follow_compute(m, stream);
    ncclCheck(ncclSend(buf, n, m->type, to_stage, down ? m->down : m->up, stream));
    h->impl = mark_end(m, stream);
}

static void nccl_recv(Comm *c, int from_stage, void *buf, size_t n, int tag) {
    (void)tag;
    NcclComm *m = impl(c);
    check_peer(c, from_stage, "receive from");
    if (n == 0) return;
    ncclCheck(ncclRecv(buf, n, m->type, from_stage, from_stage < c->stage ? m->down : m->up, m->compute));
}

static void nccl_wait(Comm *c, CommHandle *h) {
    if (!h->impl) return;
    NcclComm *m = impl(c);
    Pending *p = h->impl;
    cudaCheck(cudaStreamWaitEvent(m->compute, p->done, 0));
    p->next = m->free_list;
    m->free_list = p;
    h->impl = NULL;
}

// ---- data parallel -------------------------------------------------------------------------------

// Overlaps with the rest of the backward pass: the bucket's gradients are final once the compute
// stream has passed this point, and nothing queued later writes them before wait().
static void nccl_dp_allreduce_start(Comm *c, void *buf, size_t n, CommHandle *h) {
    NcclComm *m = impl(c);
    h->impl = NULL;
    if (c->dp == 1 || n == 0) return;
    follow_compute(m, m->dp_stream);
    ncclCheck(ncclAllReduce(buf, buf, n, m->type, ncclSum, m->dp_nccl, m->dp_stream));
    h->impl = mark_end(m, m->dp_stream);
}

static void nccl_dp_reduce_scatter(Comm *c, const void *full, void *shard, size_t n) {
    NcclComm *m = impl(c);
    if (c->dp == 1) {
        cudaCheck(cudaMemcpyAsync(shard, full, n * c->elem_size, cudaMemcpyDeviceToDevice, m->compute));
        return;
    }
    ncclCheck(ncclReduceScatter(full, shard, n, m->type, ncclSum, m->dp_nccl, m->compute));
}

static void nccl_dp_allgather(Comm *c, void *full, size_t n) {
    NcclComm *m = impl(c);
    if (c->dp == 1) return;
    // In place: NCCL reads this replica's part from where it already lies in `full`.
    const char *mine = (const char *)full + (size_t)c->dp_index * n * c->elem_size;
    ncclCheck(ncclAllGather(mine, full, n, m->type, m->dp_nccl, m->compute));
}

static void nccl_dp_broadcast(Comm *c, void *buf, size_t n) {
    NcclComm *m = impl(c);
    if (c->dp == 1) return;
    ncclCheck(ncclBroadcast(buf, buf, n, m->type, 0, m->dp_nccl, m->compute));
}

static void nccl_tie_allreduce(Comm *c, void *buf, size_t n) {
    NcclComm *m = impl(c);
    if (!m->tie_nccl) return;
    ncclCheck(ncclAllReduce(buf, buf, n, m->type, ncclSum, m->tie_nccl, m->compute));
}

// ---- set-up and tear-down ------------------------------------------------------------------------

// A NCCL communicator over the ranks of `group` (NCCL rank = MPI rank), its id from group rank 0.
// Collective over `group`; every rank creates its communicators in the same order (pipeline down,
// up, dp, tie), so the blocking initialisations cannot wait on each other in a cycle.
static ncclComm_t nccl_over(MPI_Comm group) {
    int rank, size;
    mpiCheck(MPI_Comm_rank(group, &rank));
    mpiCheck(MPI_Comm_size(group, &size));
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (rank == 0) ncclCheck(ncclGetUniqueId(&id));
    mpiCheck(MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, group));
    // Kernels of up to NCCL_MAX_CONCURRENT_COMMS communicators may be in flight at once on this
    // rank: each gets at most its share of the SMs ("Concurrent communicators" above).
    int device, sms;
    cudaCheck(cudaGetDevice(&device));
    cudaCheck(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.maxCTAs = sms / NCCL_MAX_CONCURRENT_COMMS > 0 ? sms / NCCL_MAX_CONCURRENT_COMMS : 1;
    ncclComm_t comm;
    ncclCheck(ncclCommInitRankConfig(&comm, size, id, rank, &config));
    return comm;
}

// Transfers get the highest stream priority, so that their kernels start as soon as the data is
// ready instead of queueing behind the compute stream's.
static cudaStream_t comm_stream(void) {
    int least, greatest;
    cudaCheck(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    cudaStream_t s;
    cudaCheck(cudaStreamCreateWithPriority(&s, cudaStreamNonBlocking, greatest));
    return s;
}

// One tiny transfer on every communicator, in the same order on every rank: NCCL sets up its
// connections at a communicator's first transfers (blocking the host until the peers join), so a
// broken network or topology fails here, at start-up, rather than inside the first step, and the
// first step's time is mostly compute. (Larger messages may still open further channels later.)
static void first_transfers(Comm *c, NcclComm *m) {
    char *buf;
    cudaCheck(cudaMalloc((void **)&buf, 2 * c->elem_size));
    cudaCheck(cudaMemsetAsync(buf, 0, 2 * c->elem_size, m->compute));
    int s = c->stage, pp = c->pp;
    for (int dir = 0; dir < 2 && pp > 1; dir++) {
        ncclComm_t comm = dir == 0 ? m->down : m->up;
        int to = dir == 0 ? s + 1 : s - 1, from = dir == 0 ? s - 1 : s + 1;
        // One group: a middle stage's send and receive must progress together here.
        ncclCheck(ncclGroupStart());
        if (to >= 0 && to < pp) ncclCheck(ncclSend(buf, 1, m->type, to, comm, m->compute));
        if (from >= 0 && from < pp) ncclCheck(ncclRecv(buf + c->elem_size, 1, m->type, from, comm, m->compute));
        ncclCheck(ncclGroupEnd());
    }
    if (m->dp_nccl) ncclCheck(ncclAllReduce(buf, buf, 1, m->type, ncclSum, m->dp_nccl, m->compute));
    if (m->tie_nccl) ncclCheck(ncclAllReduce(buf, buf, 1, m->type, ncclSum, m->tie_nccl, m->compute));
    cudaCheck(cudaStreamSynchronize(m->compute));
    cudaCheck(cudaFree(buf));
}

// Every communicator once at the largest message the run sends on it: NCCL may open further
// channels and buffers for larger messages than first_transfers' one element, and that set-up
// (blocking until the peers join) belongs at start-up, not inside a step whose sends 1F1B needs
// to progress on their own. Same order on every rank: down, up, dp, tie.
static void nccl_warm_up(Comm *c, size_t p2p_n, size_t dp_n, size_t tie_n) {
    NcclComm *m = impl(c);
    size_t n = p2p_n > dp_n ? p2p_n : dp_n;
    if (tie_n > n) n = tie_n;
    if (n == 0) return;
    char *buf;
    cudaCheck(cudaMalloc((void **)&buf, 2 * n * c->elem_size));
    cudaCheck(cudaMemsetAsync(buf, 0, 2 * n * c->elem_size, m->compute));
    int s = c->stage, pp = c->pp;
    for (int dir = 0; dir < 2 && pp > 1 && p2p_n > 0; dir++) {
        ncclComm_t comm = dir == 0 ? m->down : m->up;
        int to = dir == 0 ? s + 1 : s - 1, from = dir == 0 ? s - 1 : s + 1;
        ncclCheck(ncclGroupStart());
        if (to >= 0 && to < pp) ncclCheck(ncclSend(buf, p2p_n, m->type, to, comm, m->compute));
        if (from >= 0 && from < pp) ncclCheck(ncclRecv(buf + n * c->elem_size, p2p_n, m->type, from, comm, m->compute));
        ncclCheck(ncclGroupEnd());
    }
    if (m->dp_nccl && dp_n > 0) ncclCheck(ncclAllReduce(buf, buf, dp_n, m->type, ncclSum, m->dp_nccl, m->compute));
    if (m->tie_nccl && tie_n > 0) ncclCheck(ncclAllReduce(buf, buf, tie_n, m->type, ncclSum, m->tie_nccl, m->compute));
    cudaCheck(cudaStreamSynchronize(m->compute));
    cudaCheck(cudaFree(buf));
}

static void close_nccl(ncclComm_t comm) {
    if (!comm) return;
    ncclCheck(ncclCommFinalize(comm));
    ncclCheck(ncclCommDestroy(comm));
}

static void nccl_free(Comm *c) {
    NcclComm *m = impl(c);
    cudaCheck(cudaStreamSynchronize(m->compute));
    cudaCheck(cudaStreamSynchronize(m->down_stream));
    cudaCheck(cudaStreamSynchronize(m->up_stream));
    cudaCheck(cudaStreamSynchronize(m->dp_stream));
    // Same order on every rank as at creation: finalisation flushes collectively.
    close_nccl(m->down);
    close_nccl(m->up);
    close_nccl(m->dp_nccl);
    close_nccl(m->tie_nccl);
    for (Pending *p = m->all, *next; p; p = next) {
        next = p->all_next;
        cudaCheck(cudaEventDestroy(p->done));
        free(p);
    }
    cudaCheck(cudaEventDestroy(m->ready));
    cudaCheck(cudaStreamDestroy(m->down_stream));
    cudaCheck(cudaStreamDestroy(m->up_stream));
    cudaCheck(cudaStreamDestroy(m->dp_stream));
    comm_groups_free(c);
}

Comm *comm_nccl_create(int pp, size_t elem_size) {
    if (elem_size != sizeof(float) && elem_size != sizeof(double))
        die(EXIT_FAILURE_OTHER, "internal: the NCCL transport moves 4- or 8-byte floats, not %zu-byte ones", elem_size);
    NcclComm *m = xcalloc(1, sizeof *m);
    m->type = elem_size == sizeof(double) ? ncclDouble : ncclFloat;
    Comm *c = comm_groups_create("nccl", pp, elem_size, m);

    m->compute = (cudaStream_t)backend_cuda_stream();
    m->down_stream = comm_stream();
    m->up_stream = comm_stream();
    m->dp_stream = comm_stream();
    cudaCheck(cudaEventCreateWithFlags(&m->ready, cudaEventDisableTiming));
    if (pp > 1) {
        m->down = nccl_over(m->groups.pipeline);
        m->up = nccl_over(m->groups.pipeline);
    }
    if (c->dp > 1) m->dp_nccl = nccl_over(m->groups.dp);
    if (m->groups.tie != MPI_COMM_NULL) m->tie_nccl = nccl_over(m->groups.tie);
    first_transfers(c, m);

    c->send = nccl_send;
    c->recv = nccl_recv;
    c->wait = nccl_wait;
    c->dp_allreduce_start = nccl_dp_allreduce_start;
    c->dp_reduce_scatter = nccl_dp_reduce_scatter;
    c->dp_allgather = nccl_dp_allgather;
    c->tie_allreduce = nccl_tie_allreduce;
    c->dp_broadcast = nccl_dp_broadcast;
    c->warm_up = nccl_warm_up;
    c->free = nccl_free;
    return c;
}
