// emu_device.h (emulated CUDA, tests/cuda_emu): the device side of CUDA as host C++; included by
// cuda_runtime.h when compiled as C++.
//
// cu2cpp.pl rewrites every launch `k<<<g, b, s, st>>>(args)` into EMU_LAUNCH(k, g, b, s, st)(args).
// EMU_LAUNCH deduces the kernel's parameter types P... from its function type, converts the
// arguments to them as a call would, checks every pointer parameter against the device memory
// table, validates the configuration like the driver and then runs every CUDA thread of every
// block as a fiber (runtime.cpp). __syncthreads and the warp primitives switch back to the block's
// scheduler, which releases them only when the whole block / all lanes named in the mask arrived.
// `__shared__` statics live in the linker section "emu_shared", poisoned with NaN (0xFF bytes) at
// every block start.
#pragma once
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <tuple>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __noinline__ __attribute__((noinline))
#define __forceinline__ inline __attribute__((always_inline))
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __shared__ static __attribute__((section("emu_shared"), used))
#define __constant__ static

struct uint3 { unsigned int x, y, z; };
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) double2 { double x, y; };
static inline float2 make_float2(float x, float y) { return float2{x, y}; }
static inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
static inline double2 make_double2(double x, double y) { return double2{x, y}; }

namespace emu {
// The current thread's coordinates (set by the scheduler before it resumes a fiber).
extern uint3 thread_idx, block_idx;
extern dim3 block_dim, grid_dim;

// Device primitives; `site` is "file:line" of the call, for reports.
void syncthreads(const char *file, int line);
enum WarpOp { OP_IDX, OP_UP, OP_DOWN, OP_XOR, OP_SYNC, OP_BALLOT };
// This lane offers `bytes` of `in` and gets the value of the lane the op selects (ballot: the vote).
void warp_op(WarpOp op, unsigned mask, const void *in, void *out, int bytes, int arg, int width, const char *file, int line);

// One launch: `run(ctx)` executes the kernel body of the current thread.
struct LaunchSite { const char *kernel, *file; int line; };
bool launch_begin(const LaunchSite &site, dim3 grid, dim3 block, size_t shared, const void *stream);
void launch_run(const LaunchSite &site, void (*run)(void *), void *ctx);
void check_pointer_arg(const LaunchSite &site, int index, const void *p);
bool tracing();
void trace(const LaunchSite &site, const void *const *ptrs, int n);

template <class... P>
struct Launch {
    LaunchSite site;
    void (*kernel)(P...);
    dim3 grid, block;
    size_t shared;
    const void *stream;

    template <class Tuple, size_t... I>
    void check_pointers(const Tuple &args, std::index_sequence<I...>) const {
        int index = 0;
        auto one = [&](const auto &v) {
            if constexpr (std::is_pointer_v<std::decay_t<decltype(v)>>) check_pointer_arg(site, index, (const void *)v);
            index++;
        };
        (one(std::get<I>(args)), ...);
    }
    template <class Tuple, size_t... I>
    int pointers(const Tuple &args, const void **out, std::index_sequence<I...>) const {
        int n = 0;
        auto one = [&](const auto &v) {
            if constexpr (std::is_pointer_v<std::decay_t<decltype(v)>>) out[n++] = (const void *)v;
        };
        (one(std::get<I>(args)), ...);
        return n;
    }
    template <class... A>
    void operator()(A &&...a) const {
        static_assert(sizeof...(A) == sizeof...(P), "kernel launched with the wrong number of arguments");
        struct Ctx { void (*kernel)(P...); std::tuple<std::decay_t<P>...> args; };
        Ctx ctx{kernel, std::tuple<std::decay_t<P>...>(std::forward<A>(a)...)};
        check_pointers(ctx.args, std::index_sequence_for<P...>{});
        if (!launch_begin(site, grid, block, shared, stream)) return;   // invalid configuration: cudaGetLastError reports it
        launch_run(site, [](void *c) { Ctx *x = (Ctx *)c; std::apply(x->kernel, x->args); }, &ctx);
        if (tracing()) {
            const void *ptrs[sizeof...(P) + 1];
            trace(site, ptrs, pointers(ctx.args, ptrs, std::index_sequence_for<P...>{}));
        }
    }
};

template <class... P>
static inline Launch<P...> make_launch(const char *file, int line, const char *name, void (*kernel)(P...), dim3 grid, dim3 block,
                                       size_t shared = 0, const void *stream = nullptr) {
    return Launch<P...>{LaunchSite{name, file, line}, kernel, grid, block, shared, stream};
}
}   // namespace emu

#define EMU_LAUNCH(kernel, ...) ::emu::make_launch(__FILE__, __LINE__, #kernel, kernel, __VA_ARGS__)

#define threadIdx (::emu::thread_idx)
#define blockIdx (::emu::block_idx)
#define blockDim (::emu::block_dim)
#define gridDim (::emu::grid_dim)
static constexpr int warpSize = 32;

namespace emu {
template <class T>
static inline T shuffle(WarpOp op, unsigned mask, T v, int arg, const char *file, int line, int width = 32) {
    static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 16, "a shuffled value is at most 16 trivially copyable bytes");
    T out;
    warp_op(op, mask, &v, &out, (int)sizeof(T), arg, width, file, line);
    return out;
}
static inline unsigned ballot(unsigned mask, int pred, const char *file, int line) {
    unsigned out;
    warp_op(OP_BALLOT, mask, &pred, &out, (int)sizeof pred, 0, 32, file, line);
    return out;
}
static inline void syncwarp(const char *file, int line, unsigned mask = 0xffffffffu) {
    int in = 0, out;
    warp_op(OP_SYNC, mask, &in, &out, (int)sizeof in, 0, 32, file, line);
}
}   // namespace emu

#define __syncthreads() ::emu::syncthreads(__FILE__, __LINE__)
#define __syncwarp(...) ::emu::syncwarp(__FILE__, __LINE__, ##__VA_ARGS__)
#define __shfl_sync(m, v, l, ...) ::emu::shuffle(::emu::OP_IDX, m, v, l, __FILE__, __LINE__, ##__VA_ARGS__)
#define __shfl_up_sync(m, v, d, ...) ::emu::shuffle(::emu::OP_UP, m, v, d, __FILE__, __LINE__, ##__VA_ARGS__)
#define __shfl_down_sync(m, v, d, ...) ::emu::shuffle(::emu::OP_DOWN, m, v, d, __FILE__, __LINE__, ##__VA_ARGS__)
#define __shfl_xor_sync(m, v, x, ...) ::emu::shuffle(::emu::OP_XOR, m, v, x, __FILE__, __LINE__, ##__VA_ARGS__)
#define __ballot_sync(m, p) ::emu::ballot(m, (p) ? 1 : 0, __FILE__, __LINE__)
#define __any_sync(m, p) (::emu::ballot(m, (p) ? 1 : 0, __FILE__, __LINE__) != 0u)
#define __all_sync(m, p) (::emu::ballot(m, (p) ? 1 : 0, __FILE__, __LINE__) == (unsigned)(m))

// ---- device math that glibc lacks (host precision, not libdevice's) ----
// (__expf and __logf: glibc declares them, with expf/logf precision)
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, sizeof f); return f; }
static inline int __popc(unsigned int x) { return __builtin_popcount(x); }
static inline int __float_as_int(float f) { int i; memcpy(&i, &f, sizeof i); return i; }
static inline float __fdividef(float a, float b) { return a / b; }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
template <class T> static inline T __ldg(const T *p) { return *p; }
// sin(pi x) and cos(pi x) with an exact argument reduction (x - 2 round(x / 2) is exact in binary).
static inline void sincospi(double x, double *s, double *c) {
    double r = x - 2.0 * nearbyint(0.5 * x);   // in [-1, 1]
    if (r == 0.5 || r == -0.5) { *s = r > 0 ? 1.0 : -1.0; *c = 0.0; return; }
    if (r == 0.0 || r == 1.0 || r == -1.0) { *s = 0.0; *c = r == 0.0 ? 1.0 : -1.0; return; }
    *s = sin(M_PI * r);
    *c = cos(M_PI * r);
}
static inline double sinpi(double x) { double s, c; sincospi(x, &s, &c); return s; }
static inline double cospi(double x) { double s, c; sincospi(x, &s, &c); return c; }
