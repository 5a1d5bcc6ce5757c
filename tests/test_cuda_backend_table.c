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

// Every op of backend.h by name, so that a failure says which are missing.
#define BACKEND_OPS(X) \
    X(alloc) X(alloc_i32) X(free) X(upload) X(download) X(upload_f64) X(download_f64) X(upload_i32) \
    X(download_i32) X(zero) X(copy) X(synchronize) \
    X(encoder_forward) X(encoder_backward) X(layernorm_forward) X(layernorm_backward) \
    X(matmul_forward) X(matmul_backward) \
    X(gelu_forward) X(gelu_backward) X(add) X(accumulate) X(scale) X(scale_rows) \
    X(heads_split) X(heads_split_backward) X(heads_merge) X(heads_merge_backward) \
    X(attn_scores) X(attn_scores_backward) X(softmax_causal_forward) X(softmax_causal_backward) \
    X(attn_values) X(attn_values_backward) \
    X(gemm) X(axpy) X(diag_sum) X(column_sums) \
    X(attn_row_entropy) X(attn_entropy_reg_sum) X(attn_entropy_reg_backward) X(head_mask_apply) \
    X(crossentropy_forward) X(crossentropy_backward) X(argmax_rows) \
    X(dct_rows) X(causal_lower_copy) X(causal_lower_accumulate) X(sga_stats_forward) X(sga_stats_backward) \
    X(sga_gate_input) X(sga_gate_input_backward) X(sga_fixed_gate) X(sga_gate_apply) X(sga_gate_backward) \
    X(sga_blend_forward) X(sga_blend_backward) \
    X(sum) X(sum_squares) X(adamw_update)

static void test_every_op_has_a_cuda_implementation(void **state) {
    (void)state;
    const Backend *be = backend_cuda_table();
    assert_non_null(be);
    assert_int_equal(be->elem_size, sizeof(float));
    char missing[4096] = "";
    int n_missing = 0, n_ops = 0;
#define CHECK_OP(name) \
    n_ops++; \
    if (!be->name) { n_missing++; strncat(missing, " " #name, sizeof missing - strlen(missing) - 1); }
    BACKEND_OPS(CHECK_OP)
#undef CHECK_OP
    printf("# %d ops, %d without a CUDA implementation%s\n", n_ops, n_missing, n_missing ? ":" : "");
    if (n_missing) fail_msg("CUDA ops missing:%s", missing);

    // The list above is by hand; the table itself is all function pointers after `elem_size`, so
    // an op added to backend.h later cannot hide from this count.
    size_t first = offsetof(Backend, alloc), slot = sizeof(void (*)(void));
    int n_slots = (int)((sizeof(Backend) - first) / slot);
    assert_int_equal(n_slots, n_ops);
    for (int i = 0; i < n_slots; i++) {
        void (*fn)(void);
        memcpy(&fn, (const char *)be + first + (size_t)i * slot, sizeof fn);
        if (!fn) fail_msg("op slot %d of backend.h (after elem_size) has no CUDA implementation", i);
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
