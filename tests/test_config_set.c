// test_config_set.c: `--set key=value` overrides: applied after the file, in order, with the same
// type and range checks as a file value; errors read "--set KEY: reason".
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fixtures.h"

// ---- fixture: a scratch directory holding one base config

typedef struct {
    char dir[SCRATCH_DIR_LEN];
    char base[128];   // a small valid config the overrides apply to
} Scratch;

static int setup(void **state) {
    if (scratch_setup(state, Scratch, "/tmp/entrank-config-XXXXXX") != 0) return -1;
    Scratch *s = *state;
    write_scratch_file(s->dir, "base.cfg",
                       "model = { n_layer = 4; n_head = 4; d_model = 64; seq_len = 32; vocab_size = 64; };\n"
                       "train = { steps = 100; warmup_steps = 10; lr = 1e-3; min_lr = 1e-4; };\n",
                       s->base, sizeof s->base);
    return 0;
}

static void load_with(void **state, const char *const *sets, int n, Config *cfg) {
    const Scratch *s = *state;
    Error err = {{0}};
    if (config_load(s->base, sets, n, cfg, &err) != 0) fail_msg("config_load failed: %s", err.msg);
}

// The one --set `arg` fails with exactly `expected`.
static void expect_set_error(void **state, const char *arg, const char *expected) {
    const Scratch *s = *state;
    Config c;
    Error err = {{0}};
    const char *sets[] = {arg};
    if (config_load(s->base, sets, 1, &c, &err) != -1) fail_msg("--set %s was accepted", arg);
    assert_string_equal(err.msg, expected);
}

// ---- values

static void test_set_int_and_float(void **state) {
    const char *sets[] = {"model.n_layer=6", "train.lr=0.002", "train.min_lr=1", "train.lr=1", "train.steps=5000"};
    Config c;
    load_with(state, sets, 5, &c);
    assert_int_equal(c.n_layer, 6);
    assert_true(c.lr == 1.0);        // a later --set of the same key wins; an integer is a fine float
    assert_true(c.min_lr == 1.0);
    assert_int_equal(c.steps, 5000);
    assert_int_equal(c.n_head, 4);   // untouched keys keep the file's values
}

static void test_set_strings_quoted_and_bare(void **state) {
    Config c;
    const char *bare[] = {"data.kind=text", "data.train=data/shards/train_*.bin", "model.norm=post"};
    load_with(state, bare, 3, &c);
    assert_string_equal(c.data_kind, "text");
    assert_string_equal(c.data_train, "data/shards/train_*.bin");
    assert_int_equal(c.norm, NORM_POST);

    const char *quoted[] = {"data.kind=\"retrieval\"", "data.val=\"a b/val.bin\"", "train.device=\"cpu\""};
    load_with(state, quoted, 3, &c);
    assert_string_equal(c.data_kind, "retrieval");
    assert_string_equal(c.data_val, "a b/val.bin");
    assert_string_equal(c.device, "cpu");
}

static void test_set_list_bool_and_seed(void **state) {
    Config c;
    const char *sets[] = {"data.retrieval.distances=[64, 128, 4096]", "model.tie_embeddings=false",
                          "train.seed=5000000000", " parallel.zero = 1 "};
    load_with(state, sets, 4, &c);
    assert_int_equal(c.retrieval_n_distances, 3);
    assert_int_equal(c.retrieval_distances[0], 64);
    assert_int_equal(c.retrieval_distances[1], 128);
    assert_int_equal(c.retrieval_distances[2], 4096);
    assert_int_equal(c.retrieval_distances[3], 0);   // the rest of the array is cleared
    assert_int_equal(c.tie_embeddings, 0);
    assert_true(c.seed == 5000000000ULL);            // past 32 bits, no L needed on the command line
    assert_int_equal(c.zero, 1);

    const char *one[] = {"data.retrieval.distances=(7)"};
    load_with(state, one, 1, &c);
    assert_int_equal(c.retrieval_n_distances, 1);
    assert_int_equal(c.retrieval_distances[0], 7);
}

// Switching from a step count to a token budget takes two overrides, applied in order.
static void test_set_tokens_instead_of_steps(void **state) {
    Config c;
    const char *sets[] = {"train.steps=0", "train.tokens=100e9"};
    load_with(state, sets, 2, &c);
    assert_int_equal(c.steps, 0);
    assert_true(c.tokens == 100e9);
}

// ---- errors

static void test_set_unknown_key(void **state) {
    expect_set_error(state, "train.lrr=0.1", "--set train.lrr: unknown key (did you mean train.lr?)");
    expect_set_error(state, "model.n_layre=3", "--set model.n_layre: unknown key (did you mean model.n_layer?)");
    expect_set_error(state, "frobnicate.level=3", "--set frobnicate.level: unknown key");
    expect_set_error(state, "model=3", "--set model: is a group, not a key");
}

static void test_set_malformed(void **state) {
    expect_set_error(state, "foo", "--set foo: expected key=value");
    expect_set_error(state, "=3", "--set =3: expected key=value");
    expect_set_error(state, "train.lr=", "--set train.lr: missing value (expected key=value)");
    expect_set_error(state, "train.lr=abc", "--set train.lr: expected a number, got abc");
    expect_set_error(state, "train.lr=1; model.n_layer = 2", "--set train.lr: expected a number, got 1; model.n_layer = 2");
}

static void test_set_type_range_enum(void **state) {
    expect_set_error(state, "model.n_layer=\"12\"", "--set model.n_layer: expected an integer, got a string");
    expect_set_error(state, "model.n_layer=2.5", "--set model.n_layer: expected an integer, got a float");
    expect_set_error(state, "model.tie_embeddings=1", "--set model.tie_embeddings: expected a boolean, got an integer");
    expect_set_error(state, "data.retrieval.distances=5", "--set data.retrieval.distances: expected a list of integers, got an integer");
    expect_set_error(state, "train.lr=5", "--set train.lr: 5 is out of range (0, 1]");
    expect_set_error(state, "model.n_layer=4096", "--set model.n_layer: 4096 is out of range [1, 1024]");
    expect_set_error(state, "train.seed=-1", "--set train.seed: -1 is out of range [0, 9223372036854775807]");
    expect_set_error(state, "train.steps=99999999999999999999",
                     "--set train.steps: 99999999999999999999 is out of range [0, 1000000000000]");
    expect_set_error(state, "data.retrieval.distances=[1, 0]",
                     "--set data.retrieval.distances[1]: 0 is out of range [1, 1048576]");
    expect_set_error(state, "data.kind=csv",
                     "--set data.kind: \"csv\" is not one of \"llmc\", \"megatron\", \"text\", \"logic\", \"retrieval\"");
    expect_set_error(state, "attention.kind=\"flash\"", "--set attention.kind: \"flash\" is not one of \"sdpa\", \"sga\", \"head_scale\"");
}

// Cross-key checks run after every override and name an overridden key as --set.
static void test_set_cross_key(void **state) {
    expect_set_error(state, "model.n_head=5", "--set model.n_head: 5 does not divide model.d_model (64)");
    // train.steps was set in the file: the message points there.
    const Scratch *s = *state;
    char expected[ERR_LEN];
    snprintf(expected, sizeof expected,
             "%s:2: train.steps: exactly one of train.steps and train.tokens must be > 0 (steps 100, tokens 1e+09)", s->base);
    expect_set_error(state, "train.tokens=1e9", expected);
    expect_set_error(state, "train.min_lr=0.01", "--set train.min_lr: 0.01 is greater than train.lr (0.001)");
    expect_set_error(state, "train.batch_size=12", "--set train.batch_size: 12 is not a multiple of train.micro_batch_size (8)");

    // An invalid intermediate state is fine as long as the final one is valid.
    const char *sets[] = {"model.n_head=5", "model.d_model=80"};
    Config c;
    load_with(state, sets, 2, &c);
    assert_int_equal(c.n_head, 5);
    assert_int_equal(c.d_model, 80);
}

// The first failing override is reported; a file error comes before any override.
static void test_set_error_order(void **state) {
    const Scratch *s = *state;
    Config c;
    Error err = {{0}};
    const char *sets[] = {"model.n_layer=3", "train.lr=9", "model.n_layre=3"};
    assert_int_equal(config_load(s->base, sets, 3, &c, &err), -1);
    assert_string_equal(err.msg, "--set train.lr: 9 is out of range (0, 1]");

    char bad[160];
    write_scratch_file(s->dir, "bad.cfg", "train = { steps = 100; lr = 3; };\n", bad, sizeof bad);
    const char *fix[] = {"train.lr=0.1"};
    assert_int_equal(config_load(bad, fix, 1, &c, &err), -1);
    assert_non_null(strstr(err.msg, "bad.cfg:1: train.lr: 3 is out of range (0, 1]"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_int_and_float),
        cmocka_unit_test(test_set_strings_quoted_and_bare),
        cmocka_unit_test(test_set_list_bool_and_seed),
        cmocka_unit_test(test_set_tokens_instead_of_steps),
        cmocka_unit_test(test_set_unknown_key),
        cmocka_unit_test(test_set_malformed),
        cmocka_unit_test(test_set_type_range_enum),
        cmocka_unit_test(test_set_cross_key),
        cmocka_unit_test(test_set_error_order),
    };
    return cmocka_run_group_tests(tests, setup, scratch_teardown);
}
