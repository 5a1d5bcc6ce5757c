// test_spin_count: the spin count entrank sets for libgomp (src/thread_policy.h) stands for about
// THREAD_POLICY_SPIN_US of x86 pause whatever that instruction's latency, within the bounds: the
// count for a given latency, the clamps at both ends, and the least count when the latency is
// unknown (0, negative or NaN: a CPU where it could not be timed).
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include "thread_policy.h"

static void test_count_is_the_duration_over_the_pause_latency(void **state) {
    (void)state;
    assert_int_equal(thread_policy_spins_for(10.0), THREAD_POLICY_SPIN_US * 100);   // 100 us / 10 ns
    assert_int_equal(thread_policy_spins_for(11.3), lround(THREAD_POLICY_SPIN_US * 1e3 / 11.3));
    assert_int_equal(thread_policy_spins_for(45.0), lround(THREAD_POLICY_SPIN_US * 1e3 / 45.0));
}

static void test_count_is_clamped(void **state) {
    (void)state;
    assert_int_equal(thread_policy_spins_for(0.5), THREAD_POLICY_MAX_SPINS);     // a pause that barely waits
    assert_int_equal(thread_policy_spins_for(1000.0), THREAD_POLICY_MIN_SPINS);  // a pause of a microsecond
}

static void test_unknown_latency_gets_the_least_count(void **state) {
    (void)state;
    assert_int_equal(thread_policy_spins_for(0), THREAD_POLICY_MIN_SPINS);
    assert_int_equal(thread_policy_spins_for(-3), THREAD_POLICY_MIN_SPINS);
    assert_int_equal(thread_policy_spins_for(NAN), THREAD_POLICY_MIN_SPINS);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_count_is_the_duration_over_the_pause_latency),
        cmocka_unit_test(test_count_is_clamped),
        cmocka_unit_test(test_unknown_latency_gets_the_least_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
