// bench_data_order.c: cost of the training data order (issue 20). Per sample: the random sampler's
// hashed start against the epoch permutation (Feistel + cycle-walking) on a small and a
// corpus-sized domain, and a three-source blend. Per step: reading a whole global batch of
// 512 x 2048 tokens (the R3SI recipe's step) from a page-cached llm.c shard under each sampler.
// The sampler holds no memory that grows with the corpus: its state is the DataPerm printed below,
// on the stack of each call.
//   build/tests/bench_data_order [TOKENS] [DIR]    (defaults 20000000, /tmp)
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "data/data.h"
#include "data/data_order.h"
#include "timer.h"

enum { T = 2048, BATCH = 512 };

static void write_shard(const char *path, int64_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); exit(1); }
    int32_t header[256] = {20240520, 1, (int32_t)n};
    fwrite(header, sizeof header, 1, f);
    uint16_t buf[1 << 16];
    for (int64_t i = 0; i < n; i += 1 << 16) {
        int64_t m = n - i < (1 << 16) ? n - i : (1 << 16);
        for (int64_t k = 0; k < m; k++) buf[k] = (uint16_t)((i + k) * 2654435761u % 50257);
        fwrite(buf, 2, (size_t)m, f);
    }
    fclose(f);
}

static Config config(const char *path, const char *sampling) {
    Config c;
    memset(&c, 0, sizeof c);
    snprintf(c.data_kind, sizeof c.data_kind, "llmc");
    snprintf(c.data_train, sizeof c.data_train, "%s", path);
    snprintf(c.data_sampling, sizeof c.data_sampling, "%s", sampling);
    c.seq_len = T;
    c.vocab_size = 50304;
    c.batch_size = BATCH;
    c.seed = 1337;
    return c;
}

static DataSource *open_or_die(const Config *c) {
    Error err = {""};
    DataSource *src = data_open(c, SPLIT_TRAIN, &err);
    if (!src) { fprintf(stderr, "bench_data_order: %s\n", err.msg); exit(1); }
    return src;
}

// ns per data_locate (the sampler alone: no token is read).
static double ns_per_locate(DataSource *src, long n) {
    volatile uint64_t sink = 0;
    double t0 = now_seconds();
    for (long g = 0; g < n; g++) {
        DataSampleInfo at;
        data_locate(src, (uint64_t)(g / BATCH), (int)(g % BATCH), &at);
        sink += at.window;
    }
    (void)sink;
    return (now_seconds() - t0) / n * 1e9;
}

// ms per global batch read into host buffers: best of `reps` reads of step 0 (after a first read
// has faulted its pages into the mapping: the steady state of a file in the page cache).
static double ms_per_step(DataSource *src, int reps) {
    int32_t *tok = malloc(sizeof(int32_t) * T * 3);
    SequenceBuffers b = {tok, tok + T, tok + 2 * T};
    Error err = {""};
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now_seconds();
        for (int i = 0; i < BATCH; i++)
            if (data_get_sequence(src, 0, i, b, &err)) { fprintf(stderr, "bench_data_order: %s\n", err.msg); exit(1); }
        double dt = now_seconds() - t0;
        if (dt < best) best = dt;
    }
    free(tok);
    return best * 1e3;
}

int main(int argc, char **argv) {
    int64_t n = argc > 1 ? atoll(argv[1]) : 20000000;
    const char *dir = argc > 2 ? argv[2] : "/tmp";
    char path[4096];
    snprintf(path, sizeof path, "%s/entrank-bench-order-%d.bin", dir, (int)getpid());
    write_shard(path, n);
    printf("corpus: one llm.c shard of %lld tokens; step = %d sequences x %d tokens\n", (long long)n, BATCH, T);

    Config cr = config(path, "random"), ce = config(path, "epoch");
    DataSource *random = open_or_die(&cr), *epoch = open_or_die(&ce);
    const long N = 2000000;
    double ns_r = ns_per_locate(random, N), ns_e = ns_per_locate(epoch, N);
    printf("sampler per sample: random (hashed start) %.1f ns | epoch (Feistel, %lld windows) %.1f ns\n", ns_r,
           (long long)data_n_sequences(epoch), ns_e);

    // A corpus-sized domain (2^40 + 3 windows: 2.3e15 tokens at T = 2048) and the walk length.
    DataPerm p;
    double t0 = now_seconds();
    volatile uint64_t sink = 0;
    for (long x = 0; x < N; x++) {
        data_perm_init(&p, (1ULL << 40) + 3, 1337, 0, (uint64_t)x >> 20);
        sink += data_perm_apply(&p, (uint64_t)x * 7919);
    }
    printf("permutation on 2^40 + 3 windows (init + apply): %.1f ns; its whole state: %zu bytes\n", (now_seconds() - t0) / N * 1e9,
           sizeof p);
    // Cycle-walking: 2^m / n Feistel evaluations expected per apply; worst ratio just under 2.
    data_perm_init(&p, (1ULL << 20) + 1, 5, 0, 0);
    t0 = now_seconds();
    for (uint64_t x = 0; x < (1ULL << 20) + 1; x++) sink += data_perm_apply(&p, x);
    printf("permutation on 2^20 + 1 windows (2^21 domain, %.3f walks expected): %.1f ns per apply\n",
           (double)(1ULL << 21) / (double)((1ULL << 20) + 1), (now_seconds() - t0) / (double)((1ULL << 20) + 1) * 1e9);
    (void)sink;

    // Blend of three sources (the same shard three times, weights 0.5 / 0.3 / 0.2).
    Config cb = ce;
    cb.data_train[0] = 0;
    const double w[3] = {0.5, 0.3, 0.2};
    for (int i = 0; i < 3; i++) {
        cb.data_blend[i].weight = w[i];
        snprintf(cb.data_blend[i].path, sizeof cb.data_blend[i].path, "%s", path);
        snprintf(cb.data_blend[i].kind, sizeof cb.data_blend[i].kind, "llmc");
    }
    cb.data_blend_n = 3;
    snprintf(cb.data_val, sizeof cb.data_val, "%s", path);
    DataSource *blend = open_or_die(&cb);
    printf("sampler per sample: blend of 3 sources (pick + permutation) %.1f ns\n", ns_per_locate(blend, N));

    double ms_r = ms_per_step(random, 6), ms_e = ms_per_step(epoch, 6), ms_b = ms_per_step(blend, 6);
    printf("read one global batch (%d x %d tokens, page cache): random %.2f ms | epoch %.2f ms | blend %.2f ms\n", BATCH, T, ms_r, ms_e,
           ms_b);
    printf("sampler share of a step: %.3f ms (epoch) / %.3f ms (blend) per %d samples, against the reads above and a\n"
           "training step of seconds: not measurable\n", ns_e * BATCH / 1e6, ns_per_locate(blend, 100000) * BATCH / 1e6, BATCH);
    data_close(random);
    data_close(epoch);
    data_close(blend);
    unlink(path);
    return 0;
}
