// backend_count.c: see backend_count.h.
#include "backend_count.h"
#include <string.h>
#include "common.h"

// Live blocks, so that free knows what it returns: a handful of tensors per layer and slot.
typedef struct { uintptr_t at; size_t bytes; } Block;
static Block *blocks;
static size_t n_blocks, cap_blocks, current, peak;
// Fake addresses start above the zero page and advance by each block's size rounded to 64 bytes,
// so pointer arithmetic inside a block (be_offset) stays inside it and blocks never overlap.
static uintptr_t next_address = 1u << 16;

static void *take(size_t bytes) {
    if (n_blocks == cap_blocks) {
        cap_blocks = cap_blocks ? 2 * cap_blocks : 256;
        blocks = realloc(blocks, cap_blocks * sizeof *blocks);
        if (!blocks) die(EXIT_FAILURE_OTHER, "out of memory counting allocations");
    }
    blocks[n_blocks++] = (Block){next_address, bytes};
    void *p = (void *)next_address;
    next_address += (bytes + 63) / 64 * 64;
    current += bytes;
    if (current > peak) peak = current;
    return p;
}

static void *count_alloc(size_t n) { return take((n ? n : 1) * sizeof(float)); }
static int32_t *count_alloc_i32(size_t n) { return take((n ? n : 1) * sizeof(int32_t)); }
static void *count_alloc_bf16(size_t n) { return take((n ? n : 1) * sizeof(uint16_t)); }   // 2 bytes, as on CUDA

static void count_free(void *p) {
    if (!p) return;
    for (size_t i = n_blocks; i-- > 0;)
        if (blocks[i].at == (uintptr_t)p) {
            current -= blocks[i].bytes;
            blocks[i] = blocks[--n_blocks];
            return;
        }
    die(EXIT_FAILURE_OTHER, "internal: the counting backend frees %p, which it did not hand out", p);
}

static void count_memory_stats(size_t *cur, size_t *pk) {
    if (cur) *cur = current;
    if (pk) *pk = peak;
}

void backend_count_reset(void) {
    n_blocks = 0;
    current = peak = 0;
    next_address = 1u << 16;
}

const Backend *backend_count(void) {
    static const Backend table = {
        .name = "count",
        .elem_size = sizeof(float),
        .working_set_bytes = 0,
        .alloc = count_alloc,
        .alloc_i32 = count_alloc_i32,
        .alloc_bf16 = count_alloc_bf16,
        .free = count_free,
        .memory_stats = count_memory_stats,
    };
    return &table;
}
