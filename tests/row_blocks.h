// row_blocks.h: the causal row ops of backend.h (softmax_causal_*, causal_lower_*, sga_blend_*) on
// a block of query rows of each head against the whole square, shared by the CPU tests that cover
// those ops (test_op_gradients.c, test_sga.c). An op run on rows q0..q0+Q-1 (tensors (BH,Q,T)) must
// give bitwise the same rows as the (q0, Q) = (0, T) run on the same backend: each row's result
// depends on its own row and its query index only. cmocka is included before this.
#pragma once
#include <stdint.h>
#include "gradcheck.h"

#define ROW_BLOCK_MAX_TENSORS 4

// Which rows of each head: row r of a block is query q0 + r % Q.
typedef struct { int q0, Q; } RowBlock;

// The blocks checked at length T, those that fit (q0 + Q <= T): the first row alone, a short block
// inside, the last row alone and a long block inside. Returns how many were written to out.
static inline int row_blocks(int T, RowBlock out[4]) {
    const RowBlock all[4] = {{0, 1}, {2, 3}, {T - 1, 1}, {5, 20}};
    int n = 0;
    for (int i = 0; i < 4; i++)
        if (all[i].q0 + all[i].Q <= T) out[n++] = all[i];
    return n;
}

// Host copy (BH,Q,T) of rows q0..q0+Q-1 of each head of square (BH,T,T).
static inline double *rows_of_square(const double *square, int BH, int T, RowBlock b) {
    size_t row = (size_t)T * sizeof(double);
    double *out = malloc((size_t)BH * b.Q * row);
    for (int bh = 0; bh < BH; bh++)
        memcpy(out + (size_t)bh * b.Q * T, square + ((size_t)bh * T + b.q0) * T, (size_t)b.Q * row);
    return out;
}

// An op under test: every tensor (BH,Q,T), inputs read, outputs pre-filled by the caller (so an
// accumulating op's (+=) is checked too); ctx carries what is not a row tensor (alpha).
typedef struct {
    const char *name;
    int n_in, n_out;
    double in_scale;   // inputs are normal(0, in_scale)
    void (*run)(const Backend *be, void *const *out, void *const *in, int BH, int T, RowBlock b, void *ctx);
    void *ctx;
} RowOp;

// Runs op on the whole squares (BH,T,T) of random inputs and on each block of row_blocks(T) of the
// same values, on both CPU backends, and asserts every output of a block equals (==) its rows of the
// whole output. Every entry is compared: an op writes all of a row (zeros or a copy above the
// diagonal) or, accumulating, leaves the pre-filled values there on both runs.
static inline void assert_row_blocks_match_square(const RowOp *op, int BH, const int *lengths, int n_lengths, uint64_t seed) {
    const Backend *backends[2] = {backend_cpu_f32(), backend_cpu_f64()};
    for (int bi = 0; bi < 2; bi++)
        for (int li = 0; li < n_lengths; li++) {
            const Backend *be = backends[bi];
            int T = lengths[li];
            size_t n = (size_t)BH * T * T;
            double *in[ROW_BLOCK_MAX_TENSORS], *start[ROW_BLOCK_MAX_TENSORS], *whole[ROW_BLOCK_MAX_TENSORS];
            void *din[ROW_BLOCK_MAX_TENSORS], *dout[ROW_BLOCK_MAX_TENSORS];
            for (int k = 0; k < op->n_in; k++) {
                in[k] = gc_random(n, seed + (uint64_t)k, op->in_scale);
                din[k] = gc_upload(be, in[k], n);
            }
            for (int k = 0; k < op->n_out; k++) {
                start[k] = gc_random(n, seed + 100 + (uint64_t)k, 1.0);
                dout[k] = gc_upload(be, start[k], n);
            }
            op->run(be, dout, din, BH, T, (RowBlock){0, T}, op->ctx);
            for (int k = 0; k < op->n_out; k++) whole[k] = gc_download(be, dout[k], n);
            for (int k = 0; k < op->n_in; k++) be->free(din[k]);
            for (int k = 0; k < op->n_out; k++) be->free(dout[k]);
            RowBlock blocks[4];
            int n_blocks = row_blocks(T, blocks);
            for (int bk = 0; bk < n_blocks; bk++) {
                RowBlock b = blocks[bk];
                size_t nb = (size_t)BH * b.Q * T;
                for (int k = 0; k < op->n_in; k++) {
                    double *h = rows_of_square(in[k], BH, T, b);
                    din[k] = gc_upload(be, h, nb);
                    free(h);
                }
                for (int k = 0; k < op->n_out; k++) {
                    double *h = rows_of_square(start[k], BH, T, b);
                    dout[k] = gc_upload(be, h, nb);
                    free(h);
                }
                op->run(be, dout, din, BH, T, b, op->ctx);
                for (int k = 0; k < op->n_out; k++) {
                    double *got = gc_download(be, dout[k], nb), *want = rows_of_square(whole[k], BH, T, b);
                    for (size_t idx = 0; idx < nb; idx++)
                        if (got[idx] != want[idx])
                            fail_msg("%s (%s) output %d, T=%d rows %d..%d: head %zu query %zu key %zu is %.17g, whole square %.17g",
                                     op->name, be->name, k, T, b.q0, b.q0 + b.Q - 1, idx / ((size_t)b.Q * T),
                                     (size_t)b.q0 + idx / T % b.Q, idx % T, got[idx], want[idx]);
                    free(got); free(want);
                }
                for (int k = 0; k < op->n_in; k++) be->free(din[k]);
                for (int k = 0; k < op->n_out; k++) be->free(dout[k]);
            }
            printf("# %-26s %s T=%d: %d blocks equal to the whole square's rows\n", op->name, be->name, T, n_blocks);
            for (int k = 0; k < op->n_in; k++) free(in[k]);
            for (int k = 0; k < op->n_out; k++) { free(start[k]); free(whole[k]); }
        }
}
