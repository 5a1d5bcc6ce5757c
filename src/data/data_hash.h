// data_hash.h: counter-based hashing for the data sources (private to src/data).
//
// Every random choice of the data pipeline is a pure function of (seed, split, step, index), so
// any sequence of any step can be asked for in any order, by any rank, after any restart. The
// building block is the splitmix64 finalizer (Steele, Lea, Flood 2014), a bijective 64-bit mixer
// with good avalanche; a "stream" is that mixer applied to key + counter * golden ratio, which is
// exactly splitmix64 started at `key`, so it needs no state beyond a counter.
#pragma once
#include <stdint.h>

#define DATA_GOLDEN 0x9e3779b97f4a7c15ULL

// splitmix64 finalizer: a bijection on 64-bit words.
static inline uint64_t data_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// Hash of the tuple (seed, split, step, index). Each field is mixed in with its own constant so
// that swapping two fields (step 1 index 2 vs step 2 index 1) gives unrelated values.
uint64_t data_hash4(uint64_t seed, uint64_t split, uint64_t step, uint64_t index);

// Hash of a token string (content hash of a synthetic example, for the train/val rule).
uint64_t data_hash_tokens(const int32_t *tokens, int n);

// Train/val rule of the synthetic tasks: an example whose content hash is 0 mod 8 is validation.
static inline int data_content_is_val(uint64_t content_hash) { return content_hash % 8 == 0; }

// A splitmix64 stream keyed by a hash: draw i is data_mix64(key + i * golden), i = 1, 2, ...
typedef struct {
    uint64_t key;
    uint64_t counter;
} DataRng;

static inline DataRng data_rng(uint64_t key) { DataRng r = { key, 0 }; return r; }
static inline uint64_t data_rng_next(DataRng *r) { r->counter++; return data_mix64(r->key + r->counter * DATA_GOLDEN); }
// Uniform in [0, n), n >= 1. The modulo bias is below n / 2^64, far under anything measurable here.
static inline uint64_t data_rng_below(DataRng *r, uint64_t n) { return data_rng_next(r) % n; }
