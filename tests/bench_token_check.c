// bench_token_check.c: cost of data_check_tokens, the start-up pass over every token id
// (validate_run), on a 100M-token llm.c shard (200 MB): from the page cache (with and without the
// cost of faulting the fresh mapping in) and after the file's pages were dropped (posix_fadvise
// DONTNEED: read from storage), against data_open alone and against a scalar loop that decodes
// each token as the windows do.
//   build/tests/bench_token_check [TOKENS] [DIR]    (defaults 100000000, /tmp)
#define _FILE_OFFSET_BITS 64
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "data/data.h"
#include "timer.h"

static void drop_cache(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) { perror(path); exit(1); }
    fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
}

// data_open + data_check_tokens of the whole train split; returns seconds.
static double timed_check(const Config *c) {
    Error err = { "" };
    double t0 = now_seconds();
    DataSource *src = data_open(c, SPLIT_TRAIN, &err);
    if (!src || data_check_tokens(src, 0, 1, &err)) { fprintf(stderr, "bench_token_check: %s\n", err.msg); exit(1); }
    data_close(src);
    return now_seconds() - t0;
}

// The pass alone, on a mapping whose pages are already mapped (a second pass over one source):
// what the vectorised loop costs without the page faults.
static double timed_second_pass(const Config *c) {
    Error err = { "" };
    DataSource *src = data_open(c, SPLIT_TRAIN, &err);
    if (!src || data_check_tokens(src, 0, 1, &err)) { fprintf(stderr, "bench_token_check: %s\n", err.msg); exit(1); }
    double t0 = now_seconds();
    if (data_check_tokens(src, 0, 1, &err)) { fprintf(stderr, "bench_token_check: %s\n", err.msg); exit(1); }
    double dt = now_seconds() - t0;
    data_close(src);
    return dt;
}

static double timed_open(const Config *c) {
    Error err = { "" };
    double t0 = now_seconds();
    DataSource *src = data_open(c, SPLIT_TRAIN, &err);
    if (!src) { fprintf(stderr, "bench_token_check: %s\n", err.msg); exit(1); }
    data_close(src);
    return now_seconds() - t0;
}

// The per-token decode of file_source_get (byte by byte, little-endian, compare), over the mapping.
static double timed_scalar(const char *path, int64_t n, int vocab, int64_t *bad) {
    int fd = open(path, O_RDONLY);
    size_t size = 1024 + 2 * (size_t)n;
    const unsigned char *m = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    double t0 = now_seconds();
    *bad = 0;
    for (int64_t i = 0; i < n; i++) {
        const unsigned char *p = m + 1024 + 2 * i;
        uint64_t v = 0;
        for (int k = 1; k >= 0; k--) v = (v << 8) | p[k];
        *bad += (int64_t)v >= vocab;
    }
    double dt = now_seconds() - t0;
    munmap((void *)m, size);
    return dt;
}

int main(int argc, char **argv) {
    int64_t n = argc > 1 ? atoll(argv[1]) : 100000000;
    const char *base = argc > 2 ? argv[2] : "/tmp";
    const int vocab = 50257;   // GPT-2's
    char dir[3000], path[3100];
    snprintf(dir, sizeof dir, "%s/entrank-bench-tokcheck.XXXXXX", base);
    if (!mkdtemp(dir)) { perror(dir); return 1; }
    snprintf(path, sizeof path, "%s/shard.bin", dir);

    // The shard: header, then n pseudo-random ids below the vocabulary, written in 1M-token chunks.
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); return 1; }
    int32_t h[256] = { 20240520, 1, (int32_t)n };
    fwrite(h, sizeof h, 1, f);
    uint16_t *chunk = malloc((1 << 20) * sizeof *chunk);
    uint64_t x = 88172645463325252ull;
    for (int64_t done = 0; done < n;) {
        int64_t k = n - done < (1 << 20) ? n - done : (1 << 20);
        for (int64_t i = 0; i < k; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; chunk[i] = (uint16_t)(x % vocab); }
        fwrite(chunk, sizeof *chunk, (size_t)k, f);
        done += k;
    }
    free(chunk);
    fclose(f);

    Config c;
    memset(&c, 0, sizeof c);
    strcpy(c.data_kind, "llmc");
    snprintf(c.data_train, sizeof c.data_train, "%s", path);
    c.seq_len = 1024;
    c.vocab_size = vocab;
    c.batch_size = 8;
    c.data_val_fraction = 0.0001;   // the train split is 99.99% of the file

    double mb = 2.0 * (double)n / 1e6;
    drop_cache(path);
    double cold = timed_check(&c);
    double warm[5], open_only[5], second[5];
    for (int r = 0; r < 5; r++) warm[r] = timed_check(&c);
    for (int r = 0; r < 5; r++) open_only[r] = timed_open(&c);
    for (int r = 0; r < 5; r++) second[r] = timed_second_pass(&c);
    qsort(warm, 5, sizeof *warm, compare_doubles);
    qsort(open_only, 5, sizeof *open_only, compare_doubles);
    qsort(second, 5, sizeof *second, compare_doubles);
    int64_t bad;
    double scalar = timed_scalar(path, n, vocab, &bad);
    if (bad) { fprintf(stderr, "bench_token_check: %lld bad ids in a clean file\n", (long long)bad); return 1; }

    printf("token check: %lld uint16 tokens (%.0f MB llm.c shard), vocab %d, 1 thread\n", (long long)n, mb, vocab);
    printf("  data_open alone (headers, mmap)        %8.2f ms (median of 5)\n", 1e3 * open_only[2]);
    printf("  open + check, page cache               %8.2f ms (median of 5) = %.1f GB/s, %.2f ns/token\n",
           1e3 * warm[2], mb / 1e3 / warm[2], 1e9 * warm[2] / (double)n);
    printf("  check alone, pages already mapped      %8.2f ms (median of 5) = %.1f GB/s, %.2f ns/token\n",
           1e3 * second[2], mb / 1e3 / second[2], 1e9 * second[2] / (double)n);
    printf("  open + check, pages dropped first      %8.2f ms = %.2f GB/s (storage bound)\n", 1e3 * cold, mb / 1e3 / cold);
    printf("  scalar per-token decode (page cache)   %8.2f ms = %.1f GB/s\n", 1e3 * scalar, mb / 1e3 / scalar);
    unlink(path);
    rmdir(dir);
    return 0;
}
