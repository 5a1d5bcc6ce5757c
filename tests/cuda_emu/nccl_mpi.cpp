// nccl_mpi.cpp (emulated CUDA, tests/cuda_emu): NCCL over MPI, one MPI process per NCCL rank.
//
// The rules of NCCL that entrank's design relies on (cuda/comm_nccl.c's design note) are kept:
//  - Ids and communicators. ncclGetUniqueId names this process and a serial number; a thread of
//    this process then acts as NCCL's bootstrap root: every member's ncclCommInitRank sends it
//    {nranks, rank, world rank} and gets back the world ranks by NCCL rank. The members then build
//    an MPI communicator of their own (MPI_Comm_create_group: collective over the members only),
//    MPI rank = NCCL rank, so that messages of two communicators never match each other.
//  - Order within a communicator (fact b). An operation (or a group's operations on one
//    communicator) takes a ticket when it is issued; the worker of its stream (streams.cpp) starts
//    it only when every earlier ticket of that communicator has completed, whatever its stream.
//  - Rendezvous (fact a). A send is MPI_Issend: it completes only once the matching receive has
//    started, so a schedule that would deadlock on a GPU deadlocks here.
//  - Groups. The operations between ncclGroupStart and ncclGroupEnd are posted together
//    (non-blocking MPI) and complete together: a group's sends and receives do not wait for each
//    other. A group's operations must share one stream (entrank's do).
//  - Collectives with NCCL's layout: ReduceScatter gives rank r block r of the reduced send
//    buffer, AllGather puts rank r's buffer in block r, in place when the send buffer is that
//    block. Reductions combine the ranks' contributions in rank order 0, 1, ..., on every rank
//    alike, so every rank holds the same bits.
//  - Concurrent communicators ("Concurrent communicators" in comm_nccl.c). An operation in flight
//    (started, not complete) holds its communicator's CTAs: maxCTAs (NCCL's default 32 when unset),
//    at most the device's SMs. When the operations in flight on this rank need more CTAs together
//    than the emulated device has SMs (EMU_SM_COUNT), the run is stopped with the operations
//    named: on a GPU the last one could not become resident until another finished, and that one
//    may be waiting for a peer that waits for the last.
// Watchdog: when no rank has done anything for EMU_NCCL_TIMEOUT seconds (default 30) — started or
// completed an NCCL operation, issued CUDA work on the host, finished a queued item — each rank
// with NCCL operations pending prints its communicators (label = creation order on the rank, rank,
// size, world ranks) and their pending operations (op, peer, count, stream, state), and the job is
// aborted (MPI_Abort, exit status 3) instead of hanging. The idle time is the world's least: a rank
// waiting for a peer that is still computing (emulated kernels are slow) is not deadlocked. Every
// rank's watchdog thread takes part in an MPI_Iallreduce every half second on its own communicator
// from MPI_Init to MPI_Finalize, which ends the rounds once every rank is finalising.
// EMU_STATS=1 prints, at MPI_Finalize, the most NCCL kernels (operations or groups) and CTAs this rank had in flight at once.
// MPI_Init and MPI_Init_thread are wrapped (MPI's profiling interface) to ask for
// MPI_THREAD_MULTIPLE: the stream workers and the bootstrap root call MPI next to the host thread.
#define OMPI_SKIP_MPICXX 1
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "nccl.h"
#include "streams.h"

namespace {
enum Kind { SEND, RECV, ALL_REDUCE, REDUCE_SCATTER, ALL_GATHER, BROADCAST };
const char *const KIND_NAME[] = {"ncclSend", "ncclRecv", "ncclAllReduce", "ncclReduceScatter", "ncclAllGather", "ncclBroadcast"};
enum State { QUEUED, WAITING_TURN, POSTED };
const uint32_t LIVE_COMM = 0x4EC1u, ID_MAGIC = 0x1DC0DEu;
const int NCCL_DEFAULT_MAX_CTAS = 32;
const int ABORT_STATUS = 3;
struct Id { uint32_t magic; int root, serial; };   // the bytes of an ncclUniqueId
using Clock = std::chrono::steady_clock;

struct Op {
    Kind kind;
    const void *send;
    void *recv;
    size_t count;   // elements: per rank for ReduceScatter's result and AllGather's input
    ncclDataType_t type;
    ncclRedOp_t red;
    int peer;       // Send/Recv: the peer; Broadcast: the root
    ncclComm *comm;
    cudaStream_t stream;
    int stream_id;
    uint64_t ticket = 0;
    State state = QUEUED;
    std::vector<char> tmp;   // collectives: every rank's contribution
};
}   // namespace

struct ncclComm {
    uint32_t magic;
    int label, nranks, rank, ctas;
    std::vector<int> world;   // world rank by NCCL rank
    MPI_Comm mpi;
    uint64_t issued = 0, completed = 0;   // tickets
    std::vector<Op *> pending;            // issued, not completed
};

// Never destroyed: a stream worker may still wait on them while the process exits.
static std::mutex &mu = *new std::mutex;                              // everything below
static std::condition_variable &turn = *new std::condition_variable;  // a ticket completed
static std::vector<ncclComm *> comms;
static std::vector<Op *> group_ops;
static int group_depth = 0, comms_made = 0, serials = 0, ctas_in_flight = 0, sm_count = 0;
static int kernels_in_flight = 0, most_kernels_in_flight = 0, most_ctas_in_flight = 0;   // EMU_STATS
static size_t pending_ops = 0;
static Clock::time_point last_progress;
static MPI_Comm boot = MPI_COMM_NULL, boot_create = MPI_COMM_NULL;
static std::atomic<int> roots_running{0};   // bootstrap roots (detached threads) still serving
static std::atomic<bool> stopping{false}, finalizing{false}, watchdog_done{false};
static MPI_Comm dog = MPI_COMM_NULL;
static bool watchdog_started = false;

static size_t elem(ncclDataType_t t) { return t == ncclFloat64 ? 8 : 4; }
static const char *type_name(ncclDataType_t t) { return t == ncclFloat64 ? "float64" : t == ncclInt32 ? "int32" : "float32"; }
static int world_rank() { int r = -1; PMPI_Comm_rank(MPI_COMM_WORLD, &r); return r; }

static void start_watchdog();

// ---- MPI with threads ----------------------------------------------------------------------------------------
extern "C" int MPI_Init_thread(int *argc, char ***argv, int, int *provided) {
    int rc = PMPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, provided);
    if (rc != MPI_SUCCESS) return rc;
    if (*provided < MPI_THREAD_MULTIPLE) emu_fatal("MPI_Init: the emulated NCCL needs MPI_THREAD_MULTIPLE, this MPI gives %d", *provided);
    // Collective over the world here, where every rank is: the bootstrap's own communicators.
    PMPI_Comm_dup(MPI_COMM_WORLD, &boot);
    PMPI_Comm_dup(MPI_COMM_WORLD, &boot_create);
    PMPI_Comm_dup(MPI_COMM_WORLD, &dog);
    start_watchdog();
    return rc;
}
extern "C" int MPI_Init(int *argc, char ***argv) {
    int provided;
    return MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided);
}
extern "C" int MPI_Finalize(void) {
    emu_streams_drain_all();
    const char *stats = getenv("EMU_STATS");
    if (stats && atoi(stats) && comms_made)
        fprintf(stderr, "cuda-emu: NCCL on world rank %d: at most %d kernels (an operation or a group) in flight at once, holding at most %d CTAs of %d SMs\n", world_rank(),
                most_kernels_in_flight, most_ctas_in_flight, sm_count);
    finalizing = true;
    while (watchdog_started && !watchdog_done) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    stopping = true;
    while (roots_running > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (boot != MPI_COMM_NULL) PMPI_Comm_free(&boot);
    if (boot_create != MPI_COMM_NULL) PMPI_Comm_free(&boot_create);
    if (dog != MPI_COMM_NULL) PMPI_Comm_free(&dog);
    return PMPI_Finalize();
}

// Waits for `n` requests, polling: a blocking wait would keep a core busy in Open MPI's progress
// loop while the other ranks' kernels need it. False when the run is being torn down (and
// `stoppable`).
static bool wait_all(int n, MPI_Request *req, MPI_Status *st, bool stoppable = true) {
    long pause_ns = 10000;
    for (;;) {
        int done = 0;
        MPI_Testall(n, req, &done, st);
        if (done) return true;
        if (stoppable && stopping) return false;
        struct timespec ts = {0, pause_ns};
        nanosleep(&ts, nullptr);
        pause_ns = std::min(pause_ns * 2, 1000000L);
    }
}

// ---- reports ----------------------------------------------------------------------------------------------------
static std::string describe(const Op *o) {
    char b[256];
    const char *state = o->state == QUEUED ? "queued behind earlier work of its stream"
                      : o->state == WAITING_TURN ? "waiting for an earlier operation of its communicator"
                                                 : "started, waiting for the peers";
    if (o->kind == SEND || o->kind == RECV)
        snprintf(b, sizeof b, "%s %zu x %s %s peer %d on stream #%d: %s", KIND_NAME[o->kind], o->count, type_name(o->type),
                 o->kind == SEND ? "to" : "from", o->peer, o->stream_id, state);
    else
        snprintf(b, sizeof b, "%s %zu x %s%s on stream #%d: %s", KIND_NAME[o->kind], o->count, type_name(o->type),
                 o->kind == BROADCAST ? (" from root " + std::to_string(o->peer)).c_str() : "", o->stream_id, state);
    return b;
}

static std::string comm_name(const ncclComm *c) {
    std::string s = "comm #" + std::to_string(c->label) + " (rank " + std::to_string(c->rank) + " of " + std::to_string(c->nranks) +
                    ", world ranks";
    for (int w : c->world) s += " " + std::to_string(w);
    return s + ", maxCTAs " + std::to_string(c->ctas) + ")";
}

static void watchdog(double timeout_s) {
    for (;;) {
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        double mine[2], world[2];   // seconds idle, finalising (1) or not (0): the least over the world
        {
            std::lock_guard<std::mutex> l(mu);
            int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
            int64_t last = std::max<int64_t>(emu_last_activity_ns(),
                                             std::chrono::duration_cast<std::chrono::nanoseconds>(last_progress.time_since_epoch()).count());
            mine[0] = (double)(now - last) * 1e-9;
            mine[1] = finalizing ? 1 : 0;
        }
        MPI_Request req;
        MPI_Iallreduce(mine, world, 2, MPI_DOUBLE, MPI_MIN, dog, &req);
        wait_all(1, &req, MPI_STATUS_IGNORE, false);
        if (world[1] == 1) break;
        std::unique_lock<std::mutex> l(mu);
        if (pending_ops == 0 || world[0] < timeout_s) continue;
        std::string r = "cuda-emu: ERROR: NCCL deadlock on world rank " + std::to_string(world_rank()) + ": no rank made progress for " +
                        std::to_string((int)world[0]) + " s (EMU_NCCL_TIMEOUT). Communicators of this rank, by creation order:\n";
        for (const ncclComm *c : comms) {
            r += "  " + comm_name(c) + ": " + (c->pending.empty() ? "nothing pending\n" : std::to_string(c->pending.size()) + " pending\n");
            for (const Op *o : c->pending) r += "    " + describe(o) + "\n";
        }
        fputs(r.c_str(), stderr);
        fflush(stderr);
        l.unlock();
        // The peers' watchdogs fire about now too: give them time to print before the job goes.
        std::this_thread::sleep_for(std::chrono::seconds(2));
        PMPI_Abort(MPI_COMM_WORLD, ABORT_STATUS);
    }
    watchdog_done = true;
}

static void start_watchdog() {
    if (watchdog_started) return;
    watchdog_started = true;
    const char *v = getenv("EMU_NCCL_TIMEOUT");
    double timeout = v && *v ? atof(v) : 30.0;
    if (!(timeout > 0)) emu_fatal("EMU_NCCL_TIMEOUT=%s: expected a positive number of seconds", v);
    last_progress = Clock::now();
    std::thread(watchdog, timeout).detach();
}

// ---- ids and communicators --------------------------------------------------------------------------------------
extern "C" const char *ncclGetErrorString(ncclResult_t r) { return r == ncclSuccess ? "no error" : "NCCL error (emulated)"; }

// Bootstrap messages of one id: a member joining (to the root), the root's answer (to a member,
// possibly in the root's own process, so the two must not match each other).
static int join_tag(int serial) { return 2 * serial; }
static int reply_tag(int serial) { return 2 * serial + 1; }

// The bootstrap root of one id: collects the members, answers each with the table.
static void serve_root(int serial) {
    std::vector<int> table;
    int n = -1;
    for (int got = 0; n < 0 || got < n; got++) {
        int msg[3];
        MPI_Request req;
        MPI_Status st;
        MPI_Irecv(msg, 3, MPI_INT, MPI_ANY_SOURCE, join_tag(serial), boot, &req);
        if (!wait_all(1, &req, &st)) {   // an id nobody used, at MPI_Finalize
            MPI_Cancel(&req);
            MPI_Request_free(&req);
            return;
        }
        if (n < 0) table.assign(n = msg[0], -1);
        if (msg[0] != n || msg[1] < 0 || msg[1] >= n || table[msg[1]] >= 0)
            emu_fatal("ncclCommInitRank: world rank %d joins id %d as rank %d of %d, but the id has %d ranks (rank taken: %s)", msg[2], serial,
                      msg[1], msg[0], n, msg[1] >= 0 && msg[1] < n && table[msg[1]] >= 0 ? "yes" : "no");
        table[msg[1]] = msg[2];
    }
    for (int w : table) MPI_Send(table.data(), n, MPI_INT, w, reply_tag(serial), boot);
}

extern "C" ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    int init = 0;
    MPI_Initialized(&init);
    if (!init || boot == MPI_COMM_NULL) emu_fatal("ncclGetUniqueId: the emulated NCCL runs over MPI: call MPI_Init first");
    memset(id, 0, sizeof *id);
    Id mine{ID_MAGIC, world_rank(), ++serials};
    memcpy(id->internal, &mine, sizeof mine);
    roots_running++;
    std::thread([](int serial) { serve_root(serial); roots_running--; }, mine.serial).detach();
    return ncclSuccess;
}

static ncclResult_t init_rank(ncclComm_t *out, int nranks, ncclUniqueId uid, int rank, int max_ctas) {
    Id id;
    memcpy(&id, uid.internal, sizeof id);
    if (id.magic != ID_MAGIC) emu_fatal("ncclCommInitRank: the id was not made by ncclGetUniqueId");
    if (nranks < 1 || rank < 0 || rank >= nranks) emu_fatal("ncclCommInitRank: rank %d of %d", rank, nranks);
    int msg[3] = {nranks, rank, world_rank()};
    auto *c = new ncclComm{LIVE_COMM, 0, nranks, rank, 0, std::vector<int>(nranks), MPI_COMM_NULL, 0, 0, {}};
    MPI_Send(msg, 3, MPI_INT, id.root, join_tag(id.serial), boot);
    MPI_Recv(c->world.data(), nranks, MPI_INT, id.root, reply_tag(id.serial), boot, MPI_STATUS_IGNORE);
    MPI_Group all, members;
    MPI_Comm_group(boot_create, &all);
    MPI_Group_incl(all, nranks, c->world.data(), &members);
    int world_size;
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    MPI_Comm_create_group(boot_create, members, id.serial * world_size + id.root, &c->mpi);
    MPI_Group_free(&members);
    MPI_Group_free(&all);
    int device = 0, sms = 0;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    c->ctas = std::min(max_ctas > 0 ? max_ctas : NCCL_DEFAULT_MAX_CTAS, sms);
    std::lock_guard<std::mutex> l(mu);
    sm_count = sms;
    c->label = ++comms_made;
    comms.push_back(c);
    *out = c;
    return ncclSuccess;
}

extern "C" ncclResult_t ncclCommInitRank(ncclComm_t *c, int nranks, ncclUniqueId id, int rank) { return init_rank(c, nranks, id, rank, -1); }
extern "C" ncclResult_t ncclCommInitRankConfig(ncclComm_t *c, int nranks, ncclUniqueId id, int rank, ncclConfig_t *config) {
    // NCCL refuses a CTA cap below one (the cap divides the SMs among concurrent communicators).
    if (config && config->maxCTAs != -1 && config->maxCTAs < 1) emu_fatal("ncclCommInitRankConfig: maxCTAs %d (must be >= 1)", config->maxCTAs);
    return init_rank(c, nranks, id, rank, config ? config->maxCTAs : -1);
}

static void check_comm(ncclComm_t c, const char *who) {
    if (!c || c->magic != LIVE_COMM) emu_fatal("%s: communicator %p is not live", who, (void *)c);
}

extern "C" ncclResult_t ncclCommFinalize(ncclComm_t c) {
    check_comm(c, "ncclCommFinalize");
    std::unique_lock<std::mutex> l(mu);
    turn.wait(l, [c] { return c->completed == c->issued; });
    return ncclSuccess;
}

extern "C" ncclResult_t ncclCommDestroy(ncclComm_t c) {
    ncclCommFinalize(c);
    {
        std::lock_guard<std::mutex> l(mu);
        c->magic = 0;   // kept: a later use is reported
        comms.erase(std::find(comms.begin(), comms.end(), c));
    }
    MPI_Comm_free(&c->mpi);
    return ncclSuccess;
}

// ---- running operations ------------------------------------------------------------------------------------------
template <typename T> static void reduce(T *out, const T *in, int ranks, size_t n, ncclRedOp_t red) {
    for (size_t i = 0; i < n; i++) {
        T v = in[i];
        for (int r = 1; r < ranks; r++) {
            T x = in[(size_t)r * n + i];
            v = red == ncclSum ? v + x : red == ncclProd ? v * x : red == ncclMax ? std::max(v, x) : std::min(v, x);
        }
        out[i] = v;
    }
}
static void reduce_any(Op *o, const char *in) {
    int n = o->comm->nranks;
    if (o->type == ncclFloat64) reduce((double *)o->recv, (const double *)in, n, o->count, o->red);
    else if (o->type == ncclInt32) reduce((int *)o->recv, (const int *)in, n, o->count, o->red);
    else reduce((float *)o->recv, (const float *)in, n, o->count, o->red);
}

static void post(Op *o, MPI_Request *req) {
    int bytes = (int)(o->count * elem(o->type)), n = o->comm->nranks;
    MPI_Comm m = o->comm->mpi;
    switch (o->kind) {
    case SEND: MPI_Issend(o->send, bytes, MPI_BYTE, o->peer, 0, m, req); break;
    case RECV: MPI_Irecv(o->recv, bytes, MPI_BYTE, o->peer, 0, m, req); break;
    case ALL_REDUCE:
    case ALL_GATHER:
        o->tmp.resize((size_t)n * bytes);
        MPI_Iallgather(o->send, bytes, MPI_BYTE, o->tmp.data(), bytes, MPI_BYTE, m, req);
        break;
    case REDUCE_SCATTER:
        o->tmp.resize((size_t)n * bytes);
        MPI_Ialltoall(o->send, bytes, MPI_BYTE, o->tmp.data(), bytes, MPI_BYTE, m, req);
        break;
    case BROADCAST:
        o->tmp.resize(bytes);
        if (o->comm->rank == o->peer) memcpy(o->tmp.data(), o->send, bytes);
        MPI_Ibcast(o->tmp.data(), bytes, MPI_BYTE, o->peer, m, req);
        break;
    }
}

static void finish(Op *o, const MPI_Status &st) {
    size_t bytes = o->count * elem(o->type);
    switch (o->kind) {
    case SEND: break;
    case RECV: {
        int got = 0;
        MPI_Get_count(&st, MPI_BYTE, &got);
        if ((size_t)got != bytes)
            emu_fatal("ncclRecv of %zu bytes from peer %d on comm #%d got a send of %d bytes (NCCL needs equal counts)", bytes, o->peer,
                      o->comm->label, got);
        break;
    }
    case ALL_REDUCE:
    case REDUCE_SCATTER: reduce_any(o, o->tmp.data()); break;
    case ALL_GATHER: memcpy(o->recv, o->tmp.data(), o->tmp.size()); break;
    case BROADCAST: memcpy(o->recv, o->tmp.data(), bytes); break;
    }
}

// The communicators of a launch, each once, in the order of first use.
static std::vector<ncclComm *> comms_of(const std::vector<Op *> &ops) {
    std::vector<ncclComm *> v;
    for (Op *o : ops)
        if (std::find(v.begin(), v.end(), o->comm) == v.end()) v.push_back(o->comm);
    return v;
}

// One launch (an operation, or a group's operations) on its stream's worker.
static void run_launch(const std::vector<Op *> &ops) {
    std::vector<ncclComm *> cs = comms_of(ops);
    int need = 0;
    {
        std::unique_lock<std::mutex> l(mu);
        for (Op *o : ops) o->state = WAITING_TURN;
        for (ncclComm *c : cs) {
            uint64_t t = 0;
            for (Op *o : ops)
                if (o->comm == c) t = o->ticket;
            turn.wait(l, [c, t] { return c->completed == t; });
            need += c->ctas;
        }
        for (Op *o : ops) o->state = POSTED;
        ctas_in_flight += need;
        kernels_in_flight++;
        most_kernels_in_flight = std::max(most_kernels_in_flight, kernels_in_flight);
        most_ctas_in_flight = std::max(most_ctas_in_flight, ctas_in_flight);
        last_progress = Clock::now();
        if (ctas_in_flight > sm_count) {
            std::string r;
            for (const ncclComm *c : comms)
                for (const Op *o : c->pending)
                    if (o->state == POSTED) r += "\n    " + comm_name(c) + ": " + describe(o);
            emu_fatal("NCCL operations in flight on world rank %d need %d CTAs together, the device has %d SMs: on a GPU the last could not "
                      "start until another finished, which may wait for it through a peer (comm_nccl.c, \"Concurrent communicators\"):%s",
                      world_rank(), ctas_in_flight, sm_count, r.c_str());
        }
    }
    std::vector<MPI_Request> req(ops.size());
    std::vector<MPI_Status> st(ops.size());
    for (size_t i = 0; i < ops.size(); i++) post(ops[i], &req[i]);
    if (!wait_all((int)ops.size(), req.data(), st.data())) return;
    for (size_t i = 0; i < ops.size(); i++) finish(ops[i], st[i]);
    std::lock_guard<std::mutex> l(mu);
    for (ncclComm *c : cs) c->completed++;
    for (Op *o : ops) {
        auto &p = o->comm->pending;
        p.erase(std::find(p.begin(), p.end(), o));
        delete o;
    }
    ctas_in_flight -= need;
    kernels_in_flight--;
    pending_ops -= ops.size();
    last_progress = Clock::now();
    turn.notify_all();
}

// Issues a launch: tickets in issue order, then onto the stream's queue.
static void launch(std::vector<Op *> ops) {
    if (ops.empty()) return;
    cudaStream_t s = ops[0]->stream;
    for (Op *o : ops)
        if (o->stream != s)
            emu_fatal("ncclGroupEnd: the group's operations use streams #%d and #%d (the emulated NCCL takes one stream per group)", ops[0]->stream_id,
                      o->stream_id);
    {
        std::lock_guard<std::mutex> l(mu);
        if (pending_ops == 0) last_progress = Clock::now();
        for (ncclComm *c : comms_of(ops)) {
            uint64_t t = c->issued++;
            for (Op *o : ops)
                if (o->comm == c) {
                    o->ticket = t;
                    c->pending.push_back(o);
                }
        }
        pending_ops += ops.size();
    }
    emu_stream_enqueue(s, [ops] { run_launch(ops); });
}

static ncclResult_t issue(Kind kind, const void *send, void *recv, size_t count, ncclDataType_t type, ncclRedOp_t red, int peer, ncclComm_t c,
                          cudaStream_t s) {
    const char *who = KIND_NAME[kind];
    check_comm(c, who);
    emu_check_stream(s, who);
    if (type != ncclFloat32 && type != ncclFloat64 && type != ncclInt32) emu_fatal("%s: data type %d", who, (int)type);
    size_t bytes = count * elem(type), n = (size_t)c->nranks;
    if (bytes * n > (size_t)0x7fffffff) emu_fatal("%s: %zu bytes per rank: over what one MPI message of the emulator carries", who, bytes);
    if ((kind == SEND || kind == RECV || kind == BROADCAST) && (peer < 0 || peer >= c->nranks))
        emu_fatal("%s: %s %d on a communicator of %d ranks", who, kind == BROADCAST ? "root" : "peer", peer, c->nranks);
    char what[96];
    snprintf(what, sizeof what, "%s send buffer", who);
    if (kind == SEND || kind == ALL_GATHER || kind == ALL_REDUCE || (kind == BROADCAST && c->rank == peer)) emu_check_device_range(send, bytes, what);
    if (kind == REDUCE_SCATTER) emu_check_device_range(send, bytes * n, what);
    snprintf(what, sizeof what, "%s receive buffer", who);
    if (kind == ALL_GATHER) emu_check_device_range(recv, bytes * n, what);
    else if (kind != SEND) emu_check_device_range(recv, bytes, what);
    Op *o = new Op{kind, send, recv, count, type, red, peer, c, s, emu_stream_id(s), 0, QUEUED, {}};
    if (group_depth > 0) group_ops.push_back(o);
    else launch({o});
    return ncclSuccess;
}

extern "C" ncclResult_t ncclGroupStart(void) { group_depth++; return ncclSuccess; }
extern "C" ncclResult_t ncclGroupEnd(void) {
    if (group_depth == 0) emu_fatal("ncclGroupEnd without ncclGroupStart");
    if (--group_depth == 0) {
        std::vector<Op *> ops;
        ops.swap(group_ops);
        launch(ops);
    }
    return ncclSuccess;
}

extern "C" ncclResult_t ncclSend(const void *buf, size_t n, ncclDataType_t t, int peer, ncclComm_t c, cudaStream_t s) {
    return issue(SEND, buf, nullptr, n, t, ncclSum, peer, c, s);
}
extern "C" ncclResult_t ncclRecv(void *buf, size_t n, ncclDataType_t t, int peer, ncclComm_t c, cudaStream_t s) {
    return issue(RECV, nullptr, buf, n, t, ncclSum, peer, c, s);
}
extern "C" ncclResult_t ncclAllReduce(const void *s, void *r, size_t n, ncclDataType_t t, ncclRedOp_t op, ncclComm_t c, cudaStream_t st) {
    return issue(ALL_REDUCE, s, r, n, t, op, 0, c, st);
}
// `n` is the count each rank receives; the send buffer holds nranks * n.
extern "C" ncclResult_t ncclReduceScatter(const void *s, void *r, size_t n, ncclDataType_t t, ncclRedOp_t op, ncclComm_t c, cudaStream_t st) {
    return issue(REDUCE_SCATTER, s, r, n, t, op, 0, c, st);
}
// `n` is the count each rank sends; the receive buffer holds nranks * n.
extern "C" ncclResult_t ncclAllGather(const void *s, void *r, size_t n, ncclDataType_t t, ncclComm_t c, cudaStream_t st) {
    return issue(ALL_GATHER, s, r, n, t, ncclSum, 0, c, st);
}
extern "C" ncclResult_t ncclBroadcast(const void *s, void *r, size_t n, ncclDataType_t t, int root, ncclComm_t c, cudaStream_t st) {
    return issue(BROADCAST, s, r, n, t, ncclSum, root, c, st);
}
