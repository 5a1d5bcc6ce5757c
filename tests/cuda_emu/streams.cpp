// streams.cpp (emulated CUDA, tests/cuda_emu): stream order for work that cannot run eagerly.
//
// Kernels, copies, memsets, cuBLAS and cuFFT run on the host thread when they are issued
// (runtime.cpp, libs.cpp): nothing else could run them, and they never wait for another rank. An
// NCCL operation may wait for its peers (a send until the matching receive runs), so it cannot run
// on the host thread without blocking it where a GPU's host runs ahead. Each stream therefore has
// a queue and one worker thread that runs the queued items in order: NCCL operations
// (nccl_mpi.cpp) and waits for events recorded on other streams (cudaStreamWaitEvent).
//
// Eager work on a stream first waits until that stream's queue is empty (emu_stream_drain): it
// then runs after everything issued before it on the stream, and what is queued after it sees its
// result, as on a GPU. Events record a position in a queue; cudaStreamWaitEvent queues a wait for
// that position on the waiting stream (unless it was reached already).
//
// Why this does not invent deadlocks in entrank's 1F1B schedule: the only waits added to what a
// GPU does are the host's, at the next eager op on a stream whose queue holds NCCL work; in the
// trainer that is the compute stream after a receive, a collective, or wait() on a send, i.e.
// exactly the points where the MPI transport blocks the host. comm_nccl.c's design note shows the
// schedule deadlock-free under "host synchronisation after every compute-stream op", and the CPU
// trainer runs it over MPI. Sends and dp buckets run on their own streams' workers, so the host
// goes on as on a GPU. A program whose progress needs its host to run ahead of the compute
// stream's communication would be reported here although a GPU runs it: entrank has none.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "streams.h"   // after the standard headers: emu_device.h defines __noinline__

struct EmuQueue {
    int id;
    unsigned flags;
    std::deque<std::function<void()>> items;
    uint64_t queued = 0, done = 0;
    bool worker = false, stop = false;
    std::condition_variable wake;
};

// Never destroyed: detached workers may still wait on them while the process exits (destroying a
// condition variable that a thread waits on blocks the exit).
static std::mutex &mu = *new std::mutex;                                    // every queue's state
static std::condition_variable &progressed = *new std::condition_variable;  // some item completed
static std::map<cudaStream_t, EmuQueue *> queues;   // live streams; retired queues are kept for their marks
static EmuQueue &legacy_queue = *new EmuQueue{0, 0, {}, 0, 0, false, false, {}};
static int streams_made = 0;
static std::atomic<int64_t> activity_ns{0};   // steady clock: when host work or a queued item last ran

static void note_activity() {
    activity_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
int64_t emu_last_activity_ns() { return activity_ns; }

static EmuQueue *queue_of(cudaStream_t s) {
    if (!s) return &legacy_queue;
    auto it = queues.find(s);
    if (it == queues.end()) emu_fatal("stream %p was not created by cudaStreamCreate*", (void *)s);
    return it->second;
}

void emu_stream_register(cudaStream_t s, unsigned flags) {
    std::lock_guard<std::mutex> l(mu);
    queues[s] = new EmuQueue{++streams_made, flags, {}, 0, 0, false, false, {}};
}

int emu_stream_id(cudaStream_t s) {
    std::lock_guard<std::mutex> l(mu);
    return queue_of(s)->id;
}

static void work(EmuQueue *q) {
    std::unique_lock<std::mutex> l(mu);
    for (;;) {
        q->wake.wait(l, [q] { return q->stop || !q->items.empty(); });
        if (q->items.empty()) return;
        std::function<void()> run = std::move(q->items.front());
        l.unlock();
        run();
        l.lock();
        q->items.pop_front();
        q->done++;
        note_activity();
        progressed.notify_all();
    }
}

static void drain_locked(std::unique_lock<std::mutex> &l, EmuQueue *q) {
    progressed.wait(l, [q] { return q->done == q->queued; });
}

void emu_stream_drain(cudaStream_t s) {
    std::unique_lock<std::mutex> l(mu);
    if (!s)
        for (auto &e : queues)
            if (!(e.second->flags & cudaStreamNonBlocking)) drain_locked(l, e.second);
    drain_locked(l, queue_of(s));
    note_activity();   // eager work on `s` runs next
}

void emu_streams_drain_all() {
    std::unique_lock<std::mutex> l(mu);
    drain_locked(l, &legacy_queue);
    for (auto &e : queues) drain_locked(l, e.second);
}

bool emu_stream_idle(cudaStream_t s) {
    std::lock_guard<std::mutex> l(mu);
    EmuQueue *q = queue_of(s);
    return q->done == q->queued;
}

void emu_stream_retire(cudaStream_t s) {
    std::unique_lock<std::mutex> l(mu);
    EmuQueue *q = queue_of(s);
    drain_locked(l, q);
    q->stop = true;
    q->wake.notify_all();
    queues.erase(s);
}

void emu_stream_enqueue(cudaStream_t s, std::function<void()> run) {
    std::lock_guard<std::mutex> l(mu);
    EmuQueue *q = queue_of(s);
    q->items.push_back(std::move(run));
    q->queued++;
    if (!q->worker) {
        q->worker = true;
        // Detached: a worker idles in wait() and holds nothing at exit.
        std::thread(work, q).detach();
    }
    q->wake.notify_all();
}

EmuMark emu_stream_mark(cudaStream_t s) {
    std::lock_guard<std::mutex> l(mu);
    EmuQueue *q = queue_of(s);
    return EmuMark{q, q->queued};
}

bool emu_mark_reached(EmuMark m) {
    std::lock_guard<std::mutex> l(mu);
    return !m.q || m.q->done >= m.seq;
}

void emu_mark_wait(EmuMark m) {
    if (!m.q) return;
    std::unique_lock<std::mutex> l(mu);
    progressed.wait(l, [m] { return m.q->done >= m.seq; });
}

void emu_stream_wait_mark(cudaStream_t s, EmuMark m) {
    if (emu_mark_reached(m)) return;
    emu_stream_enqueue(s, [m] { emu_mark_wait(m); });
}
