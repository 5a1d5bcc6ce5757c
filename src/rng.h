// rng.h: counter-based random numbers. A value is a pure function of (seed, stream, counter),
// so any rank can generate any slice of any tensor or batch without replaying a sequence: the
// parameters of layer 7 are the same whether it lives on stage 0 of 1 or stage 3 of 4.
#pragma once
#include <stdint.h>
#include <math.h>

// SplitMix64 finaliser: a bijective 64-bit mix with good avalanche.
static inline uint64_t rng_mix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static inline uint64_t rng_hash3(uint64_t seed, uint64_t stream, uint64_t counter) {
    return rng_mix64(rng_mix64(rng_mix64(seed) ^ stream) ^ counter);
}

// Uniform in (0, 1): 53 random bits, never exactly 0 (safe for log).
static inline double rng_uniform(uint64_t seed, uint64_t stream, uint64_t counter) {
    return ((double)(rng_hash3(seed, stream, counter) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

// Standard normal by Box-Muller on two uniforms drawn from counters 2c and 2c+1.
static inline double rng_normal(uint64_t seed, uint64_t stream, uint64_t counter) {
    double u1 = rng_uniform(seed, stream, 2 * counter);
    double u2 = rng_uniform(seed, stream, 2 * counter + 1);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
