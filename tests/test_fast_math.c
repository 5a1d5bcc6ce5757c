// test_fast_math: the vectorisable expf_fast and logf_fast of the fp32 CPU backend
// (src/cpu/fast_math.inc) against libm in double, over their whole documented domains.
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include "cpu/fast_math.inc"

// Error of `got` against the exact value in units of the float spacing at the exact value.
static double ulps(float got, double exact) {
    float e = (float)exact;
    double spacing = (double)nextafterf(fabsf(e), INFINITY) - (double)fabsf(e);
    return fabs((double)got - exact) / spacing;
}

// Every 61st float bit pattern of the positive normal floats: about 35 million arguments.
static void test_logf_fast_within_one_ulp(void **state) {
    (void)state;
    double worst = 0;
    float worst_at = 0;
    for (uint32_t bits = 0x00800000u; bits < 0x7f800000u; bits += 61) {
        float x;
        memcpy(&x, &bits, sizeof x);
        double exact = log((double)x);
        if (fabs(exact) < 1e-30) continue;   // log(1) = 0 has no relative scale
        double u = ulps(logf_fast(x), exact);
        if (u > worst) { worst = u; worst_at = x; }
    }
    printf("# logf_fast: worst %.2f ulp at x = %.9g\n", worst, worst_at);
    assert_true(worst <= 1.0);
    assert_true(logf_fast(1.0f) == 0.0f);
    assert_true(fabsf(logf_fast(FLT_MIN) - logf(FLT_MIN)) <= 1e-5f * fabsf(logf(FLT_MIN)));
}

// [-87, 88] in steps of 2^-12, and the saturation outside it.
static void test_expf_fast_within_two_ulp(void **state) {
    (void)state;
    double worst = 0;
    float worst_at = 0;
    for (int i = -87 * 4096; i <= 88 * 4096; i++) {
        float x = (float)i / 4096.0f;
        double u = ulps(expf_fast(x), exp((double)x));
        if (u > worst) { worst = u; worst_at = x; }
    }
    printf("# expf_fast: worst %.2f ulp at x = %.9g\n", worst, worst_at);
    assert_true(worst <= 2.0);
    assert_true(isfinite(expf_fast(1000.0f)) && expf_fast(-1000.0f) >= 0.0f);
    assert_true(isnan(expf_fast(NAN)));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logf_fast_within_one_ulp),
        cmocka_unit_test(test_expf_fast_within_two_ulp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
