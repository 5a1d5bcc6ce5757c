// sga.cu: the kernels of Spectral Gated Attention (docs/design.md section 3) on the GPU. Rows are the
// causal logit rows of one layer, R = B x NH x T of them, each of design length T; row r is query
// i = r % T (the causal row ops may take a block of Q query rows of each head from q0: then
// R = B x NH x Q and row r is query i = q0 + r % Q). The CPU twins in src/cpu/sga.inc are the
// specification: same math, same epsilons and clamps, same accumulate (+=) or overwrite (=) behaviour.
// Everything is fp32 (docs/design.md section 7: spectral statistics and the DCT stay out of bf16);
// the DCT itself lives in cuda/dct.cu.
//
// Layout of the work: a row-structured op (causal triangle, statistics, gate input) runs one
// thread block per row, its threads striding over the row, so the row and column indices come
// from one division per row instead of one per element; the statistics reduce each row with a
// fixed-order block reduction. Plain elementwise ops are flat grid-stride loops. Reductions over
// rows (de, dalpha) use a fixed grid and add the partial sums in a fixed order: bitwise
// reproducible run to run, no atomics.
#include "reduce.cuh"

#define SGA_EPS 1e-8f
#define SGA_THREADS 256
#define SGA_GATE_CHUNKS 64   // row chunks of the de reduction (the CPU's REDUCE_CHUNKS)

// Threads of a block that walks a row of length n: whole warps, no more than SGA_THREADS.
static unsigned int row_threads(int n) {
    unsigned int warps = ceil_div(n > 0 ? (size_t)n : 1, 32);
    return warps * 32 > SGA_THREADS ? SGA_THREADS : warps * 32;
}

// alpha = clamp(alpha_raw[0], 0, 1); 1 without a blend parameter. NaN stays NaN, as on the CPU.
static __device__ float blend_alpha(const float *alpha_raw) {
    if (!alpha_raw) return 1.0f;
    float a = *alpha_raw;
    return a < 0.0f ? 0.0f : (a > 1.0f ? 1.0f : a);
}

// ---- causal rows ----------------------------------------------------------------------------------

// out (BH,Q,T) = in on the causal triangle (j <= i), 0 above: the zero-padded logit row z. Row r
// is query i = q0 + r % Q.
static __global__ void causal_lower_copy_kernel(float *out, const float *in, size_t rows, int T, int q0, int Q) {
    for (size_t r = blockIdx.x; r < rows; r += gridDim.x) {
        int i = q0 + (int)(r % Q);
        const float *x = in + r * T;
        float *y = out + r * T;
        for (int j = threadIdx.x; j < T; j += blockDim.x) y[j] = j <= i ? x[j] : 0.0f;
    }
}

// out (BH,Q,T) (+=) in (BH,Q,T) on the causal triangle only: the padding carries no gradient.
static __global__ void causal_lower_accumulate_kernel(float *out, const float *in, size_t rows, int T, int q0, int Q) {
    for (size_t r = blockIdx.x; r < rows; r += gridDim.x) {
        int i = q0 + (int)(r % Q);
        const float *x = in + r * T;
        float *y = out + r * T;
        for (int j = threadIdx.x; j <= i; j += blockDim.x) y[j] += x[j];
    }
}

void cuda_causal_lower_copy(void *out, const void *in, int BH, int T, int q0, int Q) {
    size_t rows = (size_t)BH * Q;
    if (rows == 0) return;
    causal_lower_copy_kernel<<<grid_for(rows, 1), row_threads(T), 0, cuda_context()->stream>>>(
        (float *)out, (const float *)in, rows, T, q0, Q);
    cudaCheckLaunch();
}

void cuda_causal_lower_accumulate(void *out, const void *in, int BH, int T, int q0, int Q) {
    size_t rows = (size_t)BH * Q;
    if (rows == 0) return;
    causal_lower_accumulate_kernel<<<grid_for(rows, 1), row_threads(T), 0, cuda_context()->stream>>>(
        (float *)out, (const float *)in, rows, T, q0, Q);
    cudaCheckLaunch();
}

// ---- the four spectral statistics ---------------------------------------------------------------

// The first pass over a row s (T) shared by both directions: sum P, sum (k/(T-1)) P and, where sumLog
// is not NULL (the forward), sum log(P + eps); P = s^2, reduced over the block.
static __device__ void spectrum_sums(const float *s, int T, float *shared, float *sumP, float *sumWP, float *sumLog) {
    float p_acc = 0.0f, wp_acc = 0.0f, log_acc = 0.0f;
    for (int k = threadIdx.x; k < T; k += blockDim.x) {
        float P = s[k] * s[k];
        p_acc += P;
        wp_acc += (T > 1 ? (float)k / (float)(T - 1) : 0.0f) * P;
        if (sumLog) log_acc += logf(P + SGA_EPS);
    }
    *sumP = block_sum(p_acc, shared);
    *sumWP = block_sum(wp_acc, shared);
    if (sumLog) *sumLog = block_sum(log_acc, shared);
}

// stats (R,4) = [DC fraction, centroid, flatness, normalised entropy] of P = s^2 per row of spec (R,T).
static __global__ void sga_stats_forward_kernel(float *stats, const float *spec, int R, int T) {
    __shared__ float shared[32];
    for (size_t r = blockIdx.x; r < (size_t)R; r += gridDim.x) {
        const float *s = spec + r * T;
        float sumP, sumWP, sumLog;
        spectrum_sums(s, T, shared, &sumP, &sumWP, &sumLog);
        float E = sumP + SGA_EPS;
        float ent = 0.0f;
        for (int k = threadIdx.x; k < T; k += blockDim.x) {
            float p = s[k] * s[k] / E;
            if (p > 0.0f) ent -= p * logf(p);
        }
        ent = block_sum(ent, shared);
        if (threadIdx.x == 0) {
            float *o = stats + r * 4;
            o[0] = s[0] * s[0] / E;
            o[1] = sumWP / E;
            o[2] = expf(sumLog / T) / (sumP / T + SGA_EPS);
            o[3] = T > 1 ? ent / logf((float)T) : 0.0f;   // T = 1: one bin, entropy 0 (not 0/0)
        }
    }
}

// dspec (+=) (R,T) from dstats (R,4), spec (R,T) and the forward's stats (R,4): the derivatives of the
// four statistics through P_k = s_k^2, recomputing the row sums (cheaper than storing them). The
// flatness's geometric mean and the entropy's sum_m d_m p_m come from stats (G = flatness M, and
// sum_m d_m p_m = H - sum_m p_m / log T), as in the CPU twin: one log per coefficient, not two.
static __global__ void sga_stats_backward_kernel(float *dspec, const float *dstats, const float *spec, const float *stats,
                                                 int R, int T) {
    __shared__ float shared[32];
    float logT = logf((float)T);
    for (size_t r = blockIdx.x; r < (size_t)R; r += gridDim.x) {
        const float *s = spec + r * T;
        const float *g = dstats + r * 4, *st = stats + r * 4;
        float *ds = dspec + r * T;
        float sumP, sumWP;
        spectrum_sums(s, T, shared, &sumP, &sumWP, NULL);
        float E = sumP + SGA_EPS, M = sumP / T + SGA_EPS, G = st[2] * M;
        // entropy: H = -sum p log p / log T with p = P / E; dH/dP_k = (d_k - sum_m d_m p_m) / E,
        // d_m = -(log p_m + 1) / log T.
        float mean_d = T > 1 ? st[3] - sumP / E / logT : 0.0f;
        float g0 = g[0], g1 = g[1], g2 = g[2], g3 = g[3], s0 = s[0];
        for (int k = threadIdx.x; k < T; k += blockDim.x) {
            float P = s[k] * s[k];
            float p = P / E;
            float d_dc = ((k == 0) ? 1.0f / E : 0.0f) - s0 * s0 / (E * E);
            float d_cen = (T > 1 ? (float)k / (float)(T - 1) : 0.0f) / E - sumWP / (E * E);
            float d_flat = G / ((float)T * (P + SGA_EPS) * M) - G / (M * M * (float)T);
            float d_ent = ((p > 0.0f && T > 1 ? -(logf(p) + 1.0f) / logT : 0.0f) - mean_d) / E;
            float dP = g0 * d_dc + g1 * d_cen + g2 * d_flat + g3 * d_ent;
            ds[k] += 2.0f * s[k] * dP;
        }
    }
}

void cuda_sga_stats_forward(void *stats, const void *spec, int R, int T) {
    if (R <= 0 || T <= 0) return;
    sga_stats_forward_kernel<<<grid_for(R, 1), row_threads(T), 0, cuda_context()->stream>>>((float *)stats, (const float *)spec, R, T);
    cudaCheckLaunch();
}

void cuda_sga_stats_backward(void *dspec, const void *dstats, const void *spec, const void *stats, int R, int T) {
    if (R <= 0 || T <= 0) return;
    sga_stats_backward_kernel<<<grid_for(R, 1), row_threads(T), 0, cuda_context()->stream>>>(
        (float *)dspec, (const float *)dstats, (const float *)spec, (const float *)stats, R, T);
    cudaCheckLaunch();
}

// ---- the gate -----------------------------------------------------------------------------------

// U (R, De+4) = [e (De) | stats (R,4)]: the gate MLP's input per row.
static __global__ void sga_gate_input_kernel(float *U, const float *e, const float *stats, int R, int De) {
    int D = De + 4;
    for (size_t r = blockIdx.x; r < (size_t)R; r += gridDim.x)
        for (int c = threadIdx.x; c < D; c += blockDim.x) U[r * D + c] = c < De ? e[c] : stats[r * 4 + (c - De)];
}

// partial (chunks, De): the column sums of dU[:, :De] (dU (R, De+4)) over each of `chunks` fixed row
// ranges. Block (32, 8): 32 consecutive columns (coalesced reads of a row), 8 rows at a time.
static __global__ void gate_input_colsum_kernel(float *partial, const float *dU, int R, int De, int chunks) {
    __shared__ float part[8][32];
    int D = De + 4;
    int c = blockIdx.x * 32 + threadIdx.x, ch = blockIdx.y;
    int r0 = (int)((long long)R * ch / chunks), r1 = (int)((long long)R * (ch + 1) / chunks);
    float acc = 0.0f;
    if (c < De)
        for (int r = r0 + threadIdx.y; r < r1; r += 8) acc += dU[(size_t)r * D + c];
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < De) {
        float sum = 0.0f;
        for (int y = 0; y < 8; y++) sum += part[y][threadIdx.x];
        partial[(size_t)ch * De + c] = sum;
    }
}

// de (+=) (De): the chunk sums of partial (chunks, De), added in chunk order.
static __global__ void gate_input_de_kernel(float *de, const float *partial, int De, int chunks) {
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < De; c += gridDim.x * blockDim.x) {
        float total = 0.0f;
        for (int ch = 0; ch < chunks; ch++) total += partial[(size_t)ch * De + c];
        de[c] += total;
    }
}

// dstats (=) (R,4) = dU[:, De:] (dU (R, De+4)).
static __global__ void gate_input_dstats_kernel(float *dstats, const float *dU, int R, int De) {
    size_t n = (size_t)R * 4;
    GRID_STRIDE(idx, n)
        dstats[idx] = dU[(idx / 4) * (De + 4) + De + (idx % 4)];
}

void cuda_sga_gate_input(void *U, const void *e, const void *stats, int R, int De) {
    if (R <= 0) return;
    sga_gate_input_kernel<<<grid_for(R, 1), row_threads(De + 4), 0, cuda_context()->stream>>>(
        (float *)U, (const float *)e, (const float *)stats, R, De);
    cudaCheckLaunch();
}

// de (+=) (De) = sum over rows of dU[:, :De]; dstats (=) (R,4) = dU[:, De:]; dU (R, De+4).
void cuda_sga_gate_input_backward(void *de, void *dstats, const void *dU, int R, int De) {
    if (R <= 0) return;
    cudaStream_t stream = cuda_context()->stream;
    if (De > 0) {
        int chunks = R < SGA_GATE_CHUNKS ? R : SGA_GATE_CHUNKS;
        float *partial = NULL;   // (chunks, De)
        cudaCheck(cudaMallocAsync((void **)&partial, (size_t)chunks * De * sizeof(float), stream));
        dim3 grid(ceil_div(De, 32), chunks), block(32, 8);
        gate_input_colsum_kernel<<<grid, block, 0, stream>>>(partial, (const float *)dU, R, De, chunks);
        cudaCheckLaunch();
        gate_input_de_kernel<<<ceil_div(De, SGA_THREADS), SGA_THREADS, 0, stream>>>((float *)de, partial, De, chunks);
        cudaCheckLaunch();
        cudaCheck(cudaFreeAsync(partial, stream));
    }
    gate_input_dstats_kernel<<<stride_grid((size_t)R * 4, SGA_THREADS), SGA_THREADS, 0, stream>>>((float *)dstats, (const float *)dU, R, De);
    cudaCheckLaunch();
}

// G (R,T): the fixed-filter ablation's gains, DC x0.7, the middle third of the frequencies x1.2,
// the others x1.
static __global__ void sga_fixed_gate_kernel(float *G, int R, int T) {
    for (size_t r = blockIdx.x; r < (size_t)R; r += gridDim.x)
        for (int k = threadIdx.x; k < T; k += blockDim.x)
            G[r * T + k] = k == 0 ? 0.7f : ((3 * k >= T && 3 * k < 2 * T) ? 1.2f : 1.0f);
}

void cuda_sga_fixed_gate(void *G, int R, int T) {
    if (R <= 0 || T <= 0) return;
    sga_fixed_gate_kernel<<<grid_for(R, 1), row_threads(T), 0, cuda_context()->stream>>>((float *)G, R, T);
    cudaCheckLaunch();
}

// ---- elementwise ----------------------------------------------------------------------------------

// y (n) = g * s; with `logits` the gate holds l and becomes g = sigmoid(l) in place (one pass).
static __global__ void sga_gate_apply_kernel(float *y, float *gate, const float *spec, size_t n, int logits) {
    GRID_STRIDE(i, n) {
        float g = gate[i];
        if (logits) {
            g = 1.0f / (1.0f + expf(-g));
            gate[i] = g;
        }
        y[i] = g * spec[i];
    }
}

// For y = g * s with g = sigmoid(l): dspec (=) dy g; dgate (=) dy s g (1 - g); dgate may be NULL.
static __global__ void sga_gate_backward_kernel(float *dgate, float *dspec, const float *dy, const float *gate,
                                                const float *spec, size_t n) {
    GRID_STRIDE(i, n) {
        float d = dy[i], g = gate[i];
        dspec[i] = d * g;
        if (dgate) dgate[i] = d * spec[i] * g * (1.0f - g);
    }
}

void cuda_sga_gate_apply(void *y, void *gate, const void *spec, size_t n, int logits) {
    if (n == 0) return;
    sga_gate_apply_kernel<<<stride_grid(n, SGA_THREADS), SGA_THREADS, 0, cuda_context()->stream>>>((float *)y, (float *)gate,
                                                                                  (const float *)spec, n, logits);
    cudaCheckLaunch();
}

void cuda_sga_gate_backward(void *dgate, void *dspec, const void *dy, const void *gate, const void *spec, size_t n) {
    if (n == 0) return;
    sga_gate_backward_kernel<<<stride_grid(n, SGA_THREADS), SGA_THREADS, 0, cuda_context()->stream>>>(
        (float *)dgate, (float *)dspec, (const float *)dy, (const float *)gate, (const float *)spec, n);
    cudaCheckLaunch();
}

// ---- the blend ----------------------------------------------------------------------------------

// probs (BH,Q,T) = the causal softmax of the blended logits (1 - alpha) a + alpha z', exact zeros
// above the diagonal; a, zp (BH,Q,T) read on the triangle, row r is query i = q0 + r % Q; alpha_raw
// (1) or NULL for alpha = 1. One warp per row as the plain causal softmax (cuda/attention.cu), the
// blend recomputed in each of its passes instead of written out and read back. The loop bound
// depends on the warp only, so every lane reaches every shuffle.
static __global__ void sga_blend_softmax_forward_kernel(float *probs, const float *a, const float *zp, const float *alpha_raw,
                                                        size_t rows, int T, int q0, int Q) {
    float alpha = blend_alpha(alpha_raw);
    int lane = threadIdx.x % 32;
    for (size_t r = warp_row_first(); r < rows; r += warp_row_stride()) {
        int i = q0 + (int)(r % Q);
        const float *x = a + r * T, *z = zp + r * T;
        float *p = probs + r * T;
        float maxval = -INFINITY;
        for (int j = lane; j <= i; j += 32) maxval = fmaxf(maxval, (1.0f - alpha) * x[j] + alpha * z[j]);
        maxval = warp_max(maxval);
        float sum = 0.0f;
        for (int j = lane; j <= i; j += 32) sum += expf((1.0f - alpha) * x[j] + alpha * z[j] - maxval);
        float inv = 1.0f / warp_sum(sum);
        for (int j = lane; j < T; j += 32) p[j] = j <= i ? expf((1.0f - alpha) * x[j] + alpha * z[j] - maxval) * inv : 0.0f;
    }
}

// da (=) (1 - alpha) dout, dzp (=) alpha dout on the triangle (both exact zeros above: da is a
// dscores of attn_scores_backward, which reads the whole square); all (BH,Q,T), row r is query
// i = q0 + r % Q. With partial non-NULL, partial[block] = this block's sum of dout (z' - a) over
// the triangle, in double.
static __global__ void sga_blend_backward_kernel(float *da, float *dzp, double *partial, const float *dout, const float *a,
                                                 const float *zp, const float *alpha_raw, size_t rows, int T, int q0,
                                                 int Q) {
    __shared__ double shared[32];
    float alpha = blend_alpha(alpha_raw);
    double acc = 0.0;
    for (size_t r = blockIdx.x; r < rows; r += gridDim.x) {
        int i = q0 + (int)(r % Q);
        size_t base = r * T;
        for (int j = threadIdx.x; j < T; j += blockDim.x) {
            if (j <= i) {
                float g = dout[base + j], x = a[base + j], z = zp[base + j];
                da[base + j] = (1.0f - alpha) * g;
                dzp[base + j] = alpha * g;
                acc += (double)g * (double)(z - x);
            } else {
                da[base + j] = 0.0f;
                dzp[base + j] = 0.0f;
            }
        }
    }
    if (partial) {   // uniform over the block
        acc = block_sum(acc, shared);
        if (threadIdx.x == 0) partial[blockIdx.x] = acc;
    }
}

// dalpha_raw (+=) (1) the sum of partial (blocks), in block order, where the clamp passes
// (0 <= alpha_raw <= 1; always without a blend parameter). One thread: 256 additions.
static __global__ void blend_dalpha_kernel(float *dalpha_raw, const double *partial, int blocks, const float *alpha_raw) {
    float raw = alpha_raw ? *alpha_raw : 1.0f;
    if (!(raw >= 0.0f && raw <= 1.0f)) return;
    double total = 0.0;
    for (int b = 0; b < blocks; b++) total += partial[b];
    *dalpha_raw += (float)total;
}

void cuda_sga_blend_softmax_forward(void *probs, const void *a, const void *zprime, const void *alpha_raw, int BH, int T,
                                    int q0, int Q) {
    size_t rows = (size_t)BH * Q;
    if (rows == 0) return;
    sga_blend_softmax_forward_kernel<<<warp_rows_grid(rows), WARP_ROWS_BLOCK, 0, cuda_context()->stream>>>(
        (float *)probs, (const float *)a, (const float *)zprime, (const float *)alpha_raw, rows, T, q0, Q);
    cudaCheckLaunch();
}

// The dalpha partial sums go to the context's reduction scratch (CUDA_REDUCE_BLOCKS doubles),
// hence the fixed grid.
void cuda_sga_blend_backward(void *da, void *dzprime, void *dalpha_raw, const void *dout, const void *a, const void *zprime,
                             const void *alpha_raw, int BH, int T, int q0, int Q) {
    CudaContext *ctx = cuda_context();
    size_t rows = (size_t)BH * Q;
    if (rows == 0) return;
    double *partial = dalpha_raw ? ctx->reduce_scratch : NULL;
    sga_blend_backward_kernel<<<CUDA_REDUCE_BLOCKS, row_threads(T), 0, ctx->stream>>>(
        (float *)da, (float *)dzprime, partial, (const float *)dout, (const float *)a, (const float *)zprime,
        (const float *)alpha_raw, rows, T, q0, Q);
    cudaCheckLaunch();
    if (dalpha_raw) {
        blend_dalpha_kernel<<<1, 1, 0, ctx->stream>>>((float *)dalpha_raw, partial, CUDA_REDUCE_BLOCKS, (const float *)alpha_raw);
        cudaCheckLaunch();
    }
}
