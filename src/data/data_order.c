// data_order.c: the stateless epoch permutation and blend rule of data_order.h.
#include "data_order.h"
#include "data_hash.h"

void data_perm_init(DataPerm *p, uint64_t n, uint64_t seed, uint64_t stream, uint64_t epoch) {
    p->n = n;
    int m = 0;
    while (m < 64 && (1ULL << m) < n) m++;
    p->lo_bits = m / 2;
    p->hi_bits = m - p->lo_bits;
    // Own split constant: these keys never coincide with the random sampler's data_hash4 draws.
    for (int r = 0; r < DATA_PERM_ROUNDS; r++)
        p->keys[r] = data_hash4(seed, 0x5045524d00000000ULL ^ stream, epoch, (uint64_t)r);
}

static inline uint64_t low_mask(int bits) { return bits >= 64 ? ~0ULL : (1ULL << bits) - 1; }

// One pass of the Feistel network on [0, 2^m): each round changes one half only, so each is
// invertible (xor with a function of the other half) whatever the two halves' widths.
static uint64_t feistel(const DataPerm *p, uint64_t x) {
    uint64_t lo_mask = low_mask(p->lo_bits), hi_mask = low_mask(p->hi_bits);
    uint64_t lo = x & lo_mask, hi = p->lo_bits >= 64 ? 0 : x >> p->lo_bits;
    for (int r = 0; r < DATA_PERM_ROUNDS; r++) {
        if (r & 1) lo ^= data_mix64(p->keys[r] ^ hi) & lo_mask;
        else hi ^= data_mix64(p->keys[r] ^ lo) & hi_mask;
    }
    return p->lo_bits >= 64 ? lo : (hi << p->lo_bits) | lo;
}

uint64_t data_perm_apply(const DataPerm *p, uint64_t x) {
    if (p->n <= 1) return 0;
    // Cycle-walking: x lies on a cycle of the permutation of [0, 2^m) that contains x itself (in
    // [0, n)), so the walk ends, at the first value of the cycle after x inside [0, n).
    do x = feistel(p, x); while (x >= p->n);
    return x;
}

int data_blend_init(DataBlend *b, const double *weights, int n, int *bad) {
    double total = 0;
    for (int i = 0; i < n; i++) total += weights[i];
    b->n = n;
    uint64_t sum = 0;
    int largest = 0;
    for (int i = 0; i < n; i++) {
        // A double carries 53 bits: the rounding to 2^-62 loses nothing the weight had.
        b->p[i] = (uint64_t)(weights[i] / total * (double)DATA_BLEND_ONE);
        sum += b->p[i];
        if (b->p[i] > b->p[largest]) largest = i;
    }
    // The few units the doubles' rounding leaves over (or takes too many) go to the largest.
    b->p[largest] += DATA_BLEND_ONE - sum;
    for (int i = 0; i < n; i++)
        if (b->p[i] == 0) { *bad = i; return -1; }
    return 0;
}

typedef unsigned __int128 u128;

// Samples of source m that come before the key (2j + 1) / (2 p_i) of source i's j-th sample, in
// the merged order (equal keys: the lower source first).
static uint64_t before(const DataBlend *b, int m, int i, uint64_t j) {
    if (m == i) return j;
    u128 a = 2 * (u128)j + 1, bi = b->p[i];
    // #{j' >= 0: (2j' + 1) / p_m <= a / p_i} = floor((a p_m + p_i) / (2 p_i)); strictly less: a p_m + p_i - 1.
    u128 num = a * b->p[m] + bi - (m > i ? 1 : 0);
    return (uint64_t)(num / (2 * bi));
}

static uint64_t rank_of(const DataBlend *b, int i, uint64_t j) {
    uint64_t r = 0;
    for (int m = 0; m < b->n; m++) r += before(b, m, i, j);
    return r;
}

void data_blend_pick(const DataBlend *b, uint64_t g, int *source, uint64_t *j) {
    if (b->n <= 1) { *source = 0; *j = g; return; }
    for (int i = 0; i < b->n; i++) {
        // rank(i, j) = (j + 1/2) / w_i +- (k/2 + 1): the j of rank g lies within k + 2 of g w_i.
        uint64_t guess = (uint64_t)(((u128)g * b->p[i]) >> 62), slack = (uint64_t)b->n + 2;
        uint64_t lo = guess > slack ? guess - slack : 0, hi = guess + slack;
        if (rank_of(b, i, lo) > g) continue;
        // Largest j in [lo, hi] with rank <= g (rank grows with j).
        while (lo < hi) {
            uint64_t mid = lo + (hi - lo + 1) / 2;
            if (rank_of(b, i, mid) <= g) lo = mid; else hi = mid - 1;
        }
        if (rank_of(b, i, lo) == g) { *source = i; *j = lo; return; }
    }
    // Unreachable: exactly one key has rank g. Fall back to the first source rather than crash.
    *source = 0;
    *j = g;
}

uint64_t data_blend_count(const DataBlend *b, int i, uint64_t g) {
    if (b->n <= 1) return g;
    if (g == 0) return 0;
    // The source of sample g - 1 and its index fix every count: sources before it in the merged
    // order of that key have all their samples with smaller keys.
    int s;
    uint64_t j;
    data_blend_pick(b, g - 1, &s, &j);
    return i == s ? j + 1 : before(b, i, s, j);
}
