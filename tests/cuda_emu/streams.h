// streams.h (emulated CUDA, tests/cuda_emu): stream queues for the work that cannot run eagerly
// (NCCL operations, waits for events), one worker thread per stream. See streams.cpp.
#pragma once
#include <stdint.h>
#include <functional>
#include "cuda_runtime.h"

struct EmuQueue;
// A position in one stream's queue: reached when the queue has completed `seq` items.
struct EmuMark { EmuQueue *q; uint64_t seq; };

void emu_stream_register(cudaStream_t s, unsigned flags);
void emu_stream_retire(cudaStream_t s);          // waits for its queue, stops its worker
int emu_stream_id(cudaStream_t s);                // creation order; 0 is the legacy default stream
// Before host-issued (eager) work on `s`: waits until everything queued on it has run. The legacy
// default stream (null) also waits for every blocking stream, as CUDA's does.
void emu_stream_drain(cudaStream_t s);
void emu_streams_drain_all();                     // cudaDeviceSynchronize
bool emu_stream_idle(cudaStream_t s);
void emu_stream_enqueue(cudaStream_t s, std::function<void()> run);
EmuMark emu_stream_mark(cudaStream_t s);          // after everything queued on `s` so far
bool emu_mark_reached(EmuMark m);
void emu_mark_wait(EmuMark m);                    // the calling thread waits
void emu_stream_wait_mark(cudaStream_t s, EmuMark m);   // `s` waits (cudaStreamWaitEvent)
// steady_clock nanoseconds of the last eager work issued or queued item completed (the NCCL
// watchdog's measure of a busy rank).
int64_t emu_last_activity_ns();
