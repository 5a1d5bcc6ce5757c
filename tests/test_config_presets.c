// test_config_presets.c: the presets in configs/ load with their stated shapes, the defaults are the
// documented ones, and load -> write -> load gives back an identical Config.
// Runs from the repository root (configs/ is found relative to it).
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <glob.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fixtures.h"

// ---- fixture: a scratch directory for the config files a test writes

static int setup(void **state) { return scratch_setup(state, ScratchDir, "/tmp/entrank-config-XXXXXX"); }

static void load_ok(const char *path, const char *const *overrides, int n, Config *cfg) {
    Error err = {{0}};
    int rc = config_load(path, overrides, n, cfg, &err);
    if (rc != 0) fail_msg("config_load(%s) failed: %s", path, err.msg);
}

// load -> write to a file -> load again: the two Configs are byte-identical.
static void assert_round_trip(const ScratchDir *s, const Config *cfg, const char *name) {
    char path[256];
    char *text = config_to_string(cfg);
    write_scratch_file(s->dir, name, text, path, sizeof path);
    Config again;
    load_ok(path, NULL, 0, &again);
    if (memcmp(cfg, &again, sizeof again) != 0) fail_msg("round trip of %s changed the config:\n%s", name, text);
    free(text);
}

// ---- presets

static void test_tiny_preset(void **state) {
    (void)state;
    Config c;
    load_ok("configs/tiny.cfg", NULL, 0, &c);
    assert_int_equal(c.n_layer, 8);
    assert_int_equal(c.n_head, 4);
    assert_int_equal(c.d_model, 64);
    assert_int_equal(c.seq_len, 18);
    assert_int_equal(c.vocab_size, 64);
    assert_true(c.mlp_ratio == 4.0);
    assert_int_equal(c.batch_size, 128);
    assert_int_equal(c.micro_batch_size, 128);
    assert_int_equal(c.steps, 400);
    assert_true(c.weight_decay == 0.1);
    assert_true(c.tokens == 0.0);
    assert_true(c.lr == 3e-3);
    assert_true(c.min_lr == 3e-4);
    assert_int_equal(c.warmup_steps, 50);
    assert_string_equal(c.data_kind, "logic");
    assert_int_equal(c.logic_depth_min, 1);
    assert_int_equal(c.logic_depth_max, 2);
    assert_int_equal(c.logic_n_vars, 2);
    assert_int_equal(c.eval_every, 100);
    assert_int_equal(c.eval_batches, 2);
    assert_int_equal(c.log_every, 50);
    assert_string_equal(c.attention_kind, "sdpa");
}

static void test_sga_presets(void **state) {
    (void)state;
    const struct { const char *path; int d_model; } presets[] = {
        {"configs/gpt-48l-768.cfg", 768},
        {"configs/gpt-48l-1152.cfg", 1152},
    };
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        Config c;
        load_ok(presets[i].path, NULL, 0, &c);
        assert_int_equal(c.n_layer, 48);
        assert_int_equal(c.n_head, 12);
        assert_int_equal(c.d_model, presets[i].d_model);
        assert_int_equal(c.seq_len, 512);
        assert_int_equal(c.vocab_size, 32000);
        assert_int_equal(c.norm, NORM_POST);   // the post's plain SDPA baseline
        assert_int_equal(c.scaled_init, 0);
        // The recipe comes from base/sga-recipe.cfg through @include.
        assert_int_equal(c.batch_size, 256);
        assert_int_equal(c.steps, 100000);
        assert_true(c.tokens == 0.0);
        assert_true(c.warmup_steps > 0);
        assert_string_equal(c.data_kind, "llmc");
        assert_non_null(strstr(c.data_train, "train_*.bin"));
    }
}

static void test_r3si_presets(void **state) {
    (void)state;
    const struct { const char *path; int n_layer; } presets[] = {
        {"configs/gpt-32l-2048.cfg", 32},
        {"configs/gpt-24l-2048.cfg", 24},
    };
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        Config c;
        load_ok(presets[i].path, NULL, 0, &c);
        assert_int_equal(c.n_layer, presets[i].n_layer);
        assert_int_equal(c.n_head, 16);
        assert_int_equal(c.d_model, 2048);
        assert_int_equal(c.seq_len, 2048);
        assert_int_equal(c.vocab_size, 50304);
        assert_int_equal(c.norm, NORM_PRE);
        assert_true(c.lr == 3e-4);
        assert_int_equal(c.warmup_steps, 2000);
        assert_true(c.tokens == 100e9);
        assert_int_equal(c.steps, 0);
        assert_string_equal(c.data_kind, "llmc");
        assert_non_null(strstr(c.data_train, "train_*.bin"));
    }
}

// Every file in configs/ (not the included bases) loads and validates, and round-trips.
static void test_every_preset_loads_and_round_trips(void **state) {
    glob_t g;
    assert_int_equal(glob("configs/*.cfg", 0, NULL, &g), 0);
    assert_true(g.gl_pathc >= 5);
    for (size_t i = 0; i < g.gl_pathc; i++) {
        Config c;
        load_ok(g.gl_pathv[i], NULL, 0, &c);
        assert_round_trip(*state, &c, "preset-again.cfg");
    }
    globfree(&g);
}

// A top-level preset is named by what it is (issue 17: the 24-layer and the 48 x 1152 presets were plain
// baselines): a name with the word "sga" or "r3si" enables that method, a "gpt-" shape preset
// enables neither, and its name gives its layers and width (gpt-<layers>l-<d_model>.cfg).
static void test_preset_names_say_what_they_are(void **state) {
    (void)state;
    glob_t g;
    assert_int_equal(glob("configs/*.cfg", 0, NULL, &g), 0);
    int shapes = 0;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        Config c;
        load_ok(g.gl_pathv[i], NULL, 0, &c);
        char name[256];
        snprintf(name, sizeof name, "-%s", strrchr(g.gl_pathv[i], '/') + 1);
        *strrchr(name, '.') = '-';   // "-tiny-sga-cfg": each word between dashes
        int says_sga = strstr(name, "-sga-") != NULL, says_r3si = strstr(name, "-r3si-") != NULL;
        if (says_sga && strcmp(c.attention_kind, "sga")) fail_msg("%s: named sga, attention.kind is %s", g.gl_pathv[i], c.attention_kind);
        if (says_r3si && !c.r3si_enabled) fail_msg("%s: named r3si, r3si.enabled is false", g.gl_pathv[i]);
        int layers, width;
        if (sscanf(name, "-gpt-%dl-%d-", &layers, &width) == 2) {
            shapes++;
            if (c.r3si_enabled || strcmp(c.attention_kind, "sdpa")) fail_msg("%s: a plain GPT preset enables a method", g.gl_pathv[i]);
            assert_int_equal(c.n_layer, layers);
            assert_int_equal(c.d_model, width);
        }
    }
    globfree(&g);
    assert_int_equal(shapes, 4);   // the posts' two shapes each, stated and at the stated size
}

// ---- defaults

static void test_defaults(void **state) {
    (void)state;
    Config c;
    config_defaults(&c);
    assert_int_equal(c.n_layer, 12);
    assert_int_equal(c.n_head, 12);
    assert_int_equal(c.d_model, 768);
    assert_int_equal(c.seq_len, 1024);
    assert_int_equal(c.vocab_size, 50304);
    assert_true(c.mlp_ratio == 4.0);
    assert_int_equal(c.norm, NORM_PRE);
    assert_int_equal(c.tie_embeddings, 1);
    assert_true(c.init_std == 0.02);
    assert_int_equal(c.scaled_init, 1);
    assert_string_equal(c.attention_kind, "sdpa");
    assert_int_equal(c.steps, 0);
    assert_true(c.tokens == 0.0);
    assert_int_equal(c.batch_size, 8);
    assert_int_equal(c.micro_batch_size, 8);
    assert_int_equal(c.micro_batches, 0);
    assert_true(c.lr == 6e-4);
    assert_true(c.min_lr == 6e-5);
    assert_int_equal(c.warmup_steps, 100);
    assert_true(c.weight_decay == 0.1);
    assert_true(c.grad_clip == 1.0);
    assert_true(c.beta1 == 0.9);
    assert_true(c.beta2 == 0.95);
    assert_true(c.adam_eps == 1e-8);
    assert_true(c.seed == 1337);
    assert_string_equal(c.device, "auto");
    assert_int_equal(c.max_bad_steps, 5);
    assert_int_equal(c.log_every, 1);
    assert_string_equal(c.data_kind, "logic");
    assert_string_equal(c.data_train, "");
    assert_string_equal(c.data_val, "");
    assert_true(c.data_val_fraction == 0.05);
    assert_int_equal(c.logic_depth_min, 2);
    assert_int_equal(c.logic_depth_max, 6);
    assert_int_equal(c.logic_n_vars, 4);
    assert_int_equal(c.retrieval_n_distances, 4);
    assert_int_equal(c.retrieval_distances[0], 128);
    assert_int_equal(c.retrieval_distances[1], 256);
    assert_int_equal(c.retrieval_distances[2], 512);
    assert_int_equal(c.retrieval_distances[3], 1024);
    assert_int_equal(c.pp, 1);
    assert_int_equal(c.zero, 0);
    assert_int_equal(c.eval_every, 0);
    assert_int_equal(c.eval_batches, 4);
    assert_int_equal(c.trace_every, 50);   // on by default (issue 17)
    assert_int_equal(c.checkpoint_every, 0);
    assert_int_equal(c.checkpoint_keep, 2);
}

// A file that only chooses the run length gets every other key from the defaults.
static void test_minimal_file_gets_defaults(void **state) {
    const ScratchDir *s = *state;
    char path[256];
    write_scratch_file(s->dir, "minimal.cfg", "train = { steps = 1000; };\n", path, sizeof path);
    Config c, d;
    load_ok(path, NULL, 0, &c);
    config_defaults(&d);
    d.steps = 1000;
    assert_memory_equal(&c, &d, sizeof c);
}

// ---- numbers

// `lr = 1` (an integer) is a fine value for a float key; so is an integer token budget.
static void test_int_for_float_key(void **state) {
    const ScratchDir *s = *state;
    char path[256];
    write_scratch_file(s->dir, "intfloat.cfg",
               "train = {\n  steps = 0;\n  tokens = 1000000;\n  lr = 1;\n  min_lr = 0;\n  warmup_steps = 0;\n};\n"
               "model = { mlp_ratio = 4; init_std = 1; };\n",
               path, sizeof path);
    Config c;
    load_ok(path, NULL, 0, &c);
    assert_true(c.lr == 1.0);
    assert_true(c.min_lr == 0.0);
    assert_true(c.tokens == 1e6);
    assert_true(c.mlp_ratio == 4.0);
    assert_true(c.init_std == 1.0);
}

// ---- writing

// Awkward values survive the trip: a 64-bit seed, floats without a short decimal form, a token
// budget, strings with quotes and backslashes, a non-default enum, booleans, a short list.
static void test_round_trip_awkward_values(void **state) {
    const ScratchDir *s = *state;
    char path[256];
    write_scratch_file(s->dir, "awkward.cfg", "train = { steps = 0; tokens = 1.5e11; };\n", path, sizeof path);
    const char *sets[] = {
        "train.seed=9007199254740993",
        "train.lr=0.00012345678901234567",
        "train.min_lr=1e-300",
        "model.mlp_ratio=3",
        "model.init_std=0.1",
        "model.norm=post",
        "model.tie_embeddings=false",
        "data.kind=text",
        "data.train=dir with space/a\"b\\c_*.bin",
        "data.val=\"tab\\there\"",
        "data.retrieval.distances=[7, 3]",
    };
    Config c;
    load_ok(path, sets, (int)(sizeof sets / sizeof sets[0]), &c);
    assert_true(c.seed == 9007199254740993ULL);
    assert_true(c.lr == 0.00012345678901234567);
    assert_string_equal(c.data_train, "dir with space/a\"b\\c_*.bin");
    assert_string_equal(c.data_val, "tab\there");
    assert_round_trip(s, &c, "awkward-again.cfg");

    char *text = config_to_string(&c);
    assert_non_null(strstr(text, "seed = 9007199254740993L;"));   // 64-bit integers carry L
    assert_non_null(strstr(text, "mlp_ratio = 3.0;"));             // a float always looks like one
    assert_non_null(strstr(text, "tokens = 1.5e+11;"));
    free(text);
}

// config_write_text writes every key, grouped, and the same text as config_to_string.
static void test_write_every_key_grouped(void **state) {
    (void)state;
    Config c;
    load_ok("configs/tiny.cfg", NULL, 0, &c);
    char *text = config_to_string(&c);
    const char *expected[] = {
        "model = {", "n_layer = 8;", "norm = \"pre\";", "tie_embeddings = true;", "attention = {",
        "kind = \"sdpa\";", "train = {", "steps = 400;", "tokens = 0.0;", "lr = 0.003;", "seed = 1337;",
        "device = \"auto\";", "data = {", "kind = \"logic\";", "train = \"\";", "val_fraction = 0.05;",
        "logic = {", "depth_max = 2;", "retrieval = {", "distances = [128, 256, 512, 1024];",
        "parallel = {", "pp = 1;", "zero = 0;", "eval = {", "trace = {", "checkpoint = {", "keep = 2;",
    };
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        if (!strstr(text, expected[i])) fail_msg("config_write lacks \"%s\":\n%s", expected[i], text);
    }

    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    config_write_text(&c, f);
    fclose(f);
    assert_string_equal(buf, text);
    free(buf);
    free(text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_preset),
        cmocka_unit_test(test_sga_presets),
        cmocka_unit_test(test_r3si_presets),
        cmocka_unit_test(test_every_preset_loads_and_round_trips),
        cmocka_unit_test(test_preset_names_say_what_they_are),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_minimal_file_gets_defaults),
        cmocka_unit_test(test_int_for_float_key),
        cmocka_unit_test(test_round_trip_awkward_values),
        cmocka_unit_test(test_write_every_key_grouped),
    };
    return cmocka_run_group_tests(tests, setup, scratch_teardown);
}
