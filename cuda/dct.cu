// dct.cu: the orthonormal DCT-II of R rows of length T and its inverse (DCT-III), for Spectral
// Gated Attention (docs/design.md section 3; the CPU twin is cpu_dct_rows in src/cpu/sga.inc, FFTW's
// REDFT10/REDFT01 with the orthonormal scaling). fp32 throughout (docs/design.md section 7). Two methods,
// chosen with cuda_set_dct_method (sga_dct.h):
//
// FFT (Makhoul 1980): one real-input FFT of length T per row, valid for every T >= 1, odd
// and prime lengths included, and half the scratch of the length-2T mirrored FFT.
//   Forward. Reorder each row: v_n = x_{2n} for n < ceil(T/2), then the odd samples backwards,
//   v_{T-1-m} = x_{2m+1}. Every cosine of the DCT then becomes one term of a DFT:
//     sum_j x_j cos(pi (2j+1) k / 2T) = sum_n v_n cos(pi (4n+1) k / 2T) = Re(W_k V_k),
//   V = DFT(v) (V_k = sum_n v_n e^{-2 pi i k n / T}), W_k = e^{-i theta_k}, theta_k = pi k / 2T
//   (for odd j = 2m+1, 2j+1 = 4T - (4n+1) with n = T-1-m, and the cosine is even and 2 pi
//   periodic). The orthonormal DCT is s_k = c_k Re(W_k V_k), c_0 = sqrt(1/T), c_k = sqrt(2/T):
//   the CPU's s_k = c_k Y_k / 2 with FFTW's Y_k = 2 sum_j x_j cos(...). cuFFT's R2C gives V_k for
//   k <= T/2; the others are V_k = conj(V_{T-k}) since v is real.
//   Inverse. With A_k + i B_k = W_k V_k, the forward gives A_k = s_k / c_k and, evaluating it at
//   T-k, B_k = -s_{T-k} / c_{T-k} (B_0 = 0). So V_k = e^{+i theta_k} (s_k / c_k - i s_{T-k} / c_{T-k}),
//   and v = IDFT(V), computed by cuFFT's unnormalised C2R from V_0..V_{T/2} after dividing by T
//   (folded in: 1 / (c_0 T) = 1/sqrt(T), 1 / (c_k T) = 1/sqrt(2T)). V_0 and, for even T,
//   V_{T/2} = sqrt(2) s_{T/2} / c_{T/2} are real; their imaginary parts are set to exactly 0 as
//   C2R's Hermitian input requires. Then undo the reordering: x_{2m} = v_m, x_{2m+1} = v_{T-1-m}.
//   Three passes: reorder/twiddle kernel, batched cuFFT over the R rows, twiddle/reorder kernel.
//
// GEMM: S (R,T) = Z (R,T) D^T with the orthonormal DCT matrix D[k][j] = c_k cos(pi (2j+1) k / 2T)
// (built on the device, in double, once per T), and Z = S D for the inverse (D is orthogonal).
// O(T^2) per row instead of O(T log T), but one tensor-core GEMM instead of three memory-bound
// passes: TF32 when the backend's GEMMs run in bf16 (training), exact fp32 under CUDA_GEMM_FP32.
//
// Cached state (the only mutable globals of the file; the backend serves one device from one host
// thread, so no lock): a small LRU table of per-length objects (twiddles, DCT matrices, cuFFT
// plans per (T, R, direction)) and one scratch buffer that grows to the largest transform. Plans
// allocate no work area of their own (it is carved from the scratch) and are bound to the context
// stream at every execution, so they survive a backend destroyed and created again on the device.
#include <string.h>
#include "reduce.cuh"
#include "sga_dct.h"

static CudaDctMethod dct_method = CUDA_DCT_FFT;

extern "C" void cuda_set_dct_method(CudaDctMethod m) {
    if (m != CUDA_DCT_FFT && m != CUDA_DCT_GEMM) die(1, "unknown CUDA DCT method %d", (int)m);
    dct_method = m;
}

extern "C" CudaDctMethod cuda_get_dct_method(void) { return dct_method; }

// ---- kernels --------------------------------------------------------------------------------

#define DCT_THREADS 256


// tw (T) = (cos, sin)(theta_k), theta_k = pi k / 2T, evaluated in double.
static __global__ void twiddle_kernel(float2 *tw, int T) {
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < T; k += gridDim.x * blockDim.x) {
        double s, c;
        sincospi((double)k / (2.0 * T), &s, &c);
        tw[k] = make_float2((float)c, (float)s);
    }
}

// D (T,T): D[k][j] = c_k cos(pi (2j+1) k / 2T). The argument is reduced modulo 4T (one period) in
// integers so that cospi sees an exact small value.
static __global__ void dct_matrix_kernel(float *D, int T) {
    size_t n = (size_t)T * T;
    GRID_STRIDE(idx, n) {
        long long k = (long long)(idx / T), j = (long long)(idx % T);
        long long m = ((2 * j + 1) * k) % (4LL * T);
        double c = k == 0 ? sqrt(1.0 / T) : sqrt(2.0 / T);
        D[idx] = (float)(c * cospi((double)m / (2.0 * T)));
    }
}

// v (R,T): Makhoul's reordering of each row of x (R,T), even samples ascending then odd samples
// descending: v_n = x_{2n} for n < ceil(T/2), v_n = x_{2(T-1-n)+1} after.
static __global__ void makhoul_pack_kernel(float *v, const float *x, int R, int T) {
    size_t total = (size_t)R * T;
    int half = (T + 1) / 2;
    GRID_STRIDE(idx, total) {
        size_t row = idx / T;
        int n = (int)(idx % T);
        int j = n < half ? 2 * n : 2 * (T - 1 - n) + 1;
        v[idx] = x[row * T + j];
    }
}

// x (R,T) from v (R,T): the inverse reordering, x_{2m} = v_m, x_{2m+1} = v_{T-1-m}.
static __global__ void makhoul_unpack_kernel(float *x, const float *v, int R, int T) {
    size_t total = (size_t)R * T;
    GRID_STRIDE(idx, total) {
        size_t row = idx / T;
        int j = (int)(idx % T);
        int n = (j & 1) ? T - 1 - (j >> 1) : (j >> 1);
        x[idx] = v[row * T + n];
    }
}

// s (R,T) = c_k Re(W_k V_k) from the half spectrum V (R, T/2+1) of the reordered rows.
static __global__ void dct2_post_kernel(float *s, const float2 *V, const float2 *tw, int R, int T, float c0, float ck) {
    size_t total = (size_t)R * T;
    int H = T / 2 + 1;
    GRID_STRIDE(idx, total) {
        size_t row = idx / T;
        int k = (int)(idx % T);
        float2 z;
        if (k < H) {
            z = V[row * H + k];
        } else {                       // V_k = conj(V_{T-k}), 1 <= T-k < H
            z = V[row * H + (T - k)];
            z.y = -z.y;
        }
        // Re((cos - i sin)(a + i b)) = a cos + b sin
        s[idx] = (k == 0 ? c0 : ck) * (tw[k].x * z.x + tw[k].y * z.y);
    }
}

// V (R, T/2+1) = e^{i theta_k} (s_k / (c_k T) - i s_{T-k} / (c_{T-k} T)): the half spectrum whose
// unnormalised inverse DFT is the reordered DCT-III of s (R,T). ic0 = 1/sqrt(T), ick = 1/sqrt(2T).
static __global__ void dct3_pre_kernel(float2 *V, const float *s, const float2 *tw, int R, int T, float ic0, float ick) {
    int H = T / 2 + 1;
    size_t total = (size_t)R * H;
    GRID_STRIDE(idx, total) {
        size_t row = idx / H;
        int k = (int)(idx % H);                        // k <= T/2 < T
        const float *x = s + row * T;
        float a = x[k] * (k == 0 ? ic0 : ick);
        float b = k == 0 ? 0.0f : x[T - k] * ick;      // T-k in [T - T/2, T-1]
        float c = tw[k].x, sn = tw[k].y;
        // (cos + i sin)(a - i b) = (a cos + b sin) + i (a sin - b cos)
        float re = c * a + sn * b, im = sn * a - c * b;
        if (k == 0 || 2 * k == T) im = 0.0f;           // exactly real in exact arithmetic
        V[idx] = make_float2(re, im);
    }
}

// ---- cached per-length objects ------------------------------------------------------------------

#define DCT_CACHE 16
enum { DCT_TWIDDLES = 1, DCT_MATRIX, DCT_PLAN_R2C, DCT_PLAN_C2R };

typedef struct {
    int kind;                      // DCT_*; 0 for an empty slot
    int T;
    long long R;                   // the batch of a plan; 0 for tables
    void *table;                   // device memory of DCT_TWIDDLES (T float2) and DCT_MATRIX (T*T float)
    cufftHandle plan;              // DCT_PLAN_*, without a work area of its own
    size_t work_bytes;             // the work area the plan needs
    unsigned long long last_use;   // LRU clock
} DctCached;

static DctCached dct_cache[DCT_CACHE];
static unsigned long long dct_clock = 0;

// Plans evicted while work that runs them may still be queued on the stream: each is destroyed
// once an event recorded at its eviction has passed (polled at every cache miss), so that an
// eviction never waits for the device.
#define DCT_RETIRED 16
typedef struct {
    int used;
    cufftHandle plan;
    cudaEvent_t done;
} DctRetired;
static DctRetired dct_retired[DCT_RETIRED];

// Destroys the retired plans whose event has passed; with `wait`, all of them (waiting for each).
static void dct_retired_collect(int wait) {
    for (int i = 0; i < DCT_RETIRED; i++) {
        DctRetired *r = &dct_retired[i];
        if (!r->used) continue;
        if (wait) {
            cudaCheck(cudaEventSynchronize(r->done));
        } else {
            cudaError_t q = cudaEventQuery(r->done);
            if (q == cudaErrorNotReady) { (void)cudaGetLastError(); continue; }
            cudaCheck(q);
        }
        cufftCheck(cufftDestroy(r->plan));
        cudaCheck(cudaEventDestroy(r->done));
        r->used = 0;
    }
}

static void dct_retire_plan(cufftHandle plan) {
    dct_retired_collect(0);
    DctRetired *slot = NULL;
    for (int i = 0; i < DCT_RETIRED && !slot; i++) if (!dct_retired[i].used) slot = &dct_retired[i];
    if (!slot) {   // more plans in flight than slots: rare (16 evictions within one step); wait for them
        dct_retired_collect(1);
        slot = &dct_retired[0];
    }
    slot->used = 1;
    slot->plan = plan;
    cudaCheck(cudaEventCreateWithFlags(&slot->done, cudaEventDisableTiming));
    cudaCheck(cudaEventRecord(slot->done, cuda_context()->stream));
}

static void dct_cache_release(DctCached *e) {
    // Work queued earlier may still read the table or run the plan: the table is freed in stream
    // order, the plan retired until the stream has passed this point.
    if (e->table) cudaCheck(cudaFreeAsync(e->table, cuda_context()->stream));
    if (e->kind == DCT_PLAN_R2C || e->kind == DCT_PLAN_C2R) dct_retire_plan(e->plan);
    memset(e, 0, sizeof *e);
}

// The entry for (kind, T, R), *created = 1 when the slot is new and the caller must fill it
// (the least recently used entry is released to make room).
static DctCached *dct_cache_get(int kind, int T, long long R, int *created) {
    DctCached *victim = &dct_cache[0];
    for (int i = 0; i < DCT_CACHE; i++) {
        DctCached *e = &dct_cache[i];
        if (e->kind == kind && e->T == T && e->R == R) {
            e->last_use = ++dct_clock;
            *created = 0;
            return e;
        }
        if (e->kind == 0 || (victim->kind != 0 && e->last_use < victim->last_use)) victim = e;
    }
    if (victim->kind != 0) dct_cache_release(victim);
    victim->kind = kind;
    victim->T = T;
    victim->R = R;
    victim->last_use = ++dct_clock;
    *created = 1;
    return victim;
}

static const float2 *dct_twiddles(int T) {   // (T)
    int created;
    DctCached *e = dct_cache_get(DCT_TWIDDLES, T, 0, &created);
    if (created) {
        cudaCheck(cudaMallocAsync(&e->table, (size_t)T * sizeof(float2), cuda_context()->stream));
        twiddle_kernel<<<stride_grid(T, DCT_THREADS), DCT_THREADS, 0, cuda_context()->stream>>>((float2 *)e->table, T);
        cudaCheckLaunch();
    }
    return (const float2 *)e->table;
}

static const float *dct_matrix(int T) {      // (T,T)
    int created;
    DctCached *e = dct_cache_get(DCT_MATRIX, T, 0, &created);
    if (created) {
        cudaCheck(cudaMallocAsync(&e->table, (size_t)T * T * sizeof(float), cuda_context()->stream));
        dct_matrix_kernel<<<stride_grid((size_t)T * T, DCT_THREADS), DCT_THREADS, 0, cuda_context()->stream>>>((float *)e->table, T);
        cudaCheckLaunch();
    }
    return (const float *)e->table;
}

// Batched real FFT of R rows of length T: R2C (forward) from (R,T) real to (R, T/2+1) complex, or
// C2R (inverse, unnormalised) back; the default packed layouts.
static DctCached *dct_plan(int T, int R, int inverse) {
    int created;
    DctCached *e = dct_cache_get(inverse ? DCT_PLAN_C2R : DCT_PLAN_R2C, T, R, &created);
    if (created) {
        long long n = T, H = T / 2 + 1;
        cufftCheck(cufftCreate(&e->plan));
        cufftCheck(cufftSetAutoAllocation(e->plan, 0));
        if (inverse) cufftCheck(cufftMakePlanMany64(e->plan, 1, &n, NULL, 1, H, NULL, 1, n, CUFFT_C2R, R, &e->work_bytes));
        else cufftCheck(cufftMakePlanMany64(e->plan, 1, &n, NULL, 1, n, NULL, 1, H, CUFFT_R2C, R, &e->work_bytes));
    }
    return e;
}

// Scratch for the FFT's intermediate rows and work area (and the GEMM's copy of an aliased
// input). It grows, never shrinks; the old buffer is freed in stream order, after the work that
// still uses it.
static void *dct_scratch = NULL;
static size_t dct_scratch_bytes = 0;

static void *dct_scratch_get(size_t bytes) {
    if (bytes > dct_scratch_bytes) {
        cudaStream_t stream = cuda_context()->stream;
        if (dct_scratch) cudaCheck(cudaFreeAsync(dct_scratch, stream));
        cudaCheck(cudaMallocAsync(&dct_scratch, bytes, stream));
        dct_scratch_bytes = bytes;
    }
    return dct_scratch;
}

static size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

// Everything the DCT keeps (tables, plans, scratch), released when the backend is destroyed, so
// that a backend created again starts clean and nothing outlives the device context.
void cuda_dct_release_all(void) {
    for (int i = 0; i < DCT_CACHE; i++) if (dct_cache[i].kind) dct_cache_release(&dct_cache[i]);
    if (dct_scratch) cudaCheck(cudaFreeAsync(dct_scratch, cuda_context()->stream));
    dct_scratch = NULL;
    dct_scratch_bytes = 0;
    dct_retired_collect(1);
    dct_clock = 0;
}

// ---- the two methods ----------------------------------------------------------------------------

// out (R,T), in (R,T); in is read by the first pass only and out written by the last, so they may alias.
static void dct_fft(float *out, const float *in, int R, int T, int inverse) {
    CudaContext *ctx = cuda_context();
    int H = T / 2 + 1;
    size_t n_real = (size_t)R * T, n_half = (size_t)R * H;
    DctCached *plan = dct_plan(T, R, inverse);
    const float2 *tw = dct_twiddles(T);
    size_t real_bytes = align256(n_real * sizeof(float)), half_bytes = align256(n_half * sizeof(cufftComplex));
    char *base = (char *)dct_scratch_get(real_bytes + half_bytes + align256(plan->work_bytes));
    float *v = (float *)base;                                   // (R,T) reordered rows
    cufftComplex *V = (cufftComplex *)(base + real_bytes);      // (R, T/2+1) their half spectra
    cufftCheck(cufftSetStream(plan->plan, ctx->stream));
    cufftCheck(cufftSetWorkArea(plan->plan, base + real_bytes + half_bytes));
    if (!inverse) {
        makhoul_pack_kernel<<<stride_grid(n_real, DCT_THREADS), DCT_THREADS, 0, ctx->stream>>>(v, in, R, T);
        cudaCheckLaunch();
        cufftCheck(cufftExecR2C(plan->plan, v, V));
        float c0 = (float)sqrt(1.0 / T), ck = (float)sqrt(2.0 / T);
        dct2_post_kernel<<<stride_grid(n_real, DCT_THREADS), DCT_THREADS, 0, ctx->stream>>>(out, V, tw, R, T, c0, ck);
        cudaCheckLaunch();
    } else {
        float ic0 = (float)(1.0 / sqrt((double)T)), ick = (float)(1.0 / sqrt(2.0 * T));
        dct3_pre_kernel<<<stride_grid(n_half, DCT_THREADS), DCT_THREADS, 0, ctx->stream>>>(V, in, tw, R, T, ic0, ick);
        cudaCheckLaunch();
        cufftCheck(cufftExecC2R(plan->plan, V, v));   // overwrites V, which is scratch
        makhoul_unpack_kernel<<<stride_grid(n_real, DCT_THREADS), DCT_THREADS, 0, ctx->stream>>>(out, v, R, T);
        cudaCheckLaunch();
    }
}

// out (R,T), in (R,T). Column-major, as cuBLAS sees them, the rows are the columns of (T,R)
// matrices and the row-major D is D^T: forward S^T = D Z^T (op T on the stored D^T), inverse
// Z^T = D^T S^T (op N).
static void dct_gemm(float *out, const float *in, int R, int T, int inverse) {
    CudaContext *ctx = cuda_context();
    const float *D = dct_matrix(T);
    if (out == in) {   // the GEMM must not read what it writes
        size_t bytes = (size_t)R * T * sizeof(float);
        float *copy = (float *)dct_scratch_get(bytes);
        cudaCheck(cudaMemcpyAsync(copy, in, bytes, cudaMemcpyDeviceToDevice, ctx->stream));
        in = copy;
    }
    cublasComputeType_t compute = ctx->gemm_compute == CUBLAS_COMPUTE_32F ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_FAST_TF32;
    const float one = 1.0f, zero = 0.0f;
    cublasCheck(cublasGemmEx(ctx->cublas, inverse ? CUBLAS_OP_N : CUBLAS_OP_T, CUBLAS_OP_N, T, R, T, &one, D, CUDA_R_32F, T,
                             in, CUDA_R_32F, T, &zero, out, CUDA_R_32F, T, compute, CUBLAS_GEMM_DEFAULT));
}

// The op dct_rows: out (R,T) = orthonormal DCT-II of each row of in (R,T) (inverse = 0), or its
// inverse, the orthonormal DCT-III (inverse = 1). Queued on the context stream; out may alias in.
void cuda_dct_rows(void *out_, const void *in_, int R, int T, int inverse) {
    if (R <= 0 || T <= 0) return;
    float *out = (float *)out_;
    const float *in = (const float *)in_;
    if (T == 1) {   // c_0 = 1: both transforms are the identity (and cuFFT has no length-1 plan to trust)
        if (out != in)
            cudaCheck(cudaMemcpyAsync(out, in, (size_t)R * sizeof(float), cudaMemcpyDeviceToDevice, cuda_context()->stream));
        return;
    }
    if (dct_method == CUDA_DCT_GEMM) dct_gemm(out, in, R, T, inverse);
    else dct_fft(out, in, R, T, inverse);
}
