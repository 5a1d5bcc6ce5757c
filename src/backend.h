// backend.h: the interface between model code and the machine.
//
// Model code says *what* (the sequence of ops on tensors); a backend says *how*. Model code never
// dereferences a tensor: every tensor is an opaque device pointer (`void *`) into memory the backend
// allocated, holding elements of the backend's own type (fp32 on the CPU backend, fp64 on the CPU
// oracle used by the finite-difference tests, bf16/fp32 on CUDA). Host data enters and leaves only
// through upload/download. Every op documents its shapes; "(+=)" marks outputs an op accumulates
// into (gradients), all other outputs are overwritten.
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef struct Backend Backend;

// How an op writes an input's gradient that one caller wants summed and another fresh: GRAD_ASSIGN
// overwrites it (no zeroing pass over a buffer first), GRAD_ACCUMULATE adds to it (a post-norm
// block's residual gradient already holds the other branch's share).
typedef enum { GRAD_ASSIGN, GRAD_ACCUMULATE } GradWrite;

// ---- the ops ------------------------------------------------------------------------------------
// Every op, once: BACKEND_OPS(OP) calls OP(return type, name, (parameters)) for each of them in the
// order of struct Backend. The struct's members below, the CPU op table (src/cpu/backend_table.inc,
// .name = cpu_name), the CUDA op table (cuda/backend_cuda.cu, cuda_name) and the table test
// (tests/test_cuda_backend_table.c) are all generated from this list; an op added here is a
// member, and a CPU or CUDA op table without its implementation does not build. Documentation
// lives here, in /* */ comments (a // comment would swallow the line continuation).
#define BACKEND_OPS(OP) \
    /* ---- memory ------------------------------------------------------------------------------ */ \
    OP(void *, alloc, (size_t n))                                      /* n float elements, zeroed */ \
    OP(int32_t *, alloc_i32, (size_t n))                               /* n int32 elements, zeroed */ \
    OP(void, free, (void *p)) \
    OP(void, upload, (void *dst, const float *src, size_t n)) \
    OP(void, download, (float *dst, const void *src, size_t n)) \
    OP(void, upload_f64, (void *dst, const double *src, size_t n)) \
    OP(void, download_f64, (double *dst, const void *src, size_t n)) \
    OP(void, upload_i32, (int32_t *dst, const int32_t *src, size_t n)) \
    OP(void, download_i32, (int32_t *dst, const int32_t *src, size_t n)) \
    OP(void, zero, (void *dst, size_t n)) \
    OP(void, copy, (void *dst, const void *src, size_t n)) \
    OP(void, synchronize, (void)) \
    \
    /* ---- bf16 storage (train.activations = "bf16"; CPU twin src/cpu/bf16.inc, CUDA cuda/bf16.cu) */ \
    /* A bf16 tensor holds n 16-bit patterns (sign, 8 exponent bits, 7 mantissa bits: the top half */ \
    /* of an fp32) on every backend: 2 bytes an element, counted in memory_stats. It is only ever */ \
    /* packed into and unpacked from; no other op reads it. */ \
    OP(void *, alloc_bf16, (size_t n))                                 /* n bf16 elements, zeroed */ \
    /* dst (n) bf16 = src (n) float tensor rounded to nearest, ties to even (from the backend's own */ \
    /* element type: the fp64 backend rounds once, from fp64); overflow gives inf, NaN a quiet NaN */ \
    OP(void, pack_bf16, (void *dst, const void *src, size_t n)) \
    /* dst (n) float tensor = src (n) bf16, exact */ \
    OP(void, unpack_bf16, (void *dst, const void *src, size_t n)) \
    \
    /* ---- allocation high-water mark ---------------------------------------------------------- */ \
    /* current (bytes held now) and peak (most held at once) over every alloc, alloc_i32, */ \
    /* alloc_bf16 and free (and the backend's own temporaries) of this process; either pointer may */ \
    /* be NULL. Allocations come from the main thread only, so the counters are plain (not atomic) */ \
    /* variables. */ \
    OP(void, memory_stats, (size_t *current, size_t *peak)) \
    \
    /* ---- embedding: out[b,t] = wte[tokens[b,t]] + wpe[t] ------------------------------------- */ \
    /* out (B,T,C), tokens (B,T), wte (V,C), wpe (T,C) */ \
    OP(void, encoder_forward, (void *out, const int32_t *tokens, const void *wte, const void *wpe, int B, int T, int C)) \
    /* dwte (+=) (V,C), dwpe (+=) (T,C), dout (B,T,C); every token id in [0, V) */ \
    OP(void, encoder_backward, (void *dwte, void *dwpe, const void *dout, const int32_t *tokens, int B, int T, int C, int V)) \
    \
    /* ---- LayerNorm over the last axis, eps 1e-5 ---------------------------------------------- */ \
    /* out (N,C), mean (N), rstd (N), inp (N,C), weight (C), bias (C) */ \
    OP(void, layernorm_forward, (void *out, void *mean, void *rstd, const void *inp, const void *weight, const void *bias, \
                                 int N, int C)) \
    /* dinp (N,C) written as dinp_write says (= or +=), dweight (+=) (C), dbias (+=) (C) */ \
    OP(void, layernorm_backward, (void *dinp, GradWrite dinp_write, void *dweight, void *dbias, const void *dout, \
                                  const void *inp, const void *weight, const void *mean, const void *rstd, int N, int C)) \
    \
    /* ---- dense layer: out = inp W^T + bias --------------------------------------------------- */ \
    /* out (N,OC), inp (N,C), weight (OC,C), bias (OC) or NULL */ \
    OP(void, matmul_forward, (void *out, const void *inp, const void *weight, const void *bias, int N, int C, int OC)) \
    /* dinp (N,C) or NULL, written as dinp_write says (= or +=); dweight (+=) (OC,C), dbias (+=) (OC) */ \
    /* or NULL, dout (N,OC) */ \
    OP(void, matmul_backward, (void *dinp, GradWrite dinp_write, void *dweight, void *dbias, const void *dout, \
                               const void *inp, const void *weight, int N, int C, int OC)) \
    /* A GELU MLP's layers (tanh approximation), the GELU in the op so that a backend may apply it to the */ \
    /* product's output while that is in cache: */ \
    /* with pre (N,OC) = inp (N,C) weight^T + bias (OC): act (N,OC) = gelu(pre), slope (N,OC) = gelu'(pre) */ \
    /* (what backward reads: kept instead of pre, it spares backward GELU's exp and division) */ \
    OP(void, matmul_gelu_forward, (void *slope, void *act, const void *inp, const void *weight, const void *bias, int N, \
                                   int C, int OC)) \
    /* dpre (=) (N,C) = slope (dout (N,OC) weight (OC,C)): the gradient of pre where inp = gelu(pre) (N,C) and */ \
    /* slope = gelu'(pre) (N,C), matmul_gelu_forward's; dweight (+=) (OC,C), dbias (+=) (OC) or NULL as matmul_backward */ \
    OP(void, matmul_backward_gelu, (void *dpre, void *dweight, void *dbias, const void *dout, const void *inp, \
                                    const void *weight, const void *slope, int N, int C, int OC)) \
    \
    /* ---- elementwise ------------------------------------------------------------------------- */ \
    OP(void, add, (void *out, const void *a, const void *b, size_t n))                  /* out = a + b */ \
    OP(void, accumulate, (void *dst, const void *src, size_t n))                        /* dst += src */ \
    OP(void, scale, (void *x, double factor, size_t n))                                 /* x *= factor */ \
    OP(void, scale_rows, (void *x, const void *factors, int B, size_t n))  /* x (B,n) *= factors (B) per row */ \
    \
    /* ---- attention pieces (BH = B * NH; heads are (B,NH,T,hs)) ------------------------------- */ \
    /* q, k, v (B,NH,T,hs) from qkv (B,T,3C) laid out [q | k | v], each C = NH * hs */ \
    OP(void, heads_split, (void *q, void *k, void *v, const void *qkv, int B, int T, int NH, int hs)) \
    /* dqkv (=) (B,T,3C) from dq, dk, dv (B,NH,T,hs) */ \
    OP(void, heads_split_backward, (void *dqkv, const void *dq, const void *dk, const void *dv, int B, int T, int NH, int hs)) \
    /* out (B,T,C) from y (B,NH,T,hs) */ \
    OP(void, heads_merge, (void *out, const void *y, int B, int T, int NH, int hs)) \
    /* dy (=) (B,NH,T,hs) from dout (B,T,C) */ \
    OP(void, heads_merge_backward, (void *dy, const void *dout, int B, int T, int NH, int hs)) \
    /* The attention ops below take a block of query rows of each head (0 <= q0, Q >= 1, */ \
    /* q0 + Q <= T; (q0, Q) = (0, T) is the whole (BH,T,T) square): the row tensors (scores, probs, */ \
    /* their gradients) are (BH,Q,T), BH blocks of Q rows of length T one after the other, row r of */ \
    /* a block being query i = q0 + r % Q, which sees keys j <= i; of q, y and their gradients */ \
    /* (BH,T,hs) the products use rows q0..q0+Q-1 of each head, of k, v, dk, dv all T rows. */ \
    /* scores (BH,Q,T) = scale * q[q0:q0+Q] k^T; entries above the diagonal are left unspecified */ \
    OP(void, attn_scores, (void *scores, const void *q, const void *k, double scale, int BH, int T, int hs, int q0, int Q)) \
    /* dq[q0:q0+Q] (+=) = scale dscores k, dk (+=) = scale dscores^T q[q0:q0+Q]. dscores (BH,Q,T) */ \
    /* must hold zeros above the diagonal, as both of its producers (softmax_causal_backward and */ \
    /* sga_blend_backward) leave it: a backend may read all of it (CUDA does; the CPU's pieces read */ \
    /* past the diagonal) */ \
    OP(void, attn_scores_backward, (void *dq, void *dk, const void *dscores, const void *q, const void *k, \
                                    double scale, int BH, int T, int hs, int q0, int Q)) \
    /* probs (BH,Q,T): causal softmax of each row of scores (BH,Q,T) over j <= i, exact zeros for */ \
    /* j > i; may alias scores (each element is read before its own write: the fused form's trace maps) */ \
    OP(void, softmax_causal_forward, (void *probs, const void *scores, int BH, int T, int q0, int Q)) \
    /* dscores (=) (BH,Q,T), exact zeros above the diagonal (whatever the buffer held before); */ \
    /* dprobs, probs (BH,Q,T) */ \
    OP(void, softmax_causal_backward, (void *dscores, const void *dprobs, const void *probs, int BH, int T, int q0, int Q)) \
    /* y[q0:q0+Q] (=) probs (BH,Q,T) v. probs must hold zeros above the diagonal, as the softmax and */ \
    /* sga_blend_softmax_forward leave it: a backend may skip them, or read them (CPU: causal pieces) */ \
    OP(void, attn_values, (void *y, const void *probs, const void *v, int BH, int T, int hs, int q0, int Q)) \
    /* dprobs (=) (BH,Q,T) = dy[q0:q0+Q] v^T, entries above the diagonal left unspecified (only the */ \
    /* softmax's backward reads it, on the triangle); dv (+=) (BH,T,hs) = probs^T dy[q0:q0+Q], probs as above */ \
    OP(void, attn_values_backward, (void *dprobs, void *dv, const void *dy, const void *probs, const void *v, \
                                    int BH, int T, int hs, int q0, int Q)) \
    \
    /* ---- fused causal attention (attention.fused; CPU twin src/cpu/attention_fused.inc) ----- */ \
    /* Softmax(scale q k^T) v over keys j <= i without a (T,T) tensor: only keys j <= i are read. */ \
    /* y (=) (BH,T,hs); lse (=) (BH,T) the log-sum-exp of each row's scaled logits s_ij; ent (=) */ \
    /* (BH,T) each row's softmax entropy H_i = lse_i - sum_j p_ij s_ij (nats), from the same pass */ \
    OP(void, attn_fused_forward, (void *y, void *lse, void *ent, const void *q, const void *k, const void *v, \
                                  double scale, int BH, int T, int hs)) \
    /* dq, dk, dv (=) (BH,T,hs) from dy (BH,T,hs), recomputing p_ij = exp(s_ij - lse_i) from q, k */ \
    /* and lse, with D_i = dy_i . y_i (y and lse of attn_fused_forward on the same q, k, v) */ \
    OP(void, attn_fused_backward, (void *dq, void *dk, void *dv, const void *dy, const void *q, const void *k, \
                                   const void *v, const void *y, const void *lse, double scale, int BH, int T, int hs)) \
    \
    /* ---- dense linear algebra (R3SI) --------------------------------------------------------- */ \
    /* C (M,N) = alpha op(A) op(B) + beta C, row-major, op = transpose where trans is set */ \
    OP(void, gemm, (int transA, int transB, int M, int N, int K, double alpha, const void *A, int lda, const void *B, \
                    int ldb, double beta, void *C, int ldc)) \
    OP(void, axpy, (void *y, double a, const void *x, size_t n))       /* y (+=) a x */ \
    OP(double, diag_sum, (const void *C, int D))                         /* trace of (D,D) */ \
    OP(void, column_sums, (void *sums, const void *X, int N, int D))   /* sums (+=) (D) over the rows of X (N,D) */ \
    \
    /* ---- attention entropy ------------------------------------------------------------------- */ \
    /* ent (BH,T) = -sum_j p_ij log p_ij (nats) of each causal row of probs (BH,T,T) */ \
    OP(void, attn_row_entropy, (void *ent, const void *probs, int BH, int T)) \
    /* sum over rows i >= 1 of H_i / ln(i+1), and dprobs (+=) weight x its gradient */ \
    OP(double, attn_entropy_reg_sum, (const void *probs, int BH, int T)) \
    OP(void, attn_entropy_reg_backward, (void *dprobs, const void *probs, double weight, int BH, int T)) \
    /* y (B,NH,T,hs) *= mask (NH): head pruning at evaluation */ \
    OP(void, head_mask_apply, (void *y, const void *mask, int B, int NH, int T, int hs)) \
    \
    /* ---- loss -------------------------------------------------------------------------------- */ \
    /* probs (N,V) = softmax(logits) (may alias logits); losses (N) = -log probs[target], 0 where target < 0 */ \
    OP(void, crossentropy_forward, (void *losses, void *probs, const void *logits, const int32_t *targets, int N, int V)) \
    /* dlogits (=) (N,V) = dloss * (probs - onehot(target)), 0 rows where target < 0; may alias probs */ \
    OP(void, crossentropy_backward, (void *dlogits, const void *probs, const int32_t *targets, double dloss, int N, int V)) \
    /* predictions (N) = argmax over V of logits/probs (N,V) */ \
    OP(void, argmax_rows, (int32_t *predictions, const void *probs, int N, int V)) \
    \
    /* ---- Spectral Gated Attention (docs/design.md section 3); R rows of length T ---------- */ \
    /* out (R,T) = orthonormal DCT-II of each row (inverse = 0) or its inverse (inverse = 1) */ \
    OP(void, dct_rows, (void *out, const void *in, int R, int T, int inverse)) \
    /* out (BH,Q,T) = in (BH,Q,T) for j <= i, 0 above; and its gradient, out (+=) on the triangle */ \
    /* only. Rows as for softmax_causal_forward: row r of a block is query i = q0 + r % Q */ \
    OP(void, causal_lower_copy, (void *out, const void *in, int BH, int T, int q0, int Q)) \
    OP(void, causal_lower_accumulate, (void *out, const void *in, int BH, int T, int q0, int Q)) \
    /* stats (R,4) = DC fraction, centroid, flatness, normalised entropy of each row's power spectrum */ \
    OP(void, sga_stats_forward, (void *stats, const void *spec, int R, int T)) \
    /* dspec (+=) (R,T) from dstats (R,4), with the forward's stats (R,4) of the same spec */ \
    OP(void, sga_stats_backward, (void *dspec, const void *dstats, const void *spec, const void *stats, int R, int T)) \
    /* U (R, De+4) = [e (De) | stats (R,4)] and its gradient: de (+=) (De), dstats (=) (R,4) */ \
    OP(void, sga_gate_input, (void *U, const void *e, const void *stats, int R, int De)) \
    OP(void, sga_gate_input_backward, (void *de, void *dstats, const void *dU, int R, int De)) \
    OP(void, sga_fixed_gate, (void *G, int R, int T))                                   /* G (R,T) fixed gains */ \
    /* y (n) = g * s, the gated spectrum. With `logits`, gate holds the MLP's output l and becomes */ \
    /* g = sigmoid(l) in place; without, it holds fixed gains g. */ \
    OP(void, sga_gate_apply, (void *y, void *gate, const void *spec, size_t n, int logits)) \
    /* For y = g * s with g = sigmoid(l): dspec (=) dy g; dgate (=) dy s g (1 - g), the gradient at l, */ \
    /* or NULL to skip it (fixed gains have nothing to learn) */ \
    OP(void, sga_gate_backward, (void *dgate, void *dspec, const void *dy, const void *gate, const void *spec, size_t n)) \
    /* probs = the causal softmax (as softmax_causal_forward) of the blended logits (1 - alpha) a + alpha z', */ \
    /* alpha = clamp(alpha_raw[0], 0, 1) (NULL: 1); probs, a, zprime (BH,Q,T), row r of a block is query */ \
    /* i = q0 + r % Q; a and zprime read on the causal triangle only */ \
    OP(void, sga_blend_softmax_forward, (void *probs, const void *a, const void *zprime, const void *alpha_raw, int BH, \
                                         int T, int q0, int Q)) \
    /* da (=) (1 - alpha) dout on the triangle and exact zeros above (whatever the buffer held before: */ \
    /* da is a dscores of attn_scores_backward), dzprime (=), dalpha_raw (+=, one element; may be NULL): */ \
    /* the sum over the BH*Q rows, in a fixed order; all others (BH,Q,T) */ \
    OP(void, sga_blend_backward, (void *da, void *dzprime, void *dalpha_raw, const void *dout, const void *a, \
                                  const void *zprime, const void *alpha_raw, int BH, int T, int q0, int Q)) \
    \
    /* ---- reductions and optimizer ------------------------------------------------------------ */ \
    OP(double, sum, (const void *x, size_t n))          /* deterministic, accumulated in double */ \
    OP(double, sum_squares, (const void *x, size_t n))  /* deterministic, accumulated in double */ \
    /* AdamW with bias correction at step t (1-based); grads are multiplied by grad_scale first. */ \
    /* params, m, v (n) updated in place */ \
    OP(void, adamw_update, (void *params, const void *grads, void *m, void *v, size_t n, double lr, double beta1, \
                            double beta2, double eps, double weight_decay, double grad_scale, long t))

// A member of struct Backend per op: a pointer to the op's function.
#define BACKEND_OP_MEMBER(ret, name, params) ret (*name) params;

struct Backend {
    const char *name;          // "cpu-f32", "cpu-f64", "cuda"
    size_t elem_size;          // bytes per element of a float tensor
    // Bytes of one tensor slice that stays in cache across a chain of row-wise ops; model code may
    // run such chains (SGA) slice by slice. 0: run whole tensors (GPUs, where big launches pay).
    size_t working_set_bytes;
    // The ops, in the order of BACKEND_OPS; nothing follows them.
    BACKEND_OPS(BACKEND_OP_MEMBER)
};

// The CPU backends: fp32 (the trainer's reference backend) and fp64 (the oracle of gradient tests).
const Backend *backend_cpu_f32(void);
const Backend *backend_cpu_f64(void);

// Byte offset helper: the device pointer `n` elements past `base`.
static inline void *be_offset(const Backend *be, void *base, size_t n) { return (char *)base + n * be->elem_size; }
// The same for a bf16 tensor (alloc_bf16): 2 bytes an element on every backend.
static inline void *bf16_offset(void *base, size_t n) { return (char *)base + n * 2; }
