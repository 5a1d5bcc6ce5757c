// attention_fused.cu: fused causal attention on the GPU (attention.fused; CPU twin:
// src/cpu/attention_fused.inc). softmax(scale q k^T) v without a (T,T) tensor: the forward pass
// walks the keys in shared-memory tiles with an online softmax and keeps only each row's
// log-sum-exp (and entropy); the backward pass recomputes every weight p = exp(s - lse) tile by
// tile.
//
// Layout. A block owns FUSED_ROWS consecutive rows of one head (bh = blockIdx.y), one thread per
// row; the tiles of the other side (keys for the forward pass and dq, queries for dk/dv) pass
// through shared memory FUSED_ROWS rows at a time, and every thread reads them in the same order
// (shared-memory broadcasts). Tiles entirely above the diagonal are never loaded. Each thread
// accumulates its row in fp32 registers/local memory, in a fixed order: no atomics, so every run
// is bitwise the same. dk/dv and dq are two kernels (one owns key rows and walks the query tiles
// below them, the other owns query rows and walks the key tiles), which is what makes the
// backward pass atomic-free. This is a plain CUDA-core kernel for heads of at most FUSED_MAX_HS:
// what it buys is memory (no (B,NH,T,T) tensors), not tensor-core speed.
//
// Barriers: the tile loops' bounds depend on the block only (never on the thread's row), and
// threads whose row lies past T still load and wait, so every __syncthreads is reached by the
// whole block.
#include <math.h>
#include "reduce.cuh"

#define FUSED_ROWS 32      // rows a block owns (its threads) and rows of a shared tile
#define FUSED_MAX_HS 128   // the largest head size: two (FUSED_ROWS, FUSED_MAX_HS) fp32 tiles = 32 KiB of shared memory

static __device__ int fused_min(int a, int b) { return a < b ? a : b; }

// a (=) x[base, base + n), b (=) z[base, base + n): one shared tile pair, the block's threads
// striding over it (the callers put the barriers around it).
static __device__ void fused_load_tiles(float *a, float *b, const float *x, const float *z, size_t base, int n) {
    for (int e = threadIdx.x; e < n; e += blockDim.x) {
        a[e] = x[base + e];
        b[e] = z[base + e];
    }
}

// The shared tiles, at file scope and used by all three kernels: nvcc gives each kernel only what
// it uses (32 KiB and a little), and the emulated build's check of 48 KiB of __shared__ per file
// (tests/cuda_emu/emu.mk) sees one set instead of three.
__shared__ float fused_tile_a[FUSED_ROWS * FUSED_MAX_HS];   // (FUSED_ROWS, hs) keys, or queries (dk/dv)
__shared__ float fused_tile_b[FUSED_ROWS * FUSED_MAX_HS];   // (FUSED_ROWS, hs) values, or output gradients (dk/dv)
__shared__ float fused_rows_lse[FUSED_ROWS], fused_rows_D[FUSED_ROWS];   // (FUSED_ROWS) the query tile's lse and D (dk/dv)

// y (=) (BH,T,hs), lse (=) (BH,T), ent (=) (BH,T) from q, k, v (BH,T,hs). Thread: query row i.
// m is the running max of the row's logits, l = sum exp(s - m), a = sum exp(s - m) (s - m), all
// rescaled when m grows (a relative to m, so that lse - E_p[s] does not cancel for large logits):
// lse = m + log l, H = log l - a / l.
__global__ static void attn_fused_forward_kernel(float *y, float *lse, float *ent, const float *q, const float *k,
                                                 const float *v, float scale, int T, int hs) {
    float *ks = fused_tile_a, *vs = fused_tile_b;   // (FUSED_ROWS, hs) the key and value tiles
    int bh = blockIdx.y, q0 = blockIdx.x * FUSED_ROWS, i = q0 + threadIdx.x;
    size_t off = (size_t)bh * T * hs;
    bool active = i < T;
    float qi[FUSED_MAX_HS], acc[FUSED_MAX_HS];   // (hs) this row's query and output
    for (int d = 0; d < hs; d++) {
        qi[d] = active ? q[off + (size_t)i * hs + d] : 0.0f;
        acc[d] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f, a = 0.0f;
    int last = fused_min(q0 + FUSED_ROWS, T);   // keys < last: what the block's rows see
    for (int j0 = 0; j0 < last; j0 += FUSED_ROWS) {
        int nk = fused_min(FUSED_ROWS, last - j0);
        __syncthreads();   // every thread is done with the previous tile
        fused_load_tiles(ks, vs, k, v, off + (size_t)j0 * hs, nk * hs);
        __syncthreads();
        if (!active) continue;
        for (int jj = 0; jj < nk && j0 + jj <= i; jj++) {
            const float *kj = ks + jj * hs, *vj = vs + jj * hs;
            float s = 0.0f;
            for (int d = 0; d < hs; d++) s += qi[d] * kj[d];
            s *= scale;
            if (s > m) {
                bool first = j0 + jj == 0;
                float r = first ? 0.0f : expf(m - s);
                a = first ? 0.0f : r * (a - l * (s - m));
                l *= r;
                for (int d = 0; d < hs; d++) acc[d] *= r;
                m = s;
            }
            float p = expf(s - m);
            l += p;
            a += p * (s - m);
            for (int d = 0; d < hs; d++) acc[d] += p * vj[d];
        }
    }
    if (!active) return;
    float inv = 1.0f / l;
    for (int d = 0; d < hs; d++) y[off + (size_t)i * hs + d] = acc[d] * inv;
    lse[(size_t)bh * T + i] = m + logf(l);
    ent[(size_t)bh * T + i] = logf(l) - a * inv;
}

// D_i = dy_i . y_i of query row i (the softmax backward's row term), recomputed by whoever needs it.
static __device__ float fused_row_dot(const float *dy, const float *y, int hs) {
    float D = 0.0f;
    for (int d = 0; d < hs; d++) D += dy[d] * y[d];
    return D;
}

// dk, dv (=) (BH,T,hs). Thread: key row j; it walks the query tiles from its own tile down to T
// (queries i >= j see it): p = exp(scale q_i . k_j - lse_i), dv_j += p dy_i,
// ds = p (dy_i . v_j - D_i), dk_j += scale ds q_i.
__global__ static void attn_fused_backward_dkdv_kernel(float *dk, float *dv, const float *dy, const float *q, const float *k,
                                                       const float *v, const float *y, const float *lse, float scale, int T,
                                                       int hs) {
    float *qs = fused_tile_a, *dys = fused_tile_b;          // (FUSED_ROWS, hs) the query tile and its output gradients
    float *lses = fused_rows_lse, *Ds = fused_rows_D;       // (FUSED_ROWS) its rows' lse and D
    int bh = blockIdx.y, k0 = blockIdx.x * FUSED_ROWS, j = k0 + threadIdx.x;
    size_t off = (size_t)bh * T * hs;
    bool active = j < T;
    float kj[FUSED_MAX_HS], vj[FUSED_MAX_HS], gk[FUSED_MAX_HS], gv[FUSED_MAX_HS];   // (hs) each
    for (int d = 0; d < hs; d++) {
        kj[d] = active ? k[off + (size_t)j * hs + d] : 0.0f;
        vj[d] = active ? v[off + (size_t)j * hs + d] : 0.0f;
        gk[d] = gv[d] = 0.0f;
    }
    for (int i0 = k0; i0 < T; i0 += FUSED_ROWS) {
        int nq = fused_min(FUSED_ROWS, T - i0);
        __syncthreads();   // every thread is done with the previous tile
        fused_load_tiles(qs, dys, q, dy, off + (size_t)i0 * hs, nq * hs);
        if ((int)threadIdx.x < nq) {
            size_t row = off + (size_t)(i0 + threadIdx.x) * hs;
            lses[threadIdx.x] = lse[(size_t)bh * T + i0 + threadIdx.x];
            Ds[threadIdx.x] = fused_row_dot(dy + row, y + row, hs);
        }
        __syncthreads();
        if (!active) continue;
        for (int ii = (j > i0 ? j - i0 : 0); ii < nq; ii++) {
            const float *qi = qs + ii * hs, *dyi = dys + ii * hs;
            float s = 0.0f, dp = 0.0f;
            for (int d = 0; d < hs; d++) {
                s += qi[d] * kj[d];
                dp += dyi[d] * vj[d];
            }
            float p = expf(s * scale - lses[ii]), ds = p * (dp - Ds[ii]) * scale;
            for (int d = 0; d < hs; d++) {
                gv[d] += p * dyi[d];
                gk[d] += ds * qi[d];
            }
        }
    }
    if (!active) return;
    for (int d = 0; d < hs; d++) {
        dk[off + (size_t)j * hs + d] = gk[d];
        dv[off + (size_t)j * hs + d] = gv[d];
    }
}

// dq (=) (BH,T,hs). Thread: query row i; it walks the key tiles up to its block's last row:
// ds = p (dy_i . v_j - D_i), dq_i += scale ds k_j.
__global__ static void attn_fused_backward_dq_kernel(float *dq, const float *dy, const float *q, const float *k, const float *v,
                                                     const float *y, const float *lse, float scale, int T, int hs) {
    float *ks = fused_tile_a, *vs = fused_tile_b;   // (FUSED_ROWS, hs) the key and value tiles
    int bh = blockIdx.y, q0 = blockIdx.x * FUSED_ROWS, i = q0 + threadIdx.x;
    size_t off = (size_t)bh * T * hs;
    bool active = i < T;
    float qi[FUSED_MAX_HS], dyi[FUSED_MAX_HS], gq[FUSED_MAX_HS];   // (hs) each
    for (int d = 0; d < hs; d++) {
        qi[d] = active ? q[off + (size_t)i * hs + d] : 0.0f;
        dyi[d] = active ? dy[off + (size_t)i * hs + d] : 0.0f;
        gq[d] = 0.0f;
    }
    float lse_i = active ? lse[(size_t)bh * T + i] : 0.0f;
    float D = active ? fused_row_dot(dy + off + (size_t)i * hs, y + off + (size_t)i * hs, hs) : 0.0f;
    int last = fused_min(q0 + FUSED_ROWS, T);
    for (int j0 = 0; j0 < last; j0 += FUSED_ROWS) {
        int nk = fused_min(FUSED_ROWS, last - j0);
        __syncthreads();   // every thread is done with the previous tile
        fused_load_tiles(ks, vs, k, v, off + (size_t)j0 * hs, nk * hs);
        __syncthreads();
        if (!active) continue;
        for (int jj = 0; jj < nk && j0 + jj <= i; jj++) {
            const float *kj = ks + jj * hs, *vj = vs + jj * hs;
            float s = 0.0f, dp = 0.0f;
            for (int d = 0; d < hs; d++) {
                s += qi[d] * kj[d];
                dp += dyi[d] * vj[d];
            }
            float p = expf(s * scale - lse_i), ds = p * (dp - D) * scale;
            for (int d = 0; d < hs; d++) gq[d] += ds * kj[d];
        }
    }
    if (!active) return;
    for (int d = 0; d < hs; d++) dq[off + (size_t)i * hs + d] = gq[d];
}

// The grid of the three kernels: (row tiles, BH), FUSED_ROWS threads a block.
static dim3 fused_grid(int BH, int T, int hs) {
    if (hs > FUSED_MAX_HS) die(1, "attention.fused: head size %d is over the CUDA kernels' %d", hs, FUSED_MAX_HS);
    if (BH > 65535) die(1, "attention.fused: %d sequence-heads are over the grid's 65535", BH);
    return dim3(ceil_div((size_t)T, FUSED_ROWS), (unsigned int)BH);
}

// y (=) (BH,T,hs), lse (=) (BH,T), ent (=) (BH,T); q, k, v (BH,T,hs)
void cuda_attn_fused_forward(void *y, void *lse, void *ent, const void *q, const void *k, const void *v, double scale, int BH,
                             int T, int hs) {
    if (BH <= 0 || T <= 0 || hs <= 0) return;
    attn_fused_forward_kernel<<<fused_grid(BH, T, hs), FUSED_ROWS, 0, cuda_context()->stream>>>(
        (float *)y, (float *)lse, (float *)ent, (const float *)q, (const float *)k, (const float *)v, (float)scale, T, hs);
    cudaCheckLaunch();
}

// dq, dk, dv (=) (BH,T,hs); dy, q, k, v, y (BH,T,hs), lse (BH,T)
void cuda_attn_fused_backward(void *dq, void *dk, void *dv, const void *dy, const void *q, const void *k, const void *v,
                              const void *y, const void *lse, double scale, int BH, int T, int hs) {
    if (BH <= 0 || T <= 0 || hs <= 0) return;
    dim3 grid = fused_grid(BH, T, hs);
    attn_fused_backward_dkdv_kernel<<<grid, FUSED_ROWS, 0, cuda_context()->stream>>>(
        (float *)dk, (float *)dv, (const float *)dy, (const float *)q, (const float *)k, (const float *)v, (const float *)y,
        (const float *)lse, (float)scale, T, hs);
    cudaCheckLaunch();
    attn_fused_backward_dq_kernel<<<grid, FUSED_ROWS, 0, cuda_context()->stream>>>(
        (float *)dq, (const float *)dy, (const float *)q, (const float *)k, (const float *)v, (const float *)y,
        (const float *)lse, (float)scale, T, hs);
    cudaCheckLaunch();
}
