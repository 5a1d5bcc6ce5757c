// runtime.cpp (emulated CUDA, tests/cuda_emu): the CUDA runtime on the host, the block scheduler
// that runs each CUDA thread as a fiber, and the checks a GPU does not make.
//
// Memory: a device allocation is host memory registered in a table (base -> bytes); fresh memory
// holds 0xFF bytes (NaN as floats). EMU_FENCE=1 maps each allocation so that it ends right before
// an inaccessible page (one before it too): an index past the end faults, and the SIGSEGV handler
// names the kernel, block and thread. Copies and memsets check both sides and the direction.
// Streams and events are checked handles. Work issued on the host runs eagerly, after the stream's
// queued work (NCCL operations, event waits: streams.cpp) has run; cudaFree synchronises the device.
//
// Kernels: the blocks of a launch run one after another; within a block every thread is a fiber
// that runs until it waits (at __syncthreads or a warp primitive) or exits. When all have stopped,
// the scheduler releases what CUDA would release, or reports why the block cannot go on:
//   - a warp primitive whose mask names a lane that does not exist (a partial warp), that has
//     exited, that waits elsewhere (another primitive, another mask, __syncthreads), a lane that
//     calls with a mask not naming itself, a shuffle reading a lane outside the mask;
//   - __syncthreads reached at different sites, or reached while part of a warp has exited.
// EMU_SCHED=forward|reverse|random:SEED orders threads between waits and the blocks of a grid;
// EMU_TRACE=FILE writes one line per launch with a hash of every allocation a pointer argument
// points into: identical files under the schedules = results independent of thread/block order.
// EMU_STATS=1 prints the launches per kernel at exit.
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cuda_runtime.h"
#include "streams.h"

#if defined(__SANITIZE_ADDRESS__)
#define EMU_ASAN 1
#include <sanitizer/common_interface_defs.h>
#else
#define EMU_ASAN 0
#endif
#if defined(EMU_UCONTEXT) || !defined(__x86_64__)
#define EMU_USE_UCONTEXT 1
#include <ucontext.h>
#else
#define EMU_USE_UCONTEXT 0
#endif

// ---- reports ----------------------------------------------------------------------------------------
extern "C" void emu_fatal(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("cuda-emu: ERROR: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fflush(stderr);
    abort();
}

static void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("cuda-emu: warning: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static long env_long(const char *name, long fallback) {
    const char *v = getenv(name);
    return v && *v ? strtol(v, nullptr, 10) : fallback;
}

static cudaError_t last_error = cudaSuccess;
static cudaError_t fail(cudaError_t e) {
    if (e != cudaSuccess && last_error == cudaSuccess) last_error = e;
    return e;
}

// ---- device memory ------------------------------------------------------------------------------------
struct Allocation { size_t bytes; char *map; size_t map_bytes; };
static std::map<uintptr_t, Allocation> device;   // base -> allocation
static size_t device_bytes = 0;
static const size_t DEVICE_MEMORY = (size_t)16 << 30;

static int fenced() {
    static int v = -1;
    if (v < 0) v = (int)env_long("EMU_FENCE", 0);
    return v;
}

// The allocation holding p (one past its end counts), or null.
static const std::pair<const uintptr_t, Allocation> *owner(const void *p) {
    uintptr_t a = (uintptr_t)p;
    auto it = device.upper_bound(a);
    if (it == device.begin()) return nullptr;
    --it;
    return a <= it->first + it->second.bytes ? &*it : nullptr;
}

extern "C" int emu_is_device_pointer(const void *p) { return p && owner(p) != nullptr; }

extern "C" void emu_check_device_range(const void *p, size_t bytes, const char *what) {
    if (bytes == 0) return;
    auto *e = owner(p);
    if (!e) emu_fatal("%s: %p (%zu bytes) is not device memory", what, p, bytes);
    uintptr_t end = (uintptr_t)p + bytes, limit = e->first + e->second.bytes;
    if (end > limit)
        emu_fatal("%s: [%p, +%zu bytes) runs %zu bytes past the end of its allocation (%zu bytes at %p)", what, p, bytes,
                  (size_t)(end - limit), e->second.bytes, (void *)e->first);
}

static void check_host_range(const void *p, size_t bytes, const char *what) {
    if (bytes && owner(p)) emu_fatal("%s: %p is device memory where host memory belongs (wrong copy direction?)", what, p);
    if (bytes && !p) emu_fatal("%s: null host pointer", what);
}

static void *device_alloc(size_t bytes) {
    if (bytes > DEVICE_MEMORY - device_bytes) return nullptr;
    size_t n = bytes ? bytes : 1;
    Allocation a{bytes, nullptr, 0};
    char *p;
    if (fenced()) {
        // [guard page][... data, ending 16-byte aligned at the next guard][guard page]
        size_t page = (size_t)sysconf(_SC_PAGESIZE), n16 = (n + 15) / 16 * 16, data = (n16 + page - 1) / page * page;
        a.map_bytes = data + 2 * page;
        a.map = (char *)mmap(nullptr, a.map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (a.map == MAP_FAILED) return nullptr;
        mprotect(a.map, page, PROT_NONE);
        mprotect(a.map + page + data, page, PROT_NONE);
        p = a.map + page + data - n16;
    } else {
        void *q = nullptr;
        if (posix_memalign(&q, 256, n)) return nullptr;   // cudaMalloc aligns to 256 bytes
        p = (char *)q;
    }
    memset(p, 0xFF, n);   // what a GPU leaves in fresh memory is arbitrary: here NaN
    device[(uintptr_t)p] = a;
    device_bytes += bytes;
    return p;
}

static cudaError_t device_free(void *p, const char *what) {
    if (!p) return cudaSuccess;
    auto it = device.find((uintptr_t)p);
    if (it == device.end()) {
        auto *e = owner(p);
        if (e) emu_fatal("%s(%p): points inside the allocation at %p, not at its start", what, p, (void *)e->first);
        emu_fatal("%s(%p): not a live device allocation (freed twice, or host memory)", what, p);
    }
    Allocation a = it->second;
    device_bytes -= a.bytes;
    device.erase(it);
    if (a.map) munmap(a.map, a.map_bytes);
    else free(p);
    return cudaSuccess;
}

// ---- streams and events: checked handles --------------------------------------------------------------
static const uint32_t LIVE_STREAM = 0x57AEA111u, LIVE_EVENT = 0xE7E27111u, DEAD = 0xDEADu;
struct CUstream_st { uint32_t magic; unsigned flags; };
struct CUevent_st { uint32_t magic; int recorded; EmuMark mark; };

extern "C" void emu_check_stream(cudaStream_t s, const char *what) {
    if (s && s->magic != LIVE_STREAM) emu_fatal("%s: stream %p is %s", what, (void *)s, s->magic == DEAD ? "destroyed" : "not a stream");
}
static void check_event(cudaEvent_t e, const char *what) {
    if (!e || e->magic != LIVE_EVENT) emu_fatal("%s: event %p is %s", what, (void *)e, e && e->magic == DEAD ? "destroyed" : "not an event");
}

extern "C" {
cudaError_t cudaGetDeviceCount(int *count) { *count = 1; return cudaSuccess; }
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice); }
cudaError_t cudaGetDevice(int *d) { *d = 0; return cudaSuccess; }
cudaError_t cudaDeviceGetAttribute(int *value, enum cudaDeviceAttr attr, int device) {
    cudaDeviceProp p;
    cudaError_t rc = cudaGetDeviceProperties(&p, device);
    if (rc != cudaSuccess) return rc;
    if (attr != cudaDevAttrMultiProcessorCount) return cudaErrorInvalidValue;
    *value = p.multiProcessorCount;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d) {
    if (d != 0) return fail(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "emulated CUDA device (CPU)");
    p->totalGlobalMem = DEVICE_MEMORY;
    p->sharedMemPerBlock = 48 << 10;
    p->warpSize = 32;
    p->maxThreadsPerBlock = 1024;
    p->maxThreadsDim[0] = p->maxThreadsDim[1] = 1024;
    p->maxThreadsDim[2] = 64;
    p->maxGridSize[0] = 0x7fffffff;
    p->maxGridSize[1] = p->maxGridSize[2] = 65535;
    p->multiProcessorCount = (int)env_long("EMU_SM_COUNT", 4);   // grid-stride grids scale with it
    p->major = 9;
    p->minor = 0;
    return cudaSuccess;
}
const char *cudaGetErrorName(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    default: return "cudaError (emulated)";
    }
}
const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInsufficientDriver: return "CUDA driver version is insufficient for CUDA runtime version";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    default: return "unknown error (emulated CUDA)";
    }
}
cudaError_t cudaGetLastError(void) { cudaError_t e = last_error; last_error = cudaSuccess; return e; }
cudaError_t cudaPeekAtLastError(void) { return last_error; }
cudaError_t cudaDeviceSynchronize(void) { emu_streams_drain_all(); return last_error; }
cudaError_t cudaDeviceReset(void) { return cudaSuccess; }
cudaError_t cudaRuntimeGetVersion(int *v) { *v = CUDART_VERSION; return cudaSuccess; }
cudaError_t cudaDriverGetVersion(int *v) { *v = CUDART_VERSION; return cudaSuccess; }
cudaError_t cudaMemGetInfo(size_t *f, size_t *t) { *f = DEVICE_MEMORY - device_bytes; *t = DEVICE_MEMORY; return cudaSuccess; }

cudaError_t cudaMalloc(void **ptr, size_t bytes) {
    if (!ptr) return fail(cudaErrorInvalidValue);
    *ptr = device_alloc(bytes);
    return *ptr ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}
// cudaFree waits for the device to be idle (comm_nccl.c relies on it not being called inside a step).
cudaError_t cudaFree(void *p) { emu_streams_drain_all(); return device_free(p, "cudaFree"); }
cudaError_t cudaMallocAsync(void **ptr, size_t bytes, cudaStream_t s) {
    emu_check_stream(s, "cudaMallocAsync");
    emu_stream_drain(s);
    return cudaMalloc(ptr, bytes);
}
cudaError_t cudaFreeAsync(void *p, cudaStream_t s) {
    emu_check_stream(s, "cudaFreeAsync");
    emu_stream_drain(s);
    return device_free(p, "cudaFreeAsync");
}
cudaError_t cudaMallocHost(void **ptr, size_t bytes) { *ptr = malloc(bytes ? bytes : 1); return *ptr ? cudaSuccess : fail(cudaErrorMemoryAllocation); }
cudaError_t cudaFreeHost(void *p) {
    if (p && owner(p)) emu_fatal("cudaFreeHost(%p): device memory", p);
    free(p);
    return cudaSuccess;
}

static cudaError_t copy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    if (bytes == 0) return cudaSuccess;
    if (kind == cudaMemcpyDefault)
        kind = (cudaMemcpyKind)((owner(src) ? 2 : 0) | (owner(dst) ? 1 : 0));   // 0 HtoH, 1 HtoD, 2 DtoH, 3 DtoD
    switch (kind) {
    case cudaMemcpyHostToDevice:
        emu_check_device_range(dst, bytes, "cudaMemcpy host-to-device destination");
        check_host_range(src, bytes, "cudaMemcpy host-to-device source");
        break;
    case cudaMemcpyDeviceToHost:
        emu_check_device_range(src, bytes, "cudaMemcpy device-to-host source");
        check_host_range(dst, bytes, "cudaMemcpy device-to-host destination");
        break;
    case cudaMemcpyDeviceToDevice:
        emu_check_device_range(dst, bytes, "cudaMemcpy device-to-device destination");
        emu_check_device_range(src, bytes, "cudaMemcpy device-to-device source");
        if ((const char *)dst < (const char *)src + bytes && (const char *)src < (const char *)dst + bytes && dst != src)
            emu_fatal("cudaMemcpy device-to-device: ranges at %p and %p (%zu bytes) overlap (undefined on a GPU)", dst, src, bytes);
        break;
    case cudaMemcpyHostToHost:
        check_host_range(dst, bytes, "cudaMemcpy host-to-host destination");
        check_host_range(src, bytes, "cudaMemcpy host-to-host source");
        break;
    default: return fail(cudaErrorInvalidMemcpyDirection);
    }
    memmove(dst, src, bytes);
    return cudaSuccess;
}
// The synchronous copy and memset run on the legacy default stream.
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    emu_stream_drain(nullptr);
    return copy(dst, src, bytes, kind);
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s) {
    emu_check_stream(s, "cudaMemcpyAsync");
    emu_stream_drain(s);
    return copy(dst, src, bytes, kind);
}
static cudaError_t set(void *dst, int value, size_t bytes, const char *who) {
    emu_check_device_range(dst, bytes, who);
    memset(dst, value, bytes);
    return cudaSuccess;
}
cudaError_t cudaMemset(void *dst, int value, size_t bytes) {
    emu_stream_drain(nullptr);
    return set(dst, value, bytes, "cudaMemset");
}
cudaError_t cudaMemsetAsync(void *dst, int value, size_t bytes, cudaStream_t s) {
    emu_check_stream(s, "cudaMemsetAsync");
    emu_stream_drain(s);
    return set(dst, value, bytes, "cudaMemsetAsync");
}
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t *pool, int d) {
    static char the_pool;
    if (d != 0) return fail(cudaErrorInvalidDevice);
    *pool = (cudaMemPool_t)(void *)&the_pool;
    return cudaSuccess;
}
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t, cudaMemPoolAttr, void *value) { return value ? cudaSuccess : fail(cudaErrorInvalidValue); }

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags) {
    *s = new CUstream_st{LIVE_STREAM, flags};
    emu_stream_register(*s, flags);
    return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithFlags(s, 0); }
cudaError_t cudaStreamCreateWithPriority(cudaStream_t *s, unsigned int flags, int) { return cudaStreamCreateWithFlags(s, flags); }
cudaError_t cudaDeviceGetStreamPriorityRange(int *least, int *greatest) { *least = 0; *greatest = -5; return cudaSuccess; }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    if (!s) return fail(cudaErrorInvalidResourceHandle);
    emu_check_stream(s, "cudaStreamDestroy");
    emu_stream_retire(s);
    s->magic = DEAD;   // kept, so that a later use is reported
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    emu_check_stream(s, "cudaStreamSynchronize");
    emu_stream_drain(s);
    return last_error;
}
cudaError_t cudaStreamQuery(cudaStream_t s) {
    emu_check_stream(s, "cudaStreamQuery");
    return emu_stream_idle(s) ? cudaSuccess : cudaErrorNotReady;
}
// Waiting for an event never recorded is a no-op, as in CUDA.
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int) {
    emu_check_stream(s, "cudaStreamWaitEvent");
    check_event(e, "cudaStreamWaitEvent");
    if (e->recorded) emu_stream_wait_mark(s, e->mark);
    return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int) { *e = new CUevent_st{LIVE_EVENT, 0, EmuMark{nullptr, 0}}; return cudaSuccess; }
cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, 0); }
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    check_event(e, "cudaEventRecord");
    emu_check_stream(s, "cudaEventRecord");
    e->recorded = 1;
    e->mark = emu_stream_mark(s);
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    check_event(e, "cudaEventSynchronize");
    emu_mark_wait(e->mark);
    return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t e) {
    check_event(e, "cudaEventQuery");
    return emu_mark_reached(e->mark) ? cudaSuccess : cudaErrorNotReady;
}
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
    check_event(a, "cudaEventElapsedTime");
    check_event(b, "cudaEventElapsedTime");
    *ms = 0.0f;
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    check_event(e, "cudaEventDestroy");
    e->magic = DEAD;
    return cudaSuccess;
}
}   // extern "C"

// ---- fibers ---------------------------------------------------------------------------------------------
// The x86-64 switch saves the callee-saved registers, MXCSR and the x87 control word on the old
// stack, stores its stack pointer, and loads the other's (System V ABI: everything else is
// caller-saved). ~10 ns; EMU_UCONTEXT=1 at build time uses swapcontext instead (a signal-mask
// system call per switch; see the README for the measured difference).
#if !EMU_USE_UCONTEXT
extern "C" void emu_switch(void **save_sp, void *load_sp);
asm(R"(
    .text
    .globl emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
    .section .note.GNU-stack, "", @progbits
    .text
)");
#endif

namespace emu {
uint3 thread_idx, block_idx;
dim3 block_dim, grid_dim;

enum State { RUNNING, AT_BARRIER, AT_WARP, EXITED };

struct Thread {
    State state;
    uint3 tid;
    const char *file;   // where it waits
    int line;
    WarpOp op;
    unsigned mask;
    int arg, width, bytes;
    unsigned char in[16], out[16];
    // its fiber
    char *stack;
#if EMU_USE_UCONTEXT
    ucontext_t ctx;
#else
    void *sp;
#endif
};

static const size_t STACK_BYTES = (size_t)256 << 10;
static std::vector<Thread> threads;   // grows to the largest block launched; fibers are reused
static int current = -1;              // the running thread, -1 in the scheduler
static void (*body_run)(void *);
static void *body_ctx;
static LaunchSite site_now;
#if EMU_USE_UCONTEXT
static ucontext_t scheduler_ctx;
#else
static void *scheduler_sp;
#endif
#if EMU_ASAN
static const void *scheduler_stack;
static size_t scheduler_stack_bytes;
#endif

static void to_scheduler() {
    Thread &t = threads[current];
#if EMU_ASAN
    __sanitizer_start_switch_fiber(nullptr, scheduler_stack, scheduler_stack_bytes);
#endif
#if EMU_USE_UCONTEXT
    swapcontext(&t.ctx, &scheduler_ctx);
#else
    emu_switch(&t.sp, scheduler_sp);
#endif
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
}

static void fiber_main() {
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &scheduler_stack, &scheduler_stack_bytes);
#endif
    for (;;) {   // a fiber runs one CUDA thread per block, then waits to be given the next
        body_run(body_ctx);
        threads[current].state = EXITED;
        to_scheduler();
    }
}

static void make_fiber(Thread &t) {
    size_t guard = (size_t)sysconf(_SC_PAGESIZE);
    char *m = (char *)mmap(nullptr, STACK_BYTES + guard, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) emu_fatal("cannot map a fiber stack");
    mprotect(m, guard, PROT_NONE);   // an overflow faults instead of writing into the neighbour
    t.stack = m + guard;
#if EMU_USE_UCONTEXT
    getcontext(&t.ctx);
    t.ctx.uc_stack.ss_sp = t.stack;
    t.ctx.uc_stack.ss_size = STACK_BYTES;
    t.ctx.uc_link = nullptr;
    makecontext(&t.ctx, fiber_main, 0);
#else
    void **sp = (void **)(((uintptr_t)(t.stack + STACK_BYTES)) & ~(uintptr_t)15);
    *--sp = nullptr;                       // fiber_main's return address (it never returns)
    *--sp = (void *)&fiber_main;           // where the first switch returns to
    for (int i = 0; i < 6; i++) *--sp = nullptr;   // rbp rbx r12 r13 r14 r15
    --sp;                                  // MXCSR (default 0x1F80) and x87 control word (0x037F)
    uint32_t mxcsr = 0x1F80;
    uint16_t fpucw = 0x037F;
    memcpy(sp, &mxcsr, 4);
    memcpy((char *)sp + 4, &fpucw, 2);
    t.sp = sp;
#endif
}

static void resume(int i) {
    Thread &t = threads[i];
    current = i;
    thread_idx = t.tid;
#if EMU_ASAN
    __sanitizer_start_switch_fiber(nullptr, t.stack, STACK_BYTES);
#endif
#if EMU_USE_UCONTEXT
    swapcontext(&scheduler_ctx, &t.ctx);
#else
    emu_switch(&scheduler_sp, t.sp);
#endif
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
    current = -1;
}

// ---- schedule order --------------------------------------------------------------------------------------
static int sched = -1;   // 0 forward, 1 reverse, 2 random
static std::mt19937_64 rng;
static void init_sched() {
    if (sched >= 0) return;
    const char *s = getenv("EMU_SCHED");
    sched = 0;
    if (!s || !*s || !strcmp(s, "forward")) return;
    if (!strcmp(s, "reverse")) sched = 1;
    else if (!strncmp(s, "random", 6)) {
        sched = 2;
        rng.seed(s[6] == ':' ? strtoull(s + 7, nullptr, 10) : 1);
    } else emu_fatal("EMU_SCHED=%s: expected forward, reverse or random:SEED", s);
}
static void permute(std::vector<int> &v, int n) {
    v.resize(n);
    std::iota(v.begin(), v.end(), 0);
    if (sched == 1) std::reverse(v.begin(), v.end());
    if (sched == 2) std::shuffle(v.begin(), v.end(), rng);
}

// ---- shared memory ------------------------------------------------------------------------------------------
extern "C" char __start_emu_shared[] __attribute__((weak));
extern "C" char __stop_emu_shared[] __attribute__((weak));
__attribute__((no_sanitize_address)) static void poison_shared() {
    if (!__start_emu_shared) return;
    for (volatile char *p = __start_emu_shared; p < __stop_emu_shared; p++) *p = (char)0xFF;
}

// ---- release or report ----------------------------------------------------------------------------------------
static const char *waits_at(const Thread &t) {
    switch (t.state) {
    case AT_BARRIER: return "__syncthreads";
    case AT_WARP: return "a warp primitive";
    case EXITED: return "(exited)";
    default: return "(running)";
    }
}

[[noreturn]] static void stuck(const std::string &why, int n) {
    fprintf(stderr, "cuda-emu: ERROR: kernel %s (launched at %s:%d), block (%u,%u,%u): %s\n", site_now.kernel, site_now.file, site_now.line,
            block_idx.x, block_idx.y, block_idx.z, why.c_str());
    int shown = 0;
    for (int i = 0; i < n && shown < 8; i++) {
        const Thread &t = threads[i];
        if (t.state != AT_BARRIER && t.state != AT_WARP) continue;
        fprintf(stderr, "  thread (%u,%u,%u) [warp %d lane %d] waits at %s, %s:%d\n", t.tid.x, t.tid.y, t.tid.z, i / 32, i % 32, waits_at(t),
                t.file, t.line);
        shown++;
    }
    emu_fatal("kernel %s cannot complete on a GPU (it would hang or read undefined values)", site_now.kernel);
}

static std::string fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static std::string fmt(const char *f, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return buf;
}

static int source_lane(const Thread &t, int lane) {
    int w = t.width, base = lane / w * w;
    switch (t.op) {
    case OP_IDX: return base + ((t.arg % w) + w) % w;
    case OP_UP: return lane - t.arg >= base ? lane - t.arg : lane;
    case OP_DOWN: return lane + t.arg < base + w ? lane + t.arg : lane;
    case OP_XOR: { int s = lane ^ t.arg; return s >= base && s < base + w ? s : lane; }
    default: return lane;
    }
}

// Releases the warp groups that are complete; reports any that can never be. Returns whether one was released.
static bool release_warps(int n) {
    bool released = false;
    for (int lo = 0; lo < n; lo += 32) {
        int lanes = std::min(32, n - lo);
        unsigned done = 0;   // lanes handled in this pass
        for (int l = 0; l < lanes; l++) {
            Thread &a = threads[lo + l];
            if (a.state != AT_WARP || (done >> l & 1u)) continue;
            unsigned m = a.mask;
            if (!(m >> l & 1u))
                stuck(fmt("lane %d calls a warp primitive at %s:%d with mask 0x%08x, which does not name it", l, a.file, a.line, m), n);
            for (int j = 0; j < 32; j++) {
                if (!(m >> j & 1u)) continue;
                if (j >= lanes)
                    stuck(fmt("warp primitive at %s:%d: mask 0x%08x names lane %d, which does not exist (a block of %d threads ends "
                              "in a partial warp)", a.file, a.line, m, j, n), n);
                Thread &b = threads[lo + j];
                if (b.state == EXITED)
                    stuck(fmt("warp primitive at %s:%d: mask 0x%08x names lane %d, which has exited", a.file, a.line, m, j), n);
                if (b.state == AT_BARRIER)
                    stuck(fmt("lane %d waits at a warp primitive at %s:%d (mask 0x%08x) while lane %d waits at __syncthreads at %s:%d "
                              "(divergence)", l, a.file, a.line, m, j, b.file, b.line), n);
                if (b.mask != m || b.op != a.op || b.line != a.line || b.width != a.width || b.bytes != a.bytes || strcmp(b.file, a.file))
                    stuck(fmt("lanes %d and %d of warp %d are at different warp primitives: %s:%d (mask 0x%08x) and %s:%d (mask 0x%08x) "
                              "(divergent shuffle)", l, j, lo / 32, a.file, a.line, m, b.file, b.line, b.mask), n);
            }
            unsigned vote = 0;
            for (int j = 0; j < 32; j++)
                if ((m >> j & 1u) && threads[lo + j].in[0]) vote |= 1u << j;   // ballot: `in` holds the predicate
            for (int j = 0; j < 32; j++) {
                if (!(m >> j & 1u)) continue;
                Thread &b = threads[lo + j];
                if (b.op == OP_BALLOT) {
                    memcpy(b.out, &vote, sizeof vote);
                } else if (b.op != OP_SYNC) {
                    int src = source_lane(b, j);
                    if (!(m >> src & 1u))
                        stuck(fmt("lane %d at %s:%d reads lane %d, which the mask 0x%08x leaves out (undefined value)", j, b.file, b.line,
                                  src, m), n);
                    memcpy(b.out, threads[lo + src].in, (size_t)b.bytes);
                }
            }
            for (int j = 0; j < 32; j++)
                if (m >> j & 1u) threads[lo + j].state = RUNNING;
            done |= m;
            released = true;
        }
    }
    return released;
}

static int warned_barrier_after_exit = 0;

static void release_barrier(int n) {
    const Thread *first = nullptr;
    int live = 0;
    for (int i = 0; i < n; i++) {
        const Thread &t = threads[i];
        if (t.state == EXITED) continue;
        live++;
        if (t.state != AT_BARRIER) stuck(fmt("thread %d neither waits at a barrier nor exited", i), n);   // not reached
        if (!first) first = &t;
        else if (t.line != first->line || strcmp(t.file, first->file))
            stuck(fmt("threads wait at different __syncthreads, %s:%d and %s:%d (barrier in divergent code)", first->file, first->line,
                      t.file, t.line), n);
    }
    if (live < n) {
        for (int lo = 0; lo < n; lo += 32) {
            int hi = std::min(n, lo + 32), gone = 0;
            for (int i = lo; i < hi; i++) gone += threads[i].state == EXITED;
            if (gone > 0 && gone < hi - lo)
                stuck(fmt("__syncthreads at %s:%d is waited at by part of warp %d while its other %d lanes have exited (barrier in "
                          "divergent code)", first->file, first->line, lo / 32, gone), n);
        }
        if (warned_barrier_after_exit++ < 3)
            warn("kernel %s: __syncthreads at %s:%d after whole warps exited (%d of %d threads wait): works on sm_70+, undefined by the "
                 "programming guide", site_now.kernel, first->file, first->line, live, n);
    }
    for (int i = 0; i < n; i++)
        if (threads[i].state == AT_BARRIER) threads[i].state = RUNNING;
}

static void run_block(int n) {
    static std::vector<int> order;
    unsigned bx = block_dim.x, by = block_dim.y;
    for (int i = 0; i < n; i++) {
        Thread &t = threads[i];
        t.state = RUNNING;
        t.file = "";
        t.line = 0;
        t.tid = uint3{(unsigned)i % bx, (unsigned)i / bx % by, (unsigned)i / (bx * by)};
    }
    poison_shared();
    for (;;) {
        permute(order, n);
        for (int i : order)
            if (threads[i].state == RUNNING) resume(i);
        int exited = 0, at_warp = 0;
        for (int i = 0; i < n; i++) {
            exited += threads[i].state == EXITED;
            at_warp += threads[i].state == AT_WARP;
        }
        if (exited == n) return;
        if (at_warp) {
            if (!release_warps(n)) stuck("no warp primitive can complete", n);   // not reached: release_warps reports
        } else {
            release_barrier(n);
        }
    }
}

// ---- launches ------------------------------------------------------------------------------------------------
static std::map<std::string, unsigned long> launch_counts;
static unsigned long long threads_run = 0;

static void print_stats() {
    unsigned long total = 0;
    for (auto &kv : launch_counts) total += kv.second;
    fprintf(stderr, "cuda-emu: %lu launches of %zu kernels, %llu CUDA threads\n", total, launch_counts.size(), threads_run);
    for (auto &kv : launch_counts) fprintf(stderr, "cuda-emu:   %-40s %lu\n", kv.first.c_str(), kv.second);
}

static void on_fault(int sig, siginfo_t *info, void *);

static void install_fault_handler() {
#if !EMU_ASAN
    static bool done = false;
    if (done) return;
    done = true;
    static char altstack[1 << 16];
    stack_t ss{};
    ss.ss_sp = altstack;
    ss.ss_size = sizeof altstack;
    sigaltstack(&ss, nullptr);
    struct sigaction sa {};
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND;
    sigaction(SIGSEGV, &sa, nullptr);
    sigaction(SIGBUS, &sa, nullptr);
#endif
    if (getenv("EMU_STATS") && atoi(getenv("EMU_STATS"))) atexit(print_stats);
}

static dim3 next_grid, next_block;

bool launch_begin(const LaunchSite &site, dim3 g, dim3 b, size_t shared, const void *stream) {
    init_sched();
    install_fault_handler();
    emu_check_stream((cudaStream_t)stream, site.kernel);
    if (current < 0) emu_stream_drain((cudaStream_t)stream);
    if (current >= 0) emu_fatal("%s:%d: launch of %s from device code (dynamic parallelism is not used by entrank)", site.file, site.line, site.kernel);
    unsigned long long n = (unsigned long long)b.x * b.y * b.z;
    const char *bad = nullptr;
    if (!b.x || !b.y || !b.z || !g.x || !g.y || !g.z) bad = "a zero dimension";
    else if (b.x > 1024 || b.y > 1024 || b.z > 64) bad = "a block dimension over 1024 (x, y) or 64 (z)";
    else if (n > 1024) bad = "over 1024 threads per block";
    else if (g.x > 0x7fffffffu) bad = "grid.x over 2^31 - 1";
    else if (g.y > 65535 || g.z > 65535) bad = "grid.y or grid.z over 65535";
    else if (shared > (48u << 10)) bad = "over 48 KiB of dynamic shared memory";
    if (bad) {
        warn("launch of %s at %s:%d: invalid configuration (%s): grid (%u,%u,%u), block (%u,%u,%u), %zu bytes shared", site.kernel, site.file,
             site.line, bad, g.x, g.y, g.z, b.x, b.y, b.z, shared);
        fail(cudaErrorInvalidConfiguration);
        return false;
    }
    next_grid = g;
    next_block = b;
    return true;
}

void launch_run(const LaunchSite &site, void (*run)(void *), void *ctx) {
    const dim3 g = next_grid, b = next_block;
    int n = (int)(b.x * b.y * b.z);
    threads.reserve(1024);   // never moved: a ucontext_t points into itself
    while ((int)threads.size() < n) {
        threads.emplace_back();
        make_fiber(threads.back());
    }
    site_now = site;
    body_run = run;
    body_ctx = ctx;
    grid_dim = g;
    block_dim = b;
    uint64_t blocks = (uint64_t)g.x * g.y * g.z;
    std::vector<uint64_t> shuffled;
    if (sched == 2) {
        shuffled.resize(blocks);
        std::iota(shuffled.begin(), shuffled.end(), 0);
        std::shuffle(shuffled.begin(), shuffled.end(), rng);
    }
    for (uint64_t i = 0; i < blocks; i++) {
        uint64_t k = sched == 2 ? shuffled[i] : sched == 1 ? blocks - 1 - i : i;
        block_idx = uint3{(unsigned)(k % g.x), (unsigned)(k / g.x % g.y), (unsigned)(k / ((uint64_t)g.x * g.y))};
        run_block(n);
    }
    launch_counts[site.kernel]++;
    threads_run += blocks * (uint64_t)n;
    site_now = LaunchSite{"(none)", "", 0};
}

// EMU_TRACE: the kernel, its configuration and an FNV-1a hash of every allocation its pointer
// arguments point into (after the launch).
static FILE *trace_file;
bool tracing() {
    static int on = -1;
    if (on < 0) {
        const char *path = getenv("EMU_TRACE");
        on = path && *path;
        if (on && !(trace_file = fopen(path, "w"))) emu_fatal("EMU_TRACE=%s: cannot write", path);
    }
    return on;
}

void trace(const LaunchSite &site, const void *const *ptrs, int n) {
    std::vector<uintptr_t> seen;
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < n; i++) {
        auto *e = ptrs[i] ? owner(ptrs[i]) : nullptr;
        if (!e || std::find(seen.begin(), seen.end(), e->first) != seen.end()) continue;
        seen.push_back(e->first);
        const unsigned char *p = (const unsigned char *)e->first;
        for (size_t j = 0; j < e->second.bytes; j++) h = (h ^ p[j]) * 1099511628211ull;
    }
    fprintf(trace_file, "%s grid(%u,%u,%u) block(%u,%u,%u) %016llx\n", site.kernel, grid_dim.x, grid_dim.y, grid_dim.z, block_dim.x,
            block_dim.y, block_dim.z, (unsigned long long)h);
}

void check_pointer_arg(const LaunchSite &site, int index, const void *p) {
    if (!p || owner(p)) return;
    emu_fatal("launch of %s at %s:%d: pointer argument %d (%p) is not device memory: a GPU would fault on it", site.kernel, site.file,
              site.line, index, p);
}


// ---- device primitives ----------------------------------------------------------------------------------------
static Thread &me(const char *what, const char *file, int line) {
    if (current < 0) emu_fatal("%s at %s:%d called outside a kernel", what, file, line);
    return threads[current];
}

void syncthreads(const char *file, int line) {
    Thread &t = me("__syncthreads", file, line);
    t.file = file;
    t.line = line;
    t.state = AT_BARRIER;
    to_scheduler();
}

void warp_op(WarpOp op, unsigned mask, const void *in, void *out, int bytes, int arg, int width, const char *file, int line) {
    Thread &t = me("a warp primitive", file, line);
    if (width < 1 || width > 32 || (width & (width - 1))) emu_fatal("%s:%d: shuffle width %d is not a power of two up to 32", file, line, width);
    t.file = file;
    t.line = line;
    t.op = op;
    t.mask = mask;
    t.arg = arg;
    t.width = width;
    t.bytes = bytes;
    memcpy(t.in, in, (size_t)bytes);
    if (op == OP_BALLOT) t.in[0] = *(const int *)in != 0;
    t.state = AT_WARP;
    to_scheduler();
    memcpy(out, threads[current].out, (size_t)bytes);
}

// A fault (EMU_FENCE=1 turns an index past an allocation into one): name the kernel, block and
// thread, and the allocation nearest to the address.
static void on_fault(int sig, siginfo_t *info, void *) {
    char buf[768];
    const void *a = info->si_addr;
    int k = 0;
    if (current >= 0) {
        const Thread &t = threads[current];
        k = snprintf(buf, sizeof buf, "cuda-emu: ERROR: %s at address %p in kernel %s (launched at %s:%d), block (%u,%u,%u), thread (%u,%u,%u)",
                     sig == SIGSEGV ? "invalid memory access" : "bus error", a, site_now.kernel, site_now.file, site_now.line, block_idx.x,
                     block_idx.y, block_idx.z, t.tid.x, t.tid.y, t.tid.z);
        for (auto &kv : device) {   // the allocation the address is just past or just before
            uintptr_t lo = kv.first, hi = kv.first + kv.second.bytes, x = (uintptr_t)a;
            if (x >= hi && x < hi + 65536)
                k += snprintf(buf + k, sizeof buf - k, ": %zu bytes past the end of the allocation of %zu bytes at %p", (size_t)(x - hi),
                              kv.second.bytes, (void *)lo);
            else if (x < lo && x + 65536 > lo)
                k += snprintf(buf + k, sizeof buf - k, ": %zu bytes before the allocation of %zu bytes at %p", (size_t)(lo - x), kv.second.bytes,
                              (void *)lo);
            if (k >= (int)sizeof buf - 1) break;
        }
    } else {
        k = snprintf(buf, sizeof buf, "cuda-emu: ERROR: %s at address %p outside any kernel", sig == SIGSEGV ? "invalid memory access" : "bus error", a);
    }
    if (k > (int)sizeof buf - 2) k = (int)sizeof buf - 2;
    buf[k++] = '\n';
    if (write(2, buf, (size_t)k) < 0) {}
    signal(SIGABRT, SIG_DFL);
    abort();
}
}   // namespace emu
