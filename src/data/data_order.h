// data_order.h: the order in which training windows are visited (issue 20; private to src/data).
//
// Two stateless pieces, so that sample g of a run is a pure function of (seed, g) on every
// topology and after any resume, with no saved sampler state and no memory proportional to the
// corpus:
//
//  - DataPerm: a seeded bijection of [0, n), one per (seed, source, epoch). A Feistel network on
//    the next power of two 2^m >= n (m bits, cut in halves of floor(m/2) and ceil(m/2) bits; each of
//    the DATA_PERM_ROUNDS rounds xors one half with a splitmix64 hash of the other and the round
//    key), with cycle-walking: values >= n are permuted again until they land in [0, n). Because
//    2^m < 2n, a walk continues with probability < 1/2 at each step: the expected number of
//    Feistel evaluations is 2^m / n < 2, the worst case is bounded by the cycle length (never seen
//    above a few dozen in practice). Cost: DATA_PERM_ROUNDS hashes per evaluation.
//
//  - DataBlend: which source a global sample goes to, with the realised counts within 1 of
//    weight x samples over every prefix. Megatron's rule (give sample g to the source whose count
//    lags weight x (g + 1) the most) needs the counts so far, i.e. state; here the sequence is
//    Webster's (Sainte-Lague) divisor sequence instead: source i's j-th sample (0-based) carries the
//    key (j + 1/2) / w_i, and samples are the merged order of all keys (ties: the lower source
//    first). Sample g is the key of rank g, found in O(k^2 log k) integer operations for k sources
//    (k binary searches over a window of 2k + 5 candidates, each rank a sum over the k sources). After
//    g samples every source holds c_i = w_i t + e_i with |e_i| <= 1/2 for the key t of sample g, so
//    |c_i - w_i g| <= 1/2 + (k - 2) w_i / 2: below 1 for two and three sources. For more, neither
//    rule stays within 1 in general (simulated over random weights: Megatron's greedy reaches ~1.01
//    at 4 sources and ~1.15 at 8; this sequence ~1.3 and ~2.2): the bound above is what holds.
//    Weights are rounded to multiples of 2^-62 of the total (integer keys, 128-bit products: the
//    same answer on every machine); the drift this adds is below g x 2^-52 samples (the doubles'
//    own precision), 1e-3 samples after 4e12 samples.
#pragma once
#include <stdint.h>

#define DATA_PERM_ROUNDS 8
#define DATA_BLEND_MAX 8
#define DATA_BLEND_ONE (1ULL << 62)   // the weights' common denominator

typedef struct {
    uint64_t n;
    int lo_bits, hi_bits;
    uint64_t keys[DATA_PERM_ROUNDS];
} DataPerm;

// The permutation of epoch `epoch` of stream `stream` (a blend source) under `seed`, on [0, n), n >= 1.
void data_perm_init(DataPerm *p, uint64_t n, uint64_t seed, uint64_t stream, uint64_t epoch);
// Position x in [0, n) -> the window visited there.
uint64_t data_perm_apply(const DataPerm *p, uint64_t x);

typedef struct {
    int n;
    uint64_t p[DATA_BLEND_MAX];   // weights in units of 2^-62 of the total, each >= 1, sum 2^62
} DataBlend;

// Rounds n > 0 positive weights to units of 2^-62 of their sum. Returns -1 (and the index of the
// offending weight in *bad) when a weight is below 2^-62 of the total.
int data_blend_init(DataBlend *b, const double *weights, int n, int *bad);
// Sample g -> (source, j): the sample is the j-th (0-based) of that source.
void data_blend_pick(const DataBlend *b, uint64_t g, int *source, uint64_t *j);
// How many of samples [0, g) go to source i (closed form, O(k)).
uint64_t data_blend_count(const DataBlend *b, int i, uint64_t g);
