// The CUDA backend as far as a machine without a GPU can see it (CI): every op of backend.h has
// a CUDA implementation in the table, and device discovery reports "no device" with a reason
// instead of failing, which is what train.device = "auto" falls back on. Built only with CUDA.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>
#include "backend.h"
#include "../cuda/backend_cuda.h"

static void test_every_op_has_a_cuda_implementation(void **state) {
    (void)state;
    const Backend *be = backend_cuda_table();
    assert_non_null(be);
    assert_int_equal(be->elem_size, sizeof(float));
    char missing[4096] = "";
    int n_missing = 0, n_ops = 0;
    // Every op of backend.h by name (its BACKEND_OPS list), so that a failure says which are missing.
#define CHECK_OP(ret, name, params) \
    n_ops++; \
    if (!be->name) { n_missing++; strncat(missing, " " #name, sizeof missing - strlen(missing) - 1); }
    BACKEND_OPS(CHECK_OP)
#undef CHECK_OP
    printf("# %d ops, %d without a CUDA implementation%s\n", n_ops, n_missing, n_missing ? ":" : "");
    if (n_missing) fail_msg("CUDA ops missing:%s", missing);

    // The ops are the last members of struct Backend, all function pointers from `alloc` (the first
    // op) on: a member added after them by hand, outside the list, cannot hide from this count.
    size_t first = offsetof(Backend, alloc), slot = sizeof(void (*)(void));
    int n_slots = (int)((sizeof(Backend) - first) / slot);
    assert_int_equal(n_slots, n_ops);
    for (int i = 0; i < n_slots; i++) {
        void (*fn)(void);
        memcpy(&fn, (const char *)be + first + (size_t)i * slot, sizeof fn);
        if (!fn) fail_msg("op slot %d of backend.h (from alloc on) has no CUDA implementation", i);
    }
}

// CI machines have no GPU (and usually no driver): the count is 0 with a reason, not a crash,
// and creating the backend fails cleanly with a reason too.
static void test_no_device_reads_as_zero_with_a_reason(void **state) {
    (void)state;
    char why[256] = "";
    int n = cuda_device_count(why, sizeof why);
    if (n > 0) {
        printf("# %d CUDA device(s) present: nothing to check here\n", n);
        skip();
    }
    printf("# no CUDA device: %s\n", why);
    assert_int_equal(n, 0);
    assert_true(strlen(why) > 0);
    char why_create[256] = "";
    assert_null(backend_cuda_create(0, CUDA_GEMM_BF16, why_create, sizeof why_create));
    assert_true(strlen(why_create) > 0);
    assert_string_equal(backend_cuda_device_name(), "");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_op_has_a_cuda_implementation),
        cmocka_unit_test(test_no_device_reads_as_zero_with_a_reason),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
