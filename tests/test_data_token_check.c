// test_data_token_check.c: data_check_tokens, the start-up pass over every token id of a file
// source (validate_run): every dtype, block edges, the first of several bad ids, the slices ranks
// share, and the message data_get_sequence gives for the same token.
#define _FILE_OFFSET_BITS 64
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "data/data.h"

#define T 16
#define BLOCK 65536   // data_windows.c's SCAN_BLOCK: bad ids around its edges

typedef struct {
    char dir[64];
    char path[128];
} Fixture;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

static int setup(void **state) {
    Fixture *f = calloc(1, sizeof *f);
    strcpy(f->dir, "/tmp/entrank-test-tokcheck.XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    *state = f;
    return 0;
}

static int teardown(void **state) {
    Fixture *f = *state;
    nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static void putle(unsigned char *p, uint64_t v, int n) { for (int i = 0; i < n; i++) p[i] = (unsigned char)(v >> (8 * i)); }

static void write_file(const char *path, const unsigned char *buf, size_t n) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(buf, 1, n, fp), n);
    fclose(fp);
}

// An llm.c shard: int32[256] header (magic, version 1, count), then uint16 tokens.
static void write_llmc(const char *path, const uint16_t *tok, int64_t n) {
    size_t size = 1024 + 2 * (size_t)n;
    unsigned char *buf = calloc(size, 1);
    putle(buf, 20240520, 4);
    putle(buf + 4, 1, 4);
    putle(buf + 8, (uint64_t)n, 4);
    for (int64_t i = 0; i < n; i++) putle(buf + 1024 + 2 * i, tok[i], 2);
    write_file(path, buf, size);
    free(buf);
}

// PREFIX.idx / PREFIX.bin with one sequence of n tokens of the given Megatron dtype code.
static void write_megatron(const char *prefix, int dtype, int itemsize, const int64_t *tok, int n) {
    char path[256];
    unsigned char *bin = calloc((size_t)n * itemsize, 1);
    for (int i = 0; i < n; i++) putle(bin + (size_t)i * itemsize, (uint64_t)tok[i], itemsize);
    snprintf(path, sizeof path, "%s.bin", prefix);
    write_file(path, bin, (size_t)n * itemsize);
    free(bin);
    unsigned char idx[34 + 4 + 8 + 16] = { 0 };
    memcpy(idx, "MMIDIDX\0\0", 9);
    putle(idx + 9, 1, 8);
    idx[17] = (unsigned char)dtype;
    putle(idx + 18, 1, 8);          // one sequence
    putle(idx + 26, 2, 8);          // doc_idx [0, 1]
    putle(idx + 34, (uint64_t)n, 4);
    putle(idx + 38, 0, 8);          // its pointer
    putle(idx + 46, 0, 8);
    putle(idx + 54, 1, 8);
    snprintf(path, sizeof path, "%s.idx", prefix);
    write_file(path, idx, sizeof idx);
}

static Config base_config(const char *kind, const char *train, int vocab) {
    Config c;
    memset(&c, 0, sizeof c);
    snprintf(c.data_kind, sizeof c.data_kind, "%s", kind);
    snprintf(c.data_train, sizeof c.data_train, "%s", train);
    c.seq_len = T;
    c.vocab_size = vocab;
    c.batch_size = 4;
    c.data_val_fraction = 0.1;
    c.seed = 5;
    return c;
}

// data_check_tokens of one split, whole; returns its result with err filled.
static int check_split(const Config *c, DataSplit split, Error *err) {
    DataSource *src = data_open(c, split, err);
    if (!src) fail_msg("data_open: %s", err->msg);
    int rc = data_check_tokens(src, 0, 1, err);
    data_close(src);
    return rc;
}

static uint16_t *good_tokens(int64_t n, int vocab) {
    uint16_t *tok = malloc((size_t)n * sizeof *tok);
    for (int64_t i = 0; i < n; i++) tok[i] = (uint16_t)((i * 2654435761u) % (uint32_t)vocab);
    return tok;
}

// One bad id at each edge of the vectorised blocks, in the train part or the held-out part; the
// other split passes, and the window that holds the token reports it in the same words.
static void test_llmc_bad_id_at_block_edges(void **state) {
    Fixture *f = *state;
    const int vocab = 1000;
    const int64_t n = 3 * BLOCK + 17;
    const int64_t cut = n - (int64_t)((double)n * 0.1);
    const int64_t where[] = { 0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK + 5, cut - 1, cut, cut + 5000, n - 1 };
    snprintf(f->path, sizeof f->path, "%s/shard.bin", f->dir);
    for (size_t w = 0; w < sizeof where / sizeof where[0]; w++) {
        uint16_t *tok = good_tokens(n, vocab);
        int64_t at = where[w];
        tok[at] = 65535;
        write_llmc(f->path, tok, n);
        free(tok);
        Config c = base_config("llmc", f->path, vocab);
        DataSplit bad = at < cut ? SPLIT_TRAIN : SPLIT_VAL;
        Error err = { "" };
        char want[512];
        snprintf(want, sizeof want, "%s: byte offset %lld: token id 65535 >= model.vocab_size %d", f->path, (long long)(1024 + 2 * at), vocab);
        assert_int_equal(check_split(&c, bad, &err), -1);
        assert_string_equal(err.msg, want);
        assert_int_equal(check_split(&c, bad == SPLIT_TRAIN ? SPLIT_VAL : SPLIT_TRAIN, &err), 0);
    }
}

// Of several bad ids the first is reported, within a block and across blocks and shards.
static void test_first_bad_id_is_reported(void **state) {
    Fixture *f = *state;
    const int vocab = 500;
    const int64_t n = 2 * BLOCK;
    char a[256], b[256], glob[256];
    snprintf(a, sizeof a, "%s/s_000.bin", f->dir);
    snprintf(b, sizeof b, "%s/s_001.bin", f->dir);
    snprintf(glob, sizeof glob, "%s/s_*.bin", f->dir);
    uint16_t *tok = good_tokens(n, vocab);
    write_llmc(a, tok, n);
    tok[BLOCK + 9] = 700;
    tok[BLOCK + 3] = 600;
    tok[BLOCK + 100] = 500;
    write_llmc(b, tok, n);
    free(tok);
    Config c = base_config("llmc", glob, vocab);
    c.data_val_fraction = 0.01;
    Error err = { "" };
    char want[512];
    snprintf(want, sizeof want, "%s: byte offset %d: token id 600 >= model.vocab_size 500", b, 1024 + 2 * (BLOCK + 3));
    assert_int_equal(check_split(&c, SPLIT_TRAIN, &err), -1);
    assert_string_equal(err.msg, want);
}

// Slices: the split is cut into n_parts; only the slice holding the bad id reports it, every
// slice of a clean file passes, and the slices cover every token (the bad id is found whatever
// the number of parts, wherever it sits).
static void test_slices_cover_the_split_once(void **state) {
    Fixture *f = *state;
    const int vocab = 300;
    const int64_t n = 100003;
    const int64_t cut = n - (int64_t)((double)n * 0.1);
    snprintf(f->path, sizeof f->path, "%s/slices.bin", f->dir);
    const int64_t where[] = { 0, 12345, 44999, 45000, cut - 1 };
    for (size_t w = 0; w < sizeof where / sizeof where[0]; w++) {
        uint16_t *tok = good_tokens(n, vocab);
        tok[where[w]] = (uint16_t)vocab;
        write_llmc(f->path, tok, n);
        free(tok);
        Config c = base_config("llmc", f->path, vocab);
        Error err = { "" };
        DataSource *src = data_open(&c, SPLIT_TRAIN, &err);
        assert_non_null(src);
        for (int parts = 1; parts <= 8; parts++) {
            int failing = 0;
            for (int p = 0; p < parts; p++) {
                if (data_check_tokens(src, p, parts, &err) == 0) continue;
                failing++;
                char want[64];
                snprintf(want, sizeof want, "byte offset %lld:", (long long)(1024 + 2 * where[w]));
                assert_non_null(strstr(err.msg, want));
                // Slice p of `parts` near-equal slices of the cut tokens holds the bad one.
                int64_t q = cut / parts, r = cut % parts, lo = p * q + (p < r ? p : r), hi = lo + q + (p < r);
                assert_true(where[w] >= lo && where[w] < hi);
            }
            assert_int_equal(failing, 1);
        }
        assert_int_equal(data_check_tokens(src, 2, 2, &err), -1);   // part out of range
        assert_int_equal(data_check_tokens(src, 0, 0, &err), -1);
        data_close(src);
    }
}

// Every Megatron dtype through its own kernel: negative ids of the signed ones, ids over the
// vocabulary of all, and the message data_get_sequence gives for the same token.
static void test_megatron_dtypes(void **state) {
    Fixture *f = *state;
    struct { int code, itemsize; int64_t bad; const char *what; } cases[] = {
        { 1, 1, 200, "token id 200 >= model.vocab_size 100" },
        { 2, 1, -3, "negative token id -3" },
        { 3, 2, -5, "negative token id -5" },
        { 3, 2, 30000, "token id 30000 >= model.vocab_size 100" },
        { 4, 4, -70000, "negative token id -70000" },
        { 4, 4, 100, "token id 100 >= model.vocab_size 100" },
        { 5, 8, -1, "negative token id -1" },
        { 5, 8, 5000000000LL, "token id 5000000000 >= model.vocab_size 100" },
        { 8, 2, 65535, "token id 65535 >= model.vocab_size 100" },
    };
    const int n = 2 * BLOCK + 40, at = BLOCK + 7;   // in the train part (the first 90%)
    char prefix[256], bin[300];
    snprintf(prefix, sizeof prefix, "%s/corpus", f->dir);
    snprintf(bin, sizeof bin, "%s.bin", prefix);
    int64_t *tok = malloc((size_t)n * sizeof *tok);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        for (int i = 0; i < n; i++) tok[i] = i % 100;
        write_megatron(prefix, cases[k].code, cases[k].itemsize, tok, n);
        Config c = base_config("megatron", prefix, 100);
        Error err = { "" };
        assert_int_equal(check_split(&c, SPLIT_TRAIN, &err), 0);
        assert_int_equal(check_split(&c, SPLIT_VAL, &err), 0);
        tok[at] = cases[k].bad;
        write_megatron(prefix, cases[k].code, cases[k].itemsize, tok, n);
        char want[512];
        snprintf(want, sizeof want, "%s: byte offset %d: %s", bin, at * cases[k].itemsize, cases[k].what);
        assert_int_equal(check_split(&c, SPLIT_TRAIN, &err), -1);
        assert_string_equal(err.msg, want);
    }
    free(tok);
}

// Files whose dtype cannot exceed the vocabulary are not read at all; below it they are.
static void test_types_that_always_fit(void **state) {
    Fixture *f = *state;
    const int64_t n = 1000;
    uint16_t *tok = good_tokens(n, 1000);
    tok[500] = 65535;
    snprintf(f->path, sizeof f->path, "%s/full.bin", f->dir);
    write_llmc(f->path, tok, n);
    free(tok);
    Config c = base_config("llmc", f->path, 65536);
    Error err = { "" };
    assert_int_equal(check_split(&c, SPLIT_TRAIN, &err), 0);
    c.vocab_size = 65535;
    assert_int_equal(check_split(&c, SPLIT_TRAIN, &err), -1);

    // Text: bytes under a vocabulary of 256 always fit; under 128 the first high byte is found.
    char text[256];
    snprintf(text, sizeof text, "%s/t.txt", f->dir);
    const char *s = "Gr\xc3\xbc\xc3\x9f Gott, this is a little text that is long enough for windows of 16 bytes.\n";
    write_file(text, (const unsigned char *)s, strlen(s));
    c = base_config("text", text, 256);
    assert_int_equal(check_split(&c, SPLIT_TRAIN, &err), 0);
    c.vocab_size = 128;
    assert_int_equal(check_split(&c, SPLIT_TRAIN, &err), -1);
    char want[512];
    snprintf(want, sizeof want, "%s: byte offset 2: token id 195 >= model.vocab_size 128", text);
    assert_string_equal(err.msg, want);
}

// Synthetic tasks have no file: nothing to check.
static void test_tasks_pass(void **state) {
    (void)state;
    Config c = base_config("logic", "", 64);
    c.seq_len = 32;
    c.logic_depth_min = 1;
    c.logic_depth_max = 2;
    c.logic_n_vars = 2;
    Error err = { "" };
    assert_int_equal(check_split(&c, SPLIT_TRAIN, &err), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_llmc_bad_id_at_block_edges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_first_bad_id_is_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slices_cover_the_split_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_megatron_dtypes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_types_that_always_fit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tasks_pass, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
