// bench_cpu_ops: the time per element of the fp32 CPU backend's row and elementwise ops, at the
// small shape of tests/bench_shapes.h (N = B T = 1024 tokens, C 128, H 512, 32 heads of T 128,
// V 256), at tiny-sga's SGA rows (8192 rows of T 64) and at the d=512 benchmarks' rows (1024 of T
// 512), on the threads the process starts with.
// The GEMMs have their ceiling in bench_throughput; these ops are the rest of a step, and a slow
// path inside one (a denormal result on every vector made GELU forward 3x slower) shows up here
// as a figure out of line with its neighbours. GELU runs inside the MLP's products: the rows of
// the first layer with and without it (and of its backward) differ by what it costs there.
//   build/tests/bench_cpu_ops [repetitions]
#include <stdio.h>
#include <stdlib.h>
#include "backend.h"
#include "common.h"
#include "rng.h"
#include "thread_policy.h"
#include "timer.h"

#define N_TOKENS 1024   // B 8 x T 128
#define WIDTH 128       // C
#define HIDDEN 512      // 4 C
#define HEADS 32        // B 8 x 4 heads
#define SEQ 128
#define VOCAB 256
#define BATCH (N_TOKENS / SEQ)
#define HEADS_PER_SEQ 4
#define HEAD_SIZE (WIDTH / HEADS_PER_SEQ)
#define SGA_ROWS 8192   // tiny-sga: B 32 x 4 heads x T 64
#define SGA_T 64
#define SGA_T_LONG 512  // the d=512 benchmarks' longer rows (1024 of them)

// Values like a step's activations: normal with standard deviation `std`, from the trainer's
// counter-based generator (src/rng.h), so that every run times the same numbers.
static void fill_normal(const Backend *be, void *dst, size_t n, double std) {
    float *host = xmalloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) host[i] = (float)(std * rng_normal(0, n, i));
    be->upload(dst, host, n);
    free(host);
}

// The tensors the ops read and write, each large enough for every op below.
typedef struct {
    void *a, *b, *c, *d, *small1, *small2, *small3;
    int32_t *targets;
} Buffers;

// Every tensor below has BIG = 524288 elements: N H = heads T T = SGA's rows x T.
enum { BIG = SGA_ROWS * SGA_T };

typedef struct {
    const char *name;
    const char *shape;
    double elements;   // what "per element" counts: the op's output elements
} OpInfo;

// d holds a (HIDDEN, WIDTH) weight, then a (N_TOKENS, WIDTH) dout, then a (WIDTH, HIDDEN) weight gradient.
#define D_DOUT(be, x) be_offset(be, (x)->d, (size_t)HIDDEN * WIDTH)
#define D_DWEIGHT(be, x) be_offset(be, (x)->d, (size_t)HIDDEN * WIDTH + (size_t)N_TOKENS * WIDTH)

// Part `i` (q, k, v) of three (N_TOKENS, WIDTH) tensors laid out one after another in `buf`.
#define QKV_PART(be, buf, i) be_offset(be, buf, (size_t)(i) * N_TOKENS * WIDTH)

// Runs op `which` once.
static void run_op(const Backend *be, Buffers *x, int which) {
    switch (which) {
    // The MLP's first layer with and without its GELU (cases 19 and 20: its backward); weights in d.
    case 0: be->matmul_forward(x->b, x->a, x->d, x->small3, N_TOKENS, WIDTH, HIDDEN); break;
    case 1: be->matmul_gelu_forward(x->b, x->c, x->a, x->d, x->small3, N_TOKENS, WIDTH, HIDDEN); break;
    case 2: be->layernorm_forward(x->b, x->small1, x->small2, x->a, x->small3, x->small3, N_TOKENS, WIDTH); break;
    case 3: be->layernorm_backward(x->c, GRAD_ASSIGN, x->small3, x->small3, x->b, x->a, x->small3, x->small1, x->small2, N_TOKENS, WIDTH); break;
    case 4: be->softmax_causal_forward(x->b, x->a, HEADS, SEQ, 0, SEQ); break;
    case 5: be->softmax_causal_backward(x->c, x->a, x->b, HEADS, SEQ, 0, SEQ); break;
    case 6: be->crossentropy_forward(x->small1, x->b, x->a, x->targets, N_TOKENS, VOCAB); break;
    case 7: be->add(x->c, x->a, x->b, (size_t)N_TOKENS * WIDTH); break;
    case 8: be->dct_rows(x->b, x->a, SGA_ROWS, SGA_T, 0); break;
    case 9: be->dct_rows(x->b, x->a, SGA_ROWS, SGA_T, 1); break;
    case 10: be->sga_stats_forward(x->small1, x->a, SGA_ROWS, SGA_T); break;
    case 11: be->sga_gate_apply(x->c, x->b, x->a, BIG, 1); break;   // the gate becomes sigmoid(gate) in place
    case 12: be->sga_blend_softmax_forward(x->c, x->a, x->b, NULL, SGA_ROWS / SGA_T, SGA_T, 0, SGA_T); break;
    case 13: be->adamw_update(x->d, x->a, x->b, x->c, BIG, 1e-3, 0.9, 0.95, 1e-8, 0.1, 1.0, 10); break;   // m b, v c
    case 14: be->dct_rows(x->b, x->a, BIG / SGA_T_LONG, SGA_T_LONG, 0); break;
    case 15: be->dct_rows(x->b, x->a, BIG / SGA_T_LONG, SGA_T_LONG, 1); break;
    case 16: be->sga_stats_forward(x->small1, x->a, BIG / SGA_T_LONG, SGA_T_LONG); break;
    // small1 holds case 16's statistics of the same a (redrawn alike before each op); dstats from d
    case 17: be->sga_stats_backward(x->c, x->d, x->a, x->small1, BIG / SGA_T_LONG, SGA_T_LONG); break;
    case 18: be->softmax_causal_forward(x->b, x->a, SGA_ROWS / SGA_T, SGA_T, 0, SGA_T); break;   // tiny-sga's maps
    case 19:
        be->matmul_backward(x->c, GRAD_ASSIGN, D_DWEIGHT(be, x), x->small1, D_DOUT(be, x), x->b, x->d, N_TOKENS, HIDDEN, WIDTH);
        break;
    case 20:
        be->matmul_backward_gelu(x->c, D_DWEIGHT(be, x), x->small1, D_DOUT(be, x), x->b, x->d, x->a, N_TOKENS, HIDDEN, WIDTH);
        break;
    // The copies between the (B,T,3C) qkv / (B,T,C) stream and the (B,NH,T,hs) heads: B 8, NH 4, T 128, hs 32.
    case 21: be->heads_split(x->c, QKV_PART(be, x->c, 1), QKV_PART(be, x->c, 2), x->a, BATCH, SEQ, HEADS_PER_SEQ, HEAD_SIZE); break;
    case 22: be->heads_split_backward(x->c, x->a, x->b, x->d, BATCH, SEQ, HEADS_PER_SEQ, HEAD_SIZE); break;
    case 23: be->heads_merge(x->c, x->a, BATCH, SEQ, HEADS_PER_SEQ, HEAD_SIZE); break;
    case 24: be->heads_merge_backward(x->c, x->a, BATCH, SEQ, HEADS_PER_SEQ, HEAD_SIZE); break;
    }
}

static const OpInfo OPS[] = {
    {"matmul_forward", "(1024, 128x512)", (double)N_TOKENS * HIDDEN},
    {"matmul_gelu_forward", "(1024, 128x512)", (double)N_TOKENS * HIDDEN},
    {"layernorm_forward", "(1024, 128)", (double)N_TOKENS * WIDTH},
    {"layernorm_backward", "(1024, 128)", (double)N_TOKENS * WIDTH},
    {"softmax_causal_forward", "(32, 128, 128)", (double)HEADS * SEQ * SEQ},
    {"softmax_causal_backward", "(32, 128, 128)", (double)HEADS * SEQ * SEQ},
    {"crossentropy_forward", "(1024, 256)", (double)N_TOKENS * VOCAB},
    {"add", "(1024, 128)", (double)N_TOKENS * WIDTH},
    {"dct_rows forward", "(8192, 64)", (double)BIG},
    {"dct_rows inverse", "(8192, 64)", (double)BIG},
    {"sga_stats_forward", "(8192, 64)", (double)BIG},
    {"sga_gate_apply", "(8192, 64)", (double)BIG},
    {"sga_blend_softmax_forward", "(128, 64, 64)", (double)BIG},
    {"adamw_update", "(524288)", (double)BIG},
    {"dct_rows forward", "(1024, 512)", (double)BIG},
    {"dct_rows inverse", "(1024, 512)", (double)BIG},
    {"sga_stats_forward", "(1024, 512)", (double)BIG},
    {"sga_stats_backward", "(1024, 512)", (double)BIG},
    {"softmax_causal_forward", "(128, 64, 64)", (double)BIG},
    {"matmul_backward", "(1024, 512x128)", (double)N_TOKENS * HIDDEN},
    {"matmul_backward_gelu", "(1024, 512x128)", (double)N_TOKENS * HIDDEN},
    {"heads_split", "(1024, 3x128)", (double)N_TOKENS * 3 * WIDTH},
    {"heads_split_backward", "(1024, 3x128)", (double)N_TOKENS * 3 * WIDTH},
    {"heads_merge", "(1024, 128)", (double)N_TOKENS * WIDTH},
    {"heads_merge_backward", "(1024, 128)", (double)N_TOKENS * WIDTH},
};

int main(int argc, char **argv) {
    thread_policy_apply(argv);   // the trainer's wait policy and OpenBLAS kernels
    int reps = argc > 1 ? atoi(argv[1]) : 21;
    if (reps < 1) reps = 1;
    const Backend *be = backend_cpu_f32();
    char threads[256];
    thread_policy_describe(threads, sizeof threads);
    printf("fp32 CPU ops, median of %d calls after one warm-up; %s\n", reps, threads);
    Buffers x;
    x.a = be->alloc(BIG); x.b = be->alloc(BIG); x.c = be->alloc(BIG); x.d = be->alloc(BIG);
    x.small1 = be->alloc(SGA_ROWS * 4); x.small2 = be->alloc(N_TOKENS); x.small3 = be->alloc(HIDDEN);
    fill_normal(be, x.a, BIG, 1.0);
    fill_normal(be, x.b, BIG, 0.5);
    fill_normal(be, x.d, BIG, 0.02);
    fill_normal(be, x.small3, HIDDEN, 1.0);
    int32_t host_targets[N_TOKENS];
    for (int i = 0; i < N_TOKENS; i++) host_targets[i] = (i * 37) % VOCAB;
    x.targets = be->alloc_i32(N_TOKENS);
    be->upload_i32(x.targets, host_targets, N_TOKENS);
    double *times = xmalloc(sizeof(double) * reps);
    for (size_t op = 0; op < sizeof OPS / sizeof OPS[0]; op++) {
        // Inputs the previous op overwrote are drawn again, so that every op sees the same values.
        fill_normal(be, x.a, BIG, 1.0);
        fill_normal(be, x.b, BIG, 0.5);
        be->zero(x.c, BIG);   // AdamW's second moment starts at zero, not at the last op's output
        run_op(be, &x, (int)op);   // warm-up: caches, FFTW plans
        for (int r = 0; r < reps; r++) {
            double t0 = now_seconds();
            run_op(be, &x, (int)op);
            times[r] = now_seconds() - t0;
        }
        double t = median_of(times, reps);
        printf("%-24s %-16s %9.1f us  %6.2f ns/element\n", OPS[op].name, OPS[op].shape, t * 1e6, t * 1e9 / OPS[op].elements);
    }
    free(times);
    void *all[] = {x.a, x.b, x.c, x.d, x.small1, x.small2, x.small3};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) be->free(all[i]);
    be->free(x.targets);
    return 0;
}
