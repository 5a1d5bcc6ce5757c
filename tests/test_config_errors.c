// test_config_errors.c: bad config files give one line naming the file, the line and the key:
// unknown keys (with a suggestion), wrong types, out-of-range and enum values, syntax errors,
// missing files, errors inside @included files, and the cross-key checks.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "fixtures.h"

// ---- fixture: a scratch directory (with a base/ folder) for the config files a test writes

static int setup(void **state) {
    if (scratch_setup(state, ScratchDir, "/tmp/entrank-config-XXXXXX") != 0) return -1;
    const ScratchDir *s = *state;
    char base[128];
    return mkdir(scratch_path(s->dir, "base", base, sizeof base), 0755);
}

// Loads `path`, expects failure and returns the message (in err).
static const char *load_fails(const char *path, Error *err) {
    Config c;
    memset(err, 0, sizeof *err);
    int rc = config_load(path, NULL, 0, &c, err);
    if (rc != -1) fail_msg("config_load(%s) succeeded; expected an error", path);
    assert_null(strchr(err->msg, '\n'));   // one line
    return err->msg;
}

// Writes `text` to `name`, loads it and checks that the message is exactly
// "<path>:<line>: <rest>".
static void expect_file_error(const ScratchDir *s, const char *name, const char *text, int line, const char *rest) {
    char path[256], expected[ERR_LEN];
    write_scratch_file(s->dir, name, text, path, sizeof path);
    Error err;
    const char *msg = load_fails(path, &err);
    snprintf(expected, sizeof expected, "%s:%d: %s", path, line, rest);
    assert_string_equal(msg, expected);
}

// ---- unknown keys

static void test_unknown_key_in_group_suggests(void **state) {
    expect_file_error(*state, "typo.cfg",
                      "model = {\n"
                      "  n_layer = 4;\n"
                      "  n_layre = 4;\n"
                      "};\n"
                      "train = { steps = 10; warmup_steps = 0; };\n",
                      3, "model.n_layre: unknown key (did you mean model.n_layer?)");
}

static void test_unknown_keys_elsewhere(void **state) {
    // A key in the wrong place: the same name in another group is suggested.
    expect_file_error(*state, "toplevel.cfg", "train = { steps = 10; };\nseed = 3;\n", 2,
                      "seed: unknown key (did you mean train.seed?)");
    // A misspelled group.
    expect_file_error(*state, "group.cfg", "\nmodle = { n_layer = 4; };\n", 2,
                      "modle: unknown key (did you mean model?)");
    // Nested groups are walked too.
    expect_file_error(*state, "nested.cfg",
                      "train = { steps = 10; };\ndata = {\n  logic = {\n    depht_max = 3;\n  };\n};\n", 4,
                      "data.logic.depht_max: unknown key (did you mean data.logic.depth_max?)");
    // Nothing close: no suggestion.
    expect_file_error(*state, "far.cfg", "train = { steps = 10; };\nfrobnicate = { gate_hidden = 16; };\n", 2,
                      "frobnicate: unknown key");
}

// ---- types

static void test_wrong_type(void **state) {
    expect_file_error(*state, "type-int.cfg", "model = {\n  n_layer = \"12\";\n};\n", 2,
                      "model.n_layer: expected an integer, got a string");
    expect_file_error(*state, "type-float-int.cfg", "model = { n_layer = 2.5; };\n", 1,
                      "model.n_layer: expected an integer, got a float");
    expect_file_error(*state, "type-float.cfg", "train = { lr = \"fast\"; };\n", 1,
                      "train.lr: expected a number, got a string");
    expect_file_error(*state, "type-bool.cfg", "model = { tie_embeddings = 1; };\n", 1,
                      "model.tie_embeddings: expected a boolean, got an integer");
    expect_file_error(*state, "type-string.cfg", "data = { kind = 3; };\n", 1,
                      "data.kind: expected a string, got an integer");
    expect_file_error(*state, "type-list.cfg", "data = { retrieval = { distances = 512; }; };\n", 1,
                      "data.retrieval.distances: expected a list of integers, got an integer");
    expect_file_error(*state, "type-elem.cfg", "data = { retrieval = { distances = (128, \"far\"); }; };\n", 1,
                      "data.retrieval.distances[1]: expected an integer, got a string");
    expect_file_error(*state, "type-group.cfg", "model = { norm = { x = 1; }; };\n", 1,
                      "model.norm: expected a string, got a group");
    expect_file_error(*state, "type-notgroup.cfg", "data = {\n  logic = 3;\n};\n", 2,
                      "data.logic: expected a group, got an integer");
}

// ---- ranges and enums

static void test_out_of_range(void **state) {
    expect_file_error(*state, "lr5.cfg", "train = {\n  steps = 10;\n  lr = 5;\n};\n", 3,
                      "train.lr: 5 is out of range (0, 1]");
    expect_file_error(*state, "lr0.cfg", "train = { lr = 0.0; };\n", 1, "train.lr: 0 is out of range (0, 1]");
    expect_file_error(*state, "beta2.cfg", "train = { beta2 = 1.0; };\n", 1, "train.beta2: 1 is out of range [0, 1)");
    expect_file_error(*state, "layers.cfg", "model = { n_layer = 0; };\n", 1, "model.n_layer: 0 is out of range [1, 1024]");
    expect_file_error(*state, "valfrac.cfg", "data = { val_fraction = 0.6; };\n", 1,
                      "data.val_fraction: 0.6 is out of range (0, 0.5]");
    expect_file_error(*state, "depth.cfg", "data = { logic = { depth_max = 7; }; };\n", 1,
                      "data.logic.depth_max: 7 is out of range [1, 6]");
    expect_file_error(*state, "zero.cfg", "parallel = { zero = 2; };\n", 1, "parallel.zero: 2 is out of range [0, 1]");
    // Beyond 32 bits without an L suffix libconfig would wrap 4294967298 to 2: checked in 64 bits.
    expect_file_error(*state, "wrap.cfg", "model = { n_layer = 4294967298; };\n", 1,
                      "model.n_layer: 4294967298 is out of range [1, 1024]");
    expect_file_error(*state, "elem.cfg", "data = { retrieval = { distances = [128, 0]; }; };\n", 1,
                      "data.retrieval.distances[1]: 0 is out of range [1, 1048576]");
    expect_file_error(*state, "empty-list.cfg", "data = { retrieval = { distances = []; }; };\n", 1,
                      "data.retrieval.distances: expected 1 to 16 values, got 0");
}

static void test_enum_violation(void **state) {
    expect_file_error(*state, "kind.cfg", "data = {\n  kind = \"csv\";\n};\n", 2,
                      "data.kind: \"csv\" is not one of \"llmc\", \"megatron\", \"text\", \"logic\", \"retrieval\"");
    expect_file_error(*state, "norm.cfg", "model = { norm = \"sandwich\"; };\n", 1,
                      "model.norm: \"sandwich\" is not one of \"pre\", \"post\"");
    expect_file_error(*state, "device.cfg", "train = { device = \"tpu\"; };\n", 1,
                      "train.device: \"tpu\" is not one of \"auto\", \"cpu\", \"cuda\"");
    expect_file_error(*state, "attn.cfg", "attention = { kind = \"flash\"; };\n", 1,
                      "attention.kind: \"flash\" is not one of \"sdpa\", \"sga\", \"head_scale\"");
}

// ---- files

static void test_syntax_error_and_duplicates(void **state) {
    expect_file_error(*state, "syntax.cfg", "model = {\n  n_layer = ;\n};\n", 2, "syntax error");
    expect_file_error(*state, "dup.cfg", "model = { n_layer = 4; };\ntrain = { steps = 1; };\nmodel = { n_head = 2; };\n", 3,
                      "duplicate setting name");
}

static void test_missing_file(void **state) {
    const ScratchDir *s = *state;
    char path[256], expected[ERR_LEN];
    Error err;
    scratch_path(s->dir, "does-not-exist.cfg", path, sizeof path);
    snprintf(expected, sizeof expected, "%s: cannot open: No such file or directory", path);
    assert_string_equal(load_fails(path, &err), expected);

    snprintf(expected, sizeof expected, "%s: cannot open: not a regular file (a directory)", s->dir);
    assert_string_equal(load_fails(s->dir, &err), expected);
}

// Presets share a base through @include (resolved relative to the main file's directory): values
// come through, and an error inside the included file names that file and its line.
static void test_include(void **state) {
    const ScratchDir *s = *state;
    char path[256], base[256], expected[ERR_LEN];
    Error err;

    write_scratch_file(s->dir, "base/good.cfg", "train = {\n  steps = 50;\n  warmup_steps = 5;\n};\n", base, sizeof base);
    write_scratch_file(s->dir, "inc-good.cfg", "@include \"base/good.cfg\"\nmodel = { n_layer = 3; };\n", path, sizeof path);
    Config c;
    memset(&err, 0, sizeof err);
    assert_int_equal(config_load(path, NULL, 0, &c, &err), 0);
    assert_int_equal(c.steps, 50);
    assert_int_equal(c.n_layer, 3);

    write_scratch_file(s->dir, "base/unknown.cfg", "train = {\n  steps = 50;\n  lr_max = 0.1;\n};\n", base, sizeof base);
    write_scratch_file(s->dir, "inc-unknown.cfg", "model = { n_layer = 3; };\n@include \"base/unknown.cfg\"\n", path, sizeof path);
    snprintf(expected, sizeof expected, "%s:3: train.lr_max: unknown key", base);
    assert_string_equal(load_fails(path, &err), expected);

    write_scratch_file(s->dir, "base/range.cfg", "\ntrain = { lr = 2.5; };\n", base, sizeof base);
    write_scratch_file(s->dir, "inc-range.cfg", "@include \"base/range.cfg\"\n", path, sizeof path);
    snprintf(expected, sizeof expected, "%s:2: train.lr: 2.5 is out of range (0, 1]", base);
    assert_string_equal(load_fails(path, &err), expected);

    write_scratch_file(s->dir, "base/syntax.cfg", "train = {\n  steps = 10\n  lr = ;\n};\n", base, sizeof base);
    write_scratch_file(s->dir, "inc-syntax.cfg", "@include \"base/syntax.cfg\"\n", path, sizeof path);
    snprintf(expected, sizeof expected, "%s:3: syntax error", base);
    assert_string_equal(load_fails(path, &err), expected);

    // A missing include is reported at the @include line of the including file.
    write_scratch_file(s->dir, "inc-missing.cfg", "model = { n_layer = 3; };\n@include \"base/nowhere.cfg\"\n", path, sizeof path);
    snprintf(expected, sizeof expected, "%s:2: cannot open include file \"base/nowhere.cfg\" (%s/base/nowhere.cfg): No such file or directory",
             path, s->dir);
    assert_string_equal(load_fails(path, &err), expected);

    // A directory and "" (the include directory itself) are named with the line, not left to
    // libconfig's scanner ("input in flex scanner failed", no file), also from a nested include.
    write_scratch_file(s->dir, "inc-dir.cfg", "model = { n_layer = 3; };\n\n@include \"base\"\n", path, sizeof path);
    snprintf(expected, sizeof expected, "%s:3: cannot open include file \"base\" (%s/base): not a regular file (a directory)", path, s->dir);
    assert_string_equal(load_fails(path, &err), expected);
    write_scratch_file(s->dir, "inc-empty.cfg", "  @include \"\"\n", path, sizeof path);
    snprintf(expected, sizeof expected, "%s:1: cannot open include file \"\": an empty file name", path);
    assert_string_equal(load_fails(path, &err), expected);
    write_scratch_file(s->dir, "base/nested.cfg", "/* a comment */\n@include \"base\"\n", base, sizeof base);
    write_scratch_file(s->dir, "inc-nested.cfg", "@include \"base/nested.cfg\"\n", path, sizeof path);
    snprintf(expected, sizeof expected, "%s:2: cannot open include file \"base\" (%s/base): not a regular file (a directory)", base, s->dir);
    assert_string_equal(load_fails(path, &err), expected);
    // Commented out, it is not read.
    write_scratch_file(s->dir, "inc-commented.cfg", "/*\n@include \"base\"\n*/\n@include \"base/good.cfg\"\n", path, sizeof path);
    Config c2;
    memset(&err, 0, sizeof err);
    assert_int_equal(config_load(path, NULL, 0, &c2, &err), 0);
    assert_int_equal(c2.steps, 50);
}

// ---- cross-key checks: the message names the key and, where it was set, the file and line.

static void test_cross_key_checks(void **state) {
    const char *steps = "train = { steps = 1000; };\n";
    char text[512];

    snprintf(text, sizeof text, "%smodel = {\n  d_model = 64;\n  n_head = 5;\n};\n", steps);
    expect_file_error(*state, "heads.cfg", text, 4, "model.n_head: 5 does not divide model.d_model (64)");

    expect_file_error(*state, "both.cfg", "train = {\n  steps = 10;\n  tokens = 1e9;\n};\n", 2,
                      "train.steps: exactly one of train.steps and train.tokens must be > 0 (steps 10, tokens 1e+09)");

    expect_file_error(*state, "minlr.cfg", "train = {\n  steps = 1000;\n  lr = 1e-3;\n  min_lr = 2e-3;\n};\n", 4,
                      "train.min_lr: 0.002 is greater than train.lr (0.001)");

    snprintf(text, sizeof text, "%sdata = { logic = {\n  depth_min = 5;\n  depth_max = 3;\n}; };\n", steps);
    expect_file_error(*state, "depth.cfg", text, 3, "data.logic.depth_min: 5 is greater than data.logic.depth_max (3)");

    expect_file_error(*state, "batch.cfg", "train = {\n  steps = 1000;\n  batch_size = 12;\n  micro_batch_size = 8;\n};\n", 3,
                      "train.batch_size: 12 is not a multiple of train.micro_batch_size (8)");

    expect_file_error(*state, "warmup.cfg", "train = {\n  steps = 50;\n  warmup_steps = 50;\n};\n", 3,
                      "train.warmup_steps: 50 must be less than train.steps (50)");
}

// A key left at its default has no file and line: the message starts with the key.
static void test_cross_key_default_value(void **state) {
    const ScratchDir *s = *state;
    char path[256];
    Error err;
    write_scratch_file(s->dir, "empty.cfg", "// nothing chosen\n", path, sizeof path);
    assert_string_equal(load_fails(path, &err),
                        "train.steps: exactly one of train.steps and train.tokens must be > 0 (steps 0, tokens 0)");
    // warmup_steps (default 100) against a short run.
    write_scratch_file(s->dir, "short.cfg", "train = { steps = 20; };\n", path, sizeof path);
    assert_string_equal(load_fails(path, &err), "train.warmup_steps: 100 must be less than train.steps (20)");
}

// On error the caller's Config is left as it was.
static void test_error_leaves_config_untouched(void **state) {
    const ScratchDir *s = *state;
    char path[256];
    write_scratch_file(s->dir, "untouched.cfg", "train = { steps = 10; warmup_steps = 0; lr = 7; };\n", path, sizeof path);
    Config c, before;
    memset(&c, 0xab, sizeof c);
    memcpy(&before, &c, sizeof c);
    Error err;
    assert_int_equal(config_load(path, NULL, 0, &c, &err), -1);
    assert_memory_equal(&c, &before, sizeof c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unknown_key_in_group_suggests),
        cmocka_unit_test(test_unknown_keys_elsewhere),
        cmocka_unit_test(test_wrong_type),
        cmocka_unit_test(test_out_of_range),
        cmocka_unit_test(test_enum_violation),
        cmocka_unit_test(test_syntax_error_and_duplicates),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_include),
        cmocka_unit_test(test_cross_key_checks),
        cmocka_unit_test(test_cross_key_default_value),
        cmocka_unit_test(test_error_leaves_config_untouched),
    };
    return cmocka_run_group_tests(tests, setup, scratch_teardown);
}
