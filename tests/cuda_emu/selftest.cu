// selftest.cu (emulated CUDA, tests/cuda_emu): the emulator's checks on small kernels. Correct
// kernels must give the right answer; each deliberately broken one must be reported with the
// expected message. Every case runs in a child process; TAP output (`ok N - name`).
//   build-emu/fast/tests/emu_selftest [NAME]   (NAME: run that case in this process, for debugging)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <math.h>
#include <string>
#include "cublas_v2.h"
#include "cuda_runtime.h"
#include "cufft.h"

static __device__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// ---- correct kernels --------------------------------------------------------------------------------
// one warp per row, rows beyond n leave as whole warps; then a block barrier
static __global__ void row_sums(float *out, const float *x, int n, int c) {
    __shared__ float rows[8];
    int row = blockIdx.x * 8 + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= n) return;
    float s = 0;
    for (int j = lane; j < c; j += 32) s += x[(size_t)row * c + j];
    s = warp_sum(s);
    if (lane == 0) out[row] = s;
    (void)rows;
}

static __global__ void votes(unsigned *out, int k) {
    int lane = threadIdx.x % 32;
    out[threadIdx.x * 4 + 0] = __ballot_sync(0xffffffffu, lane < k);
    out[threadIdx.x * 4 + 1] = __any_sync(0xffffffffu, lane == k);
    out[threadIdx.x * 4 + 2] = __all_sync(0xffffffffu, lane < 32);
    out[threadIdx.x * 4 + 3] = (unsigned)__shfl_down_sync(0xffffffffu, lane, 3, 8) * 100u + (unsigned)__shfl_up_sync(0xffffffffu, lane, 1) +
                               (unsigned)__shfl_sync(0xffffffffu, lane, 5, 16) * 10000u;
}

static __global__ void block_reverse(float *out) {
    __shared__ float s[256];
    s[threadIdx.x] = (float)threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = s[blockDim.x - 1 - threadIdx.x];
}

// ---- broken kernels --------------------------------------------------------------------------------------
static __global__ void shuffle_in_partial_warp(float *out) { out[threadIdx.x] = warp_sum(1.0f); }

static __global__ void shuffle_after_exit(float *out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    out[i] = warp_sum(out[i]);
}

static __global__ void barrier_in_branch(float *out) {
    __shared__ float s[64];
    s[threadIdx.x] = (float)threadIdx.x;
    if (threadIdx.x < 16) __syncthreads();
    out[threadIdx.x] = s[(threadIdx.x + 1) % blockDim.x];
}

static __global__ void two_barriers(float *out) {
    if (threadIdx.x < 32) __syncthreads();
    else __syncthreads();
    out[threadIdx.x] = 1.0f;
}

static __global__ void divergent_shuffle(float *out) {
    float v = 1.0f;
    if (threadIdx.x % 2) v = __shfl_xor_sync(0xffffffffu, v, 1);
    else v = __shfl_xor_sync(0xffffffffu, v, 1);
    out[threadIdx.x] = v;
}

static __global__ void off_by_one(float *out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) out[i] = 1.0f;   // writes out[n]
}

static __global__ void racy_reverse(float *out) {   // the barrier between write and read is missing
    __shared__ float s[64];
    s[threadIdx.x] = (float)threadIdx.x;
    out[threadIdx.x] = s[blockDim.x - 1 - threadIdx.x];
}

static __global__ void read_shared_first(float *out) {
    __shared__ float s[64];
    out[threadIdx.x] = s[threadIdx.x];
    s[threadIdx.x] = 0.0f;
}

static __global__ void fill(float *out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x + blockIdx.y;
    if (i < n) out[i] = 1.0f;
}

// ---- cases --------------------------------------------------------------------------------------------------
static float *dev(size_t n) {
    void *p = nullptr;
    if (cudaMalloc(&p, n * sizeof(float)) != cudaSuccess) abort();
    return (float *)p;
}

#define EXPECT(cond) do { if (!(cond)) { fprintf(stderr, "selftest: %s:%d: %s does not hold\n", __FILE__, __LINE__, #cond); return 1; } } while (0)

static int ok_row_sums() {
    const int n = 37, c = 96;
    float *x = dev(n * c), *out = dev(n), h[n * c], r[n];
    for (int i = 0; i < n * c; i++) h[i] = (float)(i % 7) - 3.0f;
    cudaMemcpy(x, h, sizeof h, cudaMemcpyHostToDevice);
    row_sums<<<(n + 7) / 8, 256, 0, 0>>>(out, x, n, c);
    EXPECT(cudaGetLastError() == cudaSuccess);
    cudaMemcpy(r, out, sizeof r, cudaMemcpyDeviceToHost);
    for (int i = 0; i < n; i++) {
        float e = 0;
        for (int j = 0; j < c; j++) e += h[i * c + j];
        EXPECT(r[i] == e);
    }
    return 0;
}

static int ok_votes_and_shuffles() {
    unsigned *o, h[64 * 4];
    cudaMalloc((void **)&o, sizeof h);
    votes<<<1, 64>>>(o, 5);
    cudaMemcpy(h, o, sizeof h, cudaMemcpyDeviceToHost);
    for (int t = 0; t < 64; t++) {
        int l = t % 32;
        EXPECT(h[t * 4 + 0] == 0x1fu && h[t * 4 + 1] == 1 && h[t * 4 + 2] == 1);
        unsigned down = (l % 8 + 3 < 8) ? l + 3 : l, up = l >= 1 ? l - 1 : l, idx = l / 16 * 16 + 5;
        EXPECT(h[t * 4 + 3] == down * 100 + up + idx * 10000);
    }
    return 0;
}

static int ok_block_barrier() {
    float *o = dev(256), h[256];
    block_reverse<<<3, 256>>>(o);
    cudaMemcpy(h, o, sizeof h, cudaMemcpyDeviceToHost);
    for (int i = 0; i < 256; i++) EXPECT(h[i] == 255 - i);
    return 0;
}

static int ok_fresh_memory_is_nan() {
    float *o = dev(16), h[16];
    cudaMemcpy(h, o, sizeof h, cudaMemcpyDeviceToHost);
    for (int i = 0; i < 16; i++) EXPECT(isnan(h[i]));
    return 0;
}

static int ok_shared_memory_is_nan() {
    float *o = dev(64), h[64];
    read_shared_first<<<2, 64>>>(o);   // the second block sees NaN too, not the first block's zeros
    cudaMemcpy(h, o, sizeof h, cudaMemcpyDeviceToHost);
    for (int i = 0; i < 64; i++) EXPECT(isnan(h[i]));
    return 0;
}

static int bad_partial_warp_shuffle() { shuffle_in_partial_warp<<<1, 48>>>(dev(48)); return 0; }
static int bad_shuffle_after_exit() { shuffle_after_exit<<<1, 64>>>(dev(64), 40); return 0; }
static int bad_barrier_in_branch() { barrier_in_branch<<<1, 64>>>(dev(64)); return 0; }
static int bad_two_barriers() { two_barriers<<<1, 64>>>(dev(64)); return 0; }
static int bad_divergent_shuffle() { divergent_shuffle<<<1, 32>>>(dev(32)); return 0; }
static int bad_out_of_range() { off_by_one<<<2, 64>>>(dev(64), 64); return 0; }
static int bad_host_pointer() {
    static float host[64];
    fill<<<1, 64>>>(host, 64);
    return 0;
}
static int bad_grid_y() {
    float *o = dev(64);
    fill<<<dim3(1, 65536), 64>>>(o, 64);
    return cudaGetLastError() == cudaErrorInvalidConfiguration ? 0 : 3;   // reported through the runtime, as the driver does
}
static int bad_block_size() {
    fill<<<1, 1025>>>(dev(64), 64);
    return cudaGetLastError() == cudaErrorInvalidConfiguration ? 0 : 3;
}
static int bad_gemm_leading_dimension() {
    cublasHandle_t h;
    cublasCreate(&h);
    float one = 1, zero = 0, *A = dev(64), *B = dev(64), *C = dev(64);
    // A is m x k = 8 x 8 but lda = 4
    cublasStatus_t s = cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 8, 8, 8, &one, A, CUDA_R_32F, 4, B, CUDA_R_32F, 8, &zero, C, CUDA_R_32F, 8,
                                    CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    return s == CUBLAS_STATUS_INVALID_VALUE ? 0 : 3;
}
static int bad_gemm_extent() {
    cublasHandle_t h;
    cublasCreate(&h);
    float one = 1, zero = 0, *A = dev(64), *B = dev(60), *C = dev(64);
    cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 8, 8, 8, &one, A, CUDA_R_32F, 8, B, CUDA_R_32F, 8, &zero, C, CUDA_R_32F, 8, CUBLAS_COMPUTE_32F,
                 CUBLAS_GEMM_DEFAULT);
    return 0;
}
static int ok_gemm_bf16_rounding() {
    cublasHandle_t h;
    cublasCreate(&h);
    float one = 1, zero = 0, *A = dev(1), *B = dev(1), *C = dev(1), a = 1.00390625f /* 1 + 2^-8: not a bf16 */, b = 1.0f, c;
    cudaMemcpy(A, &a, 4, cudaMemcpyHostToDevice);
    cudaMemcpy(B, &b, 4, cudaMemcpyHostToDevice);
    cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, A, CUDA_R_32F, 1, B, CUDA_R_32F, 1, &zero, C, CUDA_R_32F, 1,
                 CUBLAS_COMPUTE_32F_FAST_16BF, CUBLAS_GEMM_DEFAULT);
    cudaMemcpy(&c, C, 4, cudaMemcpyDeviceToHost);
    EXPECT(c == 1.0f);   // rounded to even: 1 + 2^-8 -> 1
    cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, A, CUDA_R_32F, 1, B, CUDA_R_32F, 1, &zero, C, CUDA_R_32F, 1, CUBLAS_COMPUTE_32F,
                 CUBLAS_GEMM_DEFAULT);
    cudaMemcpy(&c, C, 4, cudaMemcpyDeviceToHost);
    EXPECT(c == a);
    return 0;
}
static int bad_fft_without_work_area() {
    cufftHandle p;
    size_t work;
    long long n = 16;
    cufftCreate(&p);
    cufftSetAutoAllocation(p, 0);
    cufftMakePlanMany64(p, 1, &n, nullptr, 1, 16, nullptr, 1, 9, CUFFT_R2C, 4, &work);
    float *in = dev(64), *out = dev(72);
    cufftExecR2C(p, in, (cufftComplex *)out);
    return 0;
}
static int bad_destroyed_stream() {
    cudaStream_t s;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    cudaStreamDestroy(s);
    fill<<<1, 64, 0, s>>>(dev(64), 64);
    return 0;
}
// The missing barrier shows as results that change with the thread order.
static int racy_result(const char *sched, float *h) {
    setenv("EMU_SCHED", sched, 1);
    float *o = dev(64);
    racy_reverse<<<1, 64>>>(o);
    cudaMemcpy(h, o, 64 * sizeof(float), cudaMemcpyDeviceToHost);
    return 0;
}
static int race_forward() { float h[64]; racy_result("forward", h); for (int i = 0; i < 64; i++) if (h[i] != 63 - i) return 0; return 5; }
static int race_reverse() { float h[64]; racy_result("reverse", h); for (int i = 0; i < 64; i++) if (h[i] != 63 - i) return 0; return 5; }

struct Case {
    const char *name;
    int (*run)();
    const char *expect;   // null: must exit 0; else stderr must contain it (and a nonzero exit, unless `exit0`)
    int exit0;
    const char *env;      // NAME=VALUE set in the child
};

#if defined(__SANITIZE_ADDRESS__)
static const char *OOR_EXPECT = "AddressSanitizer: heap-buffer-overflow";
static const char *OOR_ENV = nullptr;
#else
static const char *OOR_EXPECT = "bytes past the end of the allocation";
static const char *OOR_ENV = "EMU_FENCE=1";
#endif

static const Case cases[] = {
    {"warp reductions with whole warps exiting", ok_row_sums, nullptr, 0, nullptr},
    {"ballot, any, all, shuffle up/down/idx with width", ok_votes_and_shuffles, nullptr, 0, nullptr},
    {"block barrier", ok_block_barrier, nullptr, 0, nullptr},
    {"fresh device memory is NaN", ok_fresh_memory_is_nan, nullptr, 0, nullptr},
    {"shared memory is NaN at every block start", ok_shared_memory_is_nan, nullptr, 0, nullptr},
    {"cuBLAS FAST_16BF rounds operands to bf16", ok_gemm_bf16_rounding, nullptr, 0, nullptr},
    {"broken: partial-warp shuffle", bad_partial_warp_shuffle, "which does not exist", 0, nullptr},
    {"broken: shuffle after exit", bad_shuffle_after_exit, "which has exited", 0, nullptr},
    {"broken: barrier in a branch", bad_barrier_in_branch, "barrier in divergent code", 0, nullptr},
    {"broken: two different barriers", bad_two_barriers, "different __syncthreads", 0, nullptr},
    {"broken: shuffles at different sites", bad_divergent_shuffle, "divergent shuffle", 0, nullptr},
    {"broken: out-of-range index", bad_out_of_range, OOR_EXPECT, 0, OOR_ENV},
    {"broken: host pointer passed to a kernel", bad_host_pointer, "is not device memory", 0, nullptr},
    {"broken: grid.y over 65535", bad_grid_y, "grid.y or grid.z over 65535", 1, nullptr},
    {"broken: 1025 threads per block", bad_block_size, "a block dimension over 1024", 1, nullptr},
    {"broken: cuBLAS leading dimension", bad_gemm_leading_dimension, "leading dimension too small", 1, nullptr},
    {"broken: cuBLAS operand past its allocation", bad_gemm_extent, "operand B (batch 0 of 1)", 0, nullptr},
    {"broken: cuFFT without a work area", bad_fft_without_work_area, "no work area was set", 0, nullptr},
    {"broken: launch on a destroyed stream", bad_destroyed_stream, "is destroyed", 0, nullptr},
    {"broken: missing barrier changes results under EMU_SCHED=forward", race_forward, nullptr, 0, nullptr},
    {"broken: missing barrier changes results under EMU_SCHED=reverse", race_reverse, nullptr, 0, nullptr},
};

int main(int argc, char **argv) {
    int n = (int)(sizeof cases / sizeof cases[0]), failed = 0;
    if (argc > 1) {
        for (int i = 0; i < n; i++)
            if (!strcmp(argv[1], cases[i].name)) return cases[i].run();
        fprintf(stderr, "no case %s\n", argv[1]);
        return 2;
    }
    printf("1..%d\n", n);
    for (int i = 0; i < n; i++) {
        const Case &c = cases[i];
        int fd[2];
        if (pipe(fd)) abort();
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            dup2(fd[1], 2);
            close(fd[0]);
            if (c.env) putenv((char *)c.env);
            int rc = c.run();
            fflush(stderr);
            _exit(rc);
        }
        close(fd[1]);
        std::string err;
        char buf[4096];
        ssize_t k;
        while ((k = read(fd[0], buf, sizeof buf)) > 0) err.append(buf, (size_t)k);
        close(fd[0]);
        int status = 0;
        waitpid(pid, &status, 0);
        bool exited0 = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        bool pass = c.expect ? err.find(c.expect) != std::string::npos && (c.exit0 ? exited0 : !exited0) : exited0;
        printf("%s %d - %s\n", pass ? "ok" : "not ok", i + 1, c.name);
        // the report, so that the log shows what a user would see
        size_t at = err.find("cuda-emu:");
        if (at == std::string::npos) at = err.find("ERROR");
        std::string shown = err.substr(at == std::string::npos ? 0 : at, 400);
        for (size_t p = 0; (p = shown.find('\n', p)) != std::string::npos; p += 3) shown.replace(p, 1, "\n# ");
        if (!shown.empty()) printf("# %s\n", shown.c_str());
        if (!pass) failed++;
    }
    return failed ? 1 : 0;
}
