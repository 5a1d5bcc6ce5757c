// data_hash.c: the tuple and content hashes of data_hash.h.
#include "data_hash.h"

uint64_t data_hash4(uint64_t seed, uint64_t split, uint64_t step, uint64_t index) {
    // Distinct odd constants per field (digits of pi), each field pre-mixed so that small
    // consecutive counters are spread over the whole word before they are combined.
    uint64_t h = data_mix64(seed ^ 0x243f6a8885a308d3ULL);
    h = data_mix64(h ^ data_mix64(split + 0x13198a2e03707345ULL));
    h = data_mix64(h ^ data_mix64(step + 0xa4093822299f31d1ULL));
    h = data_mix64(h ^ data_mix64(index + 0x082efa98ec4e6c89ULL));
    return h;
}

uint64_t data_hash_tokens(const int32_t *tokens, int n) {
    uint64_t h = data_mix64(0x452821e638d01377ULL + (uint64_t)n);
    for (int i = 0; i < n; i++) h = data_mix64(h ^ ((uint64_t)(uint32_t)tokens[i] + DATA_GOLDEN));
    return h;
}
