// test_fftw_wisdom: the FFTW wisdom the fp32 backend ships for SGA's DCTs (src/cpu/dct_wisdom_f32.inc)
// imports into the FFTW this links and holds a plan for every length it names in both directions, for
// exactly the problem the backend plans (src/cpu/dct_fftw_plan.inc); without it FFTW has none, so
// the check can fail. A plan from the wisdom transforms like the DFT's definition. When FFTW changes,
// this fails and `make fftw-wisdom` remakes the file (results stay right either way: FFTW refuses
// stale wisdom and the backend falls back to FFTW's estimated plans).
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <fftw3.h>
#include <cmocka.h>

typedef float real;
#define FFTW(name) fftwf_##name
#include "cpu/dct_fftw_plan.inc"
#include "cpu/dct_wisdom_f32.inc"

static int plans_from_wisdom(int T, int inverse) {
    FFTW(plan) plan = dct_fftw_plan(T, inverse, FFTW_ESTIMATE | FFTW_WISDOM_ONLY);
    if (!plan) return 0;
    FFTW(destroy_plan)(plan);
    return 1;
}

// One test, in this order: FFTW's wisdom store is process-wide and an import cannot be undone.
static void test_shipped_wisdom_covers_every_length(void **state) {
    (void)state;
    for (int i = 0; i < DCT_WISDOM_LENGTHS; i++) assert_false(plans_from_wisdom(dct_wisdom_lengths[i], 0));
    assert_int_equal(FFTW(import_wisdom_from_string)(dct_wisdom_f32), 1);
    for (int i = 0; i < DCT_WISDOM_LENGTHS; i++)
        for (int inverse = 0; inverse < 2; inverse++) {
            int T = dct_wisdom_lengths[i];
            if (!plans_from_wisdom(T, inverse)) fail_msg("no wisdom for length %d, %s", T, inverse ? "c2r" : "r2c");
        }
    assert_false(plans_from_wisdom(96, 0));   // a length it does not name

    // The wisdom's plan at T = 512 against the DFT summed in double, every row of the block.
    enum { T = 512, TC = T / 2 + 1 };
    FFTW(plan) plan = dct_fftw_plan(T, 0, FFTW_ESTIMATE | FFTW_WISDOM_ONLY);
    assert_non_null(plan);
    float *x = fftwf_alloc_real((size_t)DCT_BLOCK * T);
    fftwf_complex *X = fftwf_alloc_complex((size_t)DCT_BLOCK * TC);
    for (int n = 0; n < DCT_BLOCK * T; n++) x[n] = (float)sin(0.37 * n) + (float)(n % 7) * 0.25f;
    fftwf_execute_dft_r2c(plan, x, X);
    double worst = 0;
    for (int row = 0; row < DCT_BLOCK; row += 5)
        for (int k = 0; k < TC; k += 17) {
            double re = 0, im = 0;
            for (int n = 0; n < T; n++) {
                double angle = -2 * M_PI * (double)k * n / T;
                re += x[row * T + n] * cos(angle);
                im += x[row * T + n] * sin(angle);
            }
            double err = hypot(X[row * TC + k][0] - re, X[row * TC + k][1] - im);
            worst = err > worst ? err : worst;
        }
    assert_true(worst < 1e-3);   // sums of 512 terms of size ~1 in fp32
    fftwf_destroy_plan(plan);
    fftwf_free(x);
    fftwf_free(X);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shipped_wisdom_covers_every_length),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
