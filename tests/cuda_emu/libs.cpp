// libs.cpp (emulated CUDA, tests/cuda_emu): cuBLAS, cuFFT and NCCL behind entrank's call sites.
//
// cuBLAS: GemmEx and GemmStridedBatchedEx are validated as cuBLAS validates them (sizes, leading
// dimensions, types, compute type), every operand's extent (per batch) must lie in one device
// allocation, C must not overlap A or B, alpha/beta must be host pointers (the default pointer
// mode). The product is OpenBLAS's sgemm; under CUBLAS_COMPUTE_32F_FAST_16BF (FAST_TF32, FAST_16F)
// the operands are first rounded to bf16 (tf32, 10 mantissa bits) to nearest even, as the tensor
// cores see them; accumulation is fp32 (OpenBLAS's order, not cuBLAS's).
// cuFFT: rank-1 R2C/C2R plans on FFTW. The layout (basic or advanced) gives each execution's input
// and output extents, which must lie in device memory; with auto-allocation off the work area must
// be set, lie in device memory, be as large as cufftMakePlanMany64 said, not overlap the data, and
// it is overwritten with NaN on every execution (so that data kept in it is caught). C2R destroys
// its input, as cuFFT's may.
// Both run eagerly on the host thread, after the work queued on their stream (streams.cpp).
// NCCL: nccl_mpi.cpp.
#include <fftw3.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <map>
#include <vector>

#include "cublas_v2.h"
#include "cufft.h"
#include "streams.h"

extern "C" void cblas_sgemm(int order, int transa, int transb, int m, int n, int k, float alpha, const float *A, int lda, const float *B,
                            int ldb, float beta, float *C, int ldc);
enum { CBLAS_COL_MAJOR = 102, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };

// ---- cuBLAS -------------------------------------------------------------------------------------------------
struct cublasContext { uint32_t magic; cudaStream_t stream; };
static const uint32_t LIVE_HANDLE = 0xC0B1A5u;

static void check_handle(cublasHandle_t h, const char *who) {
    if (!h || h->magic != LIVE_HANDLE) emu_fatal("%s: cuBLAS handle %p is not live (not created, or destroyed)", who, (void *)h);
}
extern "C" cublasStatus_t cublasCreate(cublasHandle_t *h) { *h = new cublasContext{LIVE_HANDLE, nullptr}; return CUBLAS_STATUS_SUCCESS; }
extern "C" cublasStatus_t cublasDestroy(cublasHandle_t h) {
    check_handle(h, "cublasDestroy");
    h->magic = 0;   // kept: a later use is reported
    return CUBLAS_STATUS_SUCCESS;
}
extern "C" cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) {
    check_handle(h, "cublasSetStream");
    emu_check_stream(s, "cublasSetStream");
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}

// x rounded to nearest even with `bits` of the 23 mantissa bits kept (NaN and infinity kept).
static float round_mantissa(float x, int bits) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) == 0x7f800000u) return x;
    int drop = 23 - bits;
    uint32_t half = 1u << (drop - 1), lsb = (u >> drop) & 1u;
    u = (u + half - 1 + lsb) & ~((1u << drop) - 1);
    memcpy(&x, &u, 4);
    return x;
}
static int operand_bits(cublasComputeType_t ct) {
    switch (ct) {
    case CUBLAS_COMPUTE_32F_FAST_16BF: return 7;
    case CUBLAS_COMPUTE_32F_FAST_TF32:
    case CUBLAS_COMPUTE_32F_FAST_16F: return 10;
    default: return 23;
    }
}

// Bytes a column-major rows x cols matrix with leading dimension ld spans.
static size_t span(int rows, int cols, int ld) { return rows && cols ? ((size_t)(cols - 1) * (size_t)ld + (size_t)rows) * sizeof(float) : 0; }

static bool overlap(const void *a, size_t na, const void *b, size_t nb) {
    return na && nb && (const char *)a < (const char *)b + nb && (const char *)b < (const char *)a + na;
}


static cublasStatus_t gemm(const char *who, cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void *alpha,
                           const void *A, cudaDataType at, int lda, long long sa, const void *B, cudaDataType bt, int ldb, long long sb,
                           const void *beta, void *C, cudaDataType ct_, int ldc, long long sc, int batch, cublasComputeType_t ct) {
    check_handle(h, who);
    emu_stream_drain(h->stream);
    if (m < 0 || n < 0 || k < 0 || batch < 0) {
        fprintf(stderr, "cuda-emu: %s: negative size (m %d n %d k %d batch %d)\n", who, m, n, k, batch);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if ((ta != CUBLAS_OP_N && ta != CUBLAS_OP_T) || (tb != CUBLAS_OP_N && tb != CUBLAS_OP_T)) return CUBLAS_STATUS_INVALID_VALUE;
    int ar = ta == CUBLAS_OP_N ? m : k, ac = ta == CUBLAS_OP_N ? k : m;
    int br = tb == CUBLAS_OP_N ? k : n, bc = tb == CUBLAS_OP_N ? n : k;
    if (lda < (ar > 1 ? ar : 1) || ldb < (br > 1 ? br : 1) || ldc < (m > 1 ? m : 1)) {
        fprintf(stderr, "cuda-emu: %s: leading dimension too small (m %d n %d k %d, op %d/%d, lda %d ldb %d ldc %d): "
                        "CUBLAS_STATUS_INVALID_VALUE\n", who, m, n, k, ta, tb, lda, ldb, ldc);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (at != CUDA_R_32F || bt != CUDA_R_32F || ct_ != CUDA_R_32F) {
        fprintf(stderr, "cuda-emu: %s: only fp32 operands are emulated\n", who);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    if (ct != CUBLAS_COMPUTE_32F && ct != CUBLAS_COMPUTE_32F_PEDANTIC && ct != CUBLAS_COMPUTE_32F_FAST_16BF &&
        ct != CUBLAS_COMPUTE_32F_FAST_TF32 && ct != CUBLAS_COMPUTE_32F_FAST_16F)
        return CUBLAS_STATUS_NOT_SUPPORTED;   // e.g. COMPUTE_16F or 64F with fp32 data
    if (!alpha || !beta) return CUBLAS_STATUS_INVALID_VALUE;
    if (emu_is_device_pointer(alpha) || emu_is_device_pointer(beta))
        emu_fatal("%s: alpha or beta is a device pointer, but the handle is in host pointer mode", who);
    if (m == 0 || n == 0 || batch == 0) return CUBLAS_STATUS_SUCCESS;
    float a = *(const float *)alpha, b = *(const float *)beta;
    size_t na = span(ar, ac, lda), nb = span(br, bc, ldb), nc = span(m, n, ldc);
    bool reads_ab = k > 0 && a != 0.0f;
    int bits = operand_bits(ct);
    std::vector<float> ra, rb;
    for (int i = 0; i < batch; i++) {
        const float *Ai = (const float *)A + i * sa, *Bi = (const float *)B + i * sb;
        float *Ci = (float *)C + i * sc;
        char what[160];
        if (reads_ab) {
            snprintf(what, sizeof what, "%s operand A (batch %d of %d)", who, i, batch);
            emu_check_device_range(Ai, na, what);
            snprintf(what, sizeof what, "%s operand B (batch %d of %d)", who, i, batch);
            emu_check_device_range(Bi, nb, what);
            if (overlap(Ci, nc, Ai, na) || overlap(Ci, nc, Bi, nb))
                emu_fatal("%s: output C (batch %d) overlaps an input operand (undefined in cuBLAS)", who, i);
        }
        snprintf(what, sizeof what, "%s output C (batch %d of %d)", who, i, batch);
        emu_check_device_range(Ci, nc, what);
        if (!reads_ab) {
            for (int j = 0; j < n; j++)
                for (int r = 0; r < m; r++) {
                    float *c = &Ci[r + (size_t)j * ldc];
                    *c = b == 0.0f ? 0.0f : b * *c;   // beta = 0: C is not read (it may hold NaN)
                }
            continue;
        }
        if (bits != 23) {
            ra.resize(na / sizeof(float));
            rb.resize(nb / sizeof(float));
            for (size_t j = 0; j < ra.size(); j++) ra[j] = round_mantissa(Ai[j], bits);
            for (size_t j = 0; j < rb.size(); j++) rb[j] = round_mantissa(Bi[j], bits);
            Ai = ra.data();
            Bi = rb.data();
        }
        if (b == 0.0f)   // cuBLAS does not read C when beta = 0 (NaN there must not leak); sgemm might
            for (int j = 0; j < n; j++) memset(&Ci[(size_t)j * ldc], 0, (size_t)m * sizeof(float));
        cblas_sgemm(CBLAS_COL_MAJOR, ta == CUBLAS_OP_N ? CBLAS_NO_TRANS : CBLAS_TRANS, tb == CUBLAS_OP_N ? CBLAS_NO_TRANS : CBLAS_TRANS, m, n,
                    k, a, Ai, lda, Bi, ldb, b, Ci, ldc);
    }
    return CUBLAS_STATUS_SUCCESS;
}

extern "C" cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void *alpha,
                                       const void *A, cudaDataType at, int lda, const void *B, cudaDataType bt, int ldb, const void *beta,
                                       void *C, cudaDataType ct_, int ldc, cublasComputeType_t ct, cublasGemmAlgo_t) {
    return gemm("cublasGemmEx", h, ta, tb, m, n, k, alpha, A, at, lda, 0, B, bt, ldb, 0, beta, C, ct_, ldc, 0, 1, ct);
}

extern "C" cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                                     const void *alpha, const void *A, cudaDataType at, int lda, long long sa, const void *B,
                                                     cudaDataType bt, int ldb, long long sb, const void *beta, void *C, cudaDataType ct_, int ldc,
                                                     long long sc, int batch, cublasComputeType_t ct, cublasGemmAlgo_t) {
    return gemm("cublasGemmStridedBatchedEx", h, ta, tb, m, n, k, alpha, A, at, lda, sa, B, bt, ldb, sb, beta, C, ct_, ldc, sc, batch, ct);
}

// ---- cuFFT -----------------------------------------------------------------------------------------------------
struct Plan {
    bool made = false, auto_alloc = true;
    cufftType type = CUFFT_R2C;
    long long n = 0, batch = 0, istride = 1, idist = 0, ostride = 1, odist = 0;
    size_t work_bytes = 0;
    void *work = nullptr;
    cudaStream_t stream = nullptr;
};
static std::map<cufftHandle, Plan> plans;
static cufftHandle next_plan = 1;

static Plan *plan_of(cufftHandle h, const char *who) {
    auto it = plans.find(h);
    if (it == plans.end()) emu_fatal("%s: cuFFT plan %d is not live (not created, or destroyed)", who, h);
    return &it->second;
}

extern "C" cufftResult cufftCreate(cufftHandle *h) { *h = next_plan++; plans[*h] = Plan(); return CUFFT_SUCCESS; }
extern "C" cufftResult cufftDestroy(cufftHandle h) { plan_of(h, "cufftDestroy"); plans.erase(h); return CUFFT_SUCCESS; }
extern "C" cufftResult cufftSetAutoAllocation(cufftHandle h, int on) {
    Plan *p = plan_of(h, "cufftSetAutoAllocation");
    if (p->made) emu_fatal("cufftSetAutoAllocation: called after the plan was made (cuFFT ignores it then)");
    p->auto_alloc = on != 0;
    return CUFFT_SUCCESS;
}
extern "C" cufftResult cufftMakePlanMany64(cufftHandle h, int rank, long long *n, long long *inembed, long long istride, long long idist,
                                           long long *onembed, long long ostride, long long odist, cufftType type, long long batch,
                                           size_t *work) {
    Plan *p = plan_of(h, "cufftMakePlanMany64");
    if (rank != 1) return CUFFT_INVALID_VALUE;   // entrank's transforms are rank 1; others are not emulated
    if (!n || n[0] < 1 || batch < 1) return CUFFT_INVALID_SIZE;
    if (type != CUFFT_R2C && type != CUFFT_C2R) return CUFFT_INVALID_TYPE;
    long long half = n[0] / 2 + 1, in_len = type == CUFFT_R2C ? n[0] : half, out_len = type == CUFFT_R2C ? half : n[0];
    p->type = type;
    p->n = n[0];
    p->batch = batch;
    if (!inembed || !onembed) {   // basic layout: strides and distances are ignored (cuFFT's rule)
        if (!!inembed != !!onembed) return CUFFT_INVALID_VALUE;
        p->istride = p->ostride = 1;
        p->idist = in_len;
        p->odist = out_len;
    } else {
        if (inembed[0] < in_len || onembed[0] < out_len || istride < 1 || ostride < 1) return CUFFT_INVALID_VALUE;
        if (idist < inembed[0] * istride || odist < onembed[0] * ostride) return CUFFT_INVALID_VALUE;   // batches would overlap
        p->istride = istride;
        p->idist = idist;
        p->ostride = ostride;
        p->odist = odist;
    }
    // A work area that grows with the transform, so that carving it out of scratch is exercised.
    p->work_bytes = (size_t)half * 8 * (size_t)(batch < 16 ? batch : 16) + 4096;
    p->made = true;
    if (work) *work = p->work_bytes;
    return CUFFT_SUCCESS;
}
extern "C" cufftResult cufftSetStream(cufftHandle h, cudaStream_t s) {
    Plan *p = plan_of(h, "cufftSetStream");
    emu_check_stream(s, "cufftSetStream");
    p->stream = s;
    return CUFFT_SUCCESS;
}
extern "C" cufftResult cufftSetWorkArea(cufftHandle h, void *w) {
    plan_of(h, "cufftSetWorkArea")->work = w;
    return CUFFT_SUCCESS;
}

static void prepare(Plan *p, const void *in, size_t in_elem, const void *out, size_t out_elem, const char *who) {
    if (!p->made) emu_fatal("%s: the plan was not made (cufftMakePlanMany64)", who);
    emu_stream_drain(p->stream);
    long long in_len = p->type == CUFFT_R2C ? p->n : p->n / 2 + 1, out_len = p->type == CUFFT_R2C ? p->n / 2 + 1 : p->n;
    size_t in_bytes = (size_t)((p->batch - 1) * p->idist + (in_len - 1) * p->istride + 1) * in_elem;
    size_t out_bytes = (size_t)((p->batch - 1) * p->odist + (out_len - 1) * p->ostride + 1) * out_elem;
    char what[96];
    snprintf(what, sizeof what, "%s input", who);
    emu_check_device_range(in, in_bytes, what);
    snprintf(what, sizeof what, "%s output", who);
    emu_check_device_range(out, out_bytes, what);
    if (in != out && overlap(in, in_bytes, out, out_bytes)) emu_fatal("%s: input and output overlap without being in place", who);
    if (!p->auto_alloc) {
        if (!p->work) emu_fatal("%s: auto-allocation is off and no work area was set (cufftSetWorkArea)", who);
        snprintf(what, sizeof what, "%s work area (%zu bytes)", who, p->work_bytes);
        emu_check_device_range(p->work, p->work_bytes, what);
        if (overlap(p->work, p->work_bytes, in, in_bytes) || overlap(p->work, p->work_bytes, out, out_bytes))
            emu_fatal("%s: the work area overlaps the transform's input or output", who);
        memset(p->work, 0xFF, p->work_bytes);   // cuFFT leaves arbitrary data in it
    }
}

extern "C" cufftResult cufftExecR2C(cufftHandle h, cufftReal *in, cufftComplex *out) {
    Plan *p = plan_of(h, "cufftExecR2C");
    if (p->type != CUFFT_R2C) return CUFFT_INVALID_VALUE;
    prepare(p, in, sizeof(float), out, sizeof(cufftComplex), "cufftExecR2C");
    int n = (int)p->n;
    fftwf_plan f = fftwf_plan_many_dft_r2c(1, &n, (int)p->batch, in, nullptr, (int)p->istride, (int)p->idist, (fftwf_complex *)out, nullptr,
                                           (int)p->ostride, (int)p->odist, FFTW_ESTIMATE);
    if (!f) return CUFFT_EXEC_FAILED;
    fftwf_execute(f);
    fftwf_destroy_plan(f);
    return CUFFT_SUCCESS;
}

extern "C" cufftResult cufftExecC2R(cufftHandle h, cufftComplex *in, cufftReal *out) {
    Plan *p = plan_of(h, "cufftExecC2R");
    if (p->type != CUFFT_C2R) return CUFFT_INVALID_VALUE;
    prepare(p, in, sizeof(cufftComplex), out, sizeof(float), "cufftExecC2R");
    int n = (int)p->n;
    fftwf_plan f = fftwf_plan_many_dft_c2r(1, &n, (int)p->batch, (fftwf_complex *)in, nullptr, (int)p->istride, (int)p->idist, out, nullptr,
                                           (int)p->ostride, (int)p->odist, FFTW_ESTIMATE);   // destroys `in`, as cuFFT may
    if (!f) return CUFFT_EXEC_FAILED;
    fftwf_execute(f);
    fftwf_destroy_plan(f);
    return CUFFT_SUCCESS;
}
