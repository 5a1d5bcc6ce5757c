// test_cpu_zero_copy: the CPU backend's zero and copy, which split a megabyte or more over the
// threads in pieces (src/cpu/memory.inc), give exactly what memset and memmove give: sizes that end
// inside a piece, elements next to the range left alone, and overlapping copies in both directions
// (memmove's case, which must not be cut in pieces), on 1 and 2 threads; small ones too.
#include <omp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include "backend.h"
#include "common.h"

enum { GUARD = 16, BIG = (3 << 20) / 4 + 123, SMALL = 1000, SHIFT = 4099 };

// dst[i] = a value that differs from element to element, so that a misplaced piece shows.
static void fill_distinct(float *x, size_t n, float offset) {
    for (size_t i = 0; i < n; i++) x[i] = offset + (float)(i % 100003) * 0.5f;
}

static void check_zero(size_t n) {
    const Backend *be = backend_cpu_f32();
    float *buf = be->alloc(n + 2 * GUARD), *want = xmalloc(sizeof(float) * (n + 2 * GUARD));
    for (int threads = 1; threads <= 2; threads++) {
        omp_set_num_threads(threads);
        fill_distinct(buf, n + 2 * GUARD, 1.0f);
        memcpy(want, buf, sizeof(float) * (n + 2 * GUARD));
        memset(want + GUARD, 0, sizeof(float) * n);
        be->zero(buf + GUARD, n);
        assert_memory_equal(buf, want, sizeof(float) * (n + 2 * GUARD));
    }
    be->free(buf);
    free(want);
}

// Copies n elements from src_at to dst_at inside one buffer (overlapping when the ranges do).
static void check_copy(size_t n, size_t src_at, size_t dst_at) {
    const Backend *be = backend_cpu_f32();
    size_t total = n + SHIFT + 2 * GUARD;
    float *buf = be->alloc(total), *want = xmalloc(sizeof(float) * total);
    for (int threads = 1; threads <= 2; threads++) {
        omp_set_num_threads(threads);
        fill_distinct(buf, total, 3.0f);
        memcpy(want, buf, sizeof(float) * total);
        memmove(want + dst_at, want + src_at, sizeof(float) * n);
        be->copy(buf + dst_at, buf + src_at, n);
        assert_memory_equal(buf, want, sizeof(float) * total);
    }
    be->free(buf);
    free(want);
}

static void test_zero_matches_memset(void **state) {
    (void)state;
    check_zero(BIG);
    check_zero(SMALL);
}

static void test_disjoint_copy_matches_memcpy(void **state) {
    (void)state;
    // Two buffers: the pieces path.
    const Backend *be = backend_cpu_f32();
    float *src = be->alloc(BIG), *dst = be->alloc(BIG + 2 * GUARD), *want = xmalloc(sizeof(float) * (BIG + 2 * GUARD));
    fill_distinct(src, BIG, 5.0f);
    for (int threads = 1; threads <= 2; threads++) {
        omp_set_num_threads(threads);
        fill_distinct(dst, BIG + 2 * GUARD, 7.0f);
        memcpy(want, dst, sizeof(float) * (BIG + 2 * GUARD));
        memcpy(want + GUARD, src, sizeof(float) * BIG);
        be->copy(dst + GUARD, src, BIG);
        assert_memory_equal(dst, want, sizeof(float) * (BIG + 2 * GUARD));
    }
    be->free(src);
    be->free(dst);
    free(want);
    check_copy(SMALL, GUARD, GUARD + SHIFT);
}

static void test_overlapping_copy_matches_memmove(void **state) {
    (void)state;
    check_copy(BIG, GUARD, GUARD + SHIFT);   // forward overlap: a piecewise copy would read what it wrote
    check_copy(BIG, GUARD + SHIFT, GUARD);   // backward overlap
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zero_matches_memset),
        cmocka_unit_test(test_disjoint_copy_matches_memcpy),
        cmocka_unit_test(test_overlapping_copy_matches_memmove),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
