// test_data_logic.c: the synthetic logic task, checked by an independent parser and evaluator.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "data/data.h"
#include "data/data_hash.h"
#include "data_fixtures.h"
#include "data/task_logic.h"

#define TMAX 256

typedef struct {
    int32_t tokens[TMAX], targets[TMAX], buckets[TMAX];
} Seq;

static Config logic_config(int T, int dmin, int dmax, int n_vars) {
    Config c = data_config("logic", "", T, 64, 8, 2024);
    c.logic_depth_min = dmin;
    c.logic_depth_max = dmax;
    c.logic_n_vars = n_vars;
    return c;
}

// ---- independent decoder: expr := VAR | NOT expr | ( expr OP expr ) ----
typedef struct {
    const int32_t *tok;
    int pos, end, n_vars;
    int vals[LOGIC_MAX_VARS];
} Parser;

static int parse_expr(Parser *p, int *value, int *height) {
    if (p->pos >= p->end) return -1;
    int t = p->tok[p->pos++];
    if (t >= LOGIC_VAR0 && t < LOGIC_VAR0 + p->n_vars) { *value = p->vals[t - LOGIC_VAR0]; *height = 0; return 0; }
    if (t == LOGIC_NOT) {
        if (parse_expr(p, value, height)) return -1;
        *value = !*value;
        *height += 1;
        return 0;
    }
    if (t != LOGIC_LPAREN) return -1;
    int a, ha, b, hb;
    if (parse_expr(p, &a, &ha) || p->pos >= p->end) return -1;
    int op = p->tok[p->pos++];
    if (parse_expr(p, &b, &hb) || p->pos >= p->end || p->tok[p->pos++] != LOGIC_RPAREN) return -1;
    if (op == LOGIC_AND) *value = a && b;
    else if (op == LOGIC_OR) *value = a || b;
    else if (op == LOGIC_XOR) *value = a != b;
    else return -1;
    *height = 1 + (ha > hb ? ha : hb);
    return 0;
}

typedef struct {
    uint64_t hash[8192];   // FNV-1a of each example's tokens (independent of the library's hash)
    int n;
    int depth_count[32];
    int ones, answers;
    int ones_by_depth[32];
} Stats;

static uint64_t fnv1a(const int32_t *t, int n) {
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < n; i++) { h ^= (uint64_t)(uint32_t)t[i]; h *= 1099511628211ULL; }
    return h;
}

// Decodes a whole sequence, checking every example against the independent evaluator.
static void check_sequence(const Seq *s, const Config *c, DataSplit split, Stats *st) {
    int T = c->seq_len, p = 0, examples = 0;
    while (p < T && s->tokens[p] != LOGIC_PAD) {
        Parser ps = { .tok = s->tokens, .pos = p, .end = T, .n_vars = c->logic_n_vars };
        for (int i = 0; i < c->logic_n_vars; i++) {
            assert_int_equal(s->tokens[ps.pos++], LOGIC_VAR0 + i);
            assert_int_equal(s->tokens[ps.pos++], LOGIC_EQ);
            int b = s->tokens[ps.pos++];
            assert_true(b == LOGIC_TRUE || b == LOGIC_FALSE);
            ps.vals[i] = b == LOGIC_TRUE;
        }
        assert_int_equal(s->tokens[ps.pos++], LOGIC_SEMI);
        int value, height;
        if (parse_expr(&ps, &value, &height)) fail_msg("unparsable expression at position %d", p);
        int q = ps.pos;
        assert_true(q + 1 < T);
        assert_int_equal(s->tokens[q], LOGIC_QUERY);
        int want = value ? LOGIC_TRUE : LOGIC_FALSE;
        assert_int_equal(s->tokens[q + 1], want);
        assert_int_equal(s->targets[q], want);
        assert_in_range(height, c->logic_depth_min, c->logic_depth_max);
        assert_int_equal(s->buckets[q], height - c->logic_depth_min);
        for (int t = p; t <= q + 1; t++)
            if (t != q) { assert_int_equal(s->targets[t], -1); assert_int_equal(s->buckets[t], -1); }
        // The split rule: content hash 0 mod 8 is validation.
        int is_val = data_hash_tokens(s->tokens + p, q + 2 - p) % 8 == 0;
        assert_int_equal(is_val, split == SPLIT_VAL);
        if (st) {
            if (st->n < 8192) st->hash[st->n++] = fnv1a(s->tokens + p, q + 2 - p);
            st->depth_count[height]++;
            st->answers++;
            st->ones += value;
            st->ones_by_depth[height] += value;
        }
        examples++;
        p = q + 2;
    }
    assert_true(examples >= 1);
    for (int t = p; t < T; t++) {
        assert_int_equal(s->tokens[t], LOGIC_PAD);
        assert_int_equal(s->targets[t], -1);
        assert_int_equal(s->buckets[t], -1);
    }
}

static void test_targets_match_evaluation(void **state) {
    (void)state;
    Config c = logic_config(256, 2, 6, 4);
    Error err = { "" };
    DataSource *src = open_ok(&c, SPLIT_TRAIN);
    assert_int_equal(data_vocab_needed(src), LOGIC_VAR0 + 4);
    assert_int_equal(data_n_buckets(src), 5);
    assert_string_equal(data_bucket_label(src, 0), "depth 2");
    assert_string_equal(data_bucket_label(src, 4), "depth 6");
    assert_null(data_bucket_label(src, 5));
    assert_int_equal(data_n_sequences(src), INT32_MAX);
    static Seq s;
    static Stats st;
    memset(&st, 0, sizeof st);
    for (uint64_t step = 0; step < 50; step++)
        for (int i = 0; i < 8; i++) {
            assert_int_equal(data_get_sequence(src, step, i, SEQ_BUFS(&s), &err), 0);
            check_sequence(&s, &c, SPLIT_TRAIN, &st);
        }
    assert_true(st.answers > 1000);
    // Depth uniform in [2, 6]: every depth present, none below half its share.
    for (int d = 2; d <= 6; d++) {
        assert_true(st.depth_count[d] > st.answers / 5 / 2);
        double ones = (double)st.ones_by_depth[d] / st.depth_count[d];
        assert_true(ones > 0.35 && ones < 0.65);
    }
    double ones = (double)st.ones / st.answers;
    assert_true(ones > 0.35 && ones < 0.65);
    data_close(src);
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int count_distinct(uint64_t *h, int n) {
    qsort(h, (size_t)n, sizeof *h, cmp_u64);
    int d = n > 0;
    for (int i = 1; i < n; i++) d += h[i] != h[i - 1];
    return d;
}

static void test_train_val_disjoint(void **state) {
    (void)state;
    // A small space (3 variables, depth 1-2): without the split rule the two sets would overlap.
    Config c = logic_config(128, 1, 2, 3);
    Error err = { "" };
    DataSource *tr = open_ok(&c, SPLIT_TRAIN), *va = open_ok(&c, SPLIT_VAL);
    static Seq s;
    static Stats a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    for (uint64_t step = 0; a.n < 3000 || b.n < 3000; step++)
        for (int i = 0; i < 8; i++) {
            assert_int_equal(data_get_sequence(tr, step, i, SEQ_BUFS(&s), &err), 0);
            check_sequence(&s, &c, SPLIT_TRAIN, &a);
            assert_int_equal(data_get_sequence(va, step, i, SEQ_BUFS(&s), &err), 0);
            check_sequence(&s, &c, SPLIT_VAL, &b);
        }
    int da = count_distinct(a.hash, a.n), db = count_distinct(b.hash, b.n);
    assert_true(da > 300 && db > 50);       // both splits are varied
    assert_true(da < a.n);                    // and the space is small enough to repeat itself
    for (int i = 0, j = 0; i < a.n && j < b.n;) {
        if (a.hash[i] == b.hash[j]) fail_msg("example in both train and val");
        if (a.hash[i] < b.hash[j]) i++; else j++;
    }
    data_close(tr);
    data_close(va);
}

static void test_deterministic_any_order(void **state) {
    (void)state;
    Config c = logic_config(200, 2, 5, 5);
    Error err = { "" };
    DataSource *src = open_ok(&c, SPLIT_VAL);
    static Seq first[16], s;
    for (int k = 0; k < 16; k++) assert_int_equal(data_get_sequence(src, (uint64_t)(k / 4), k % 4, SEQ_BUFS(&first[k]), &err), 0);
    for (int k = 15; k >= 0; k--) {
        assert_int_equal(data_get_sequence(src, (uint64_t)(k / 4), k % 4, SEQ_BUFS(&s), &err), 0);
        assert_memory_equal(s.tokens, first[k].tokens, 200 * sizeof(int32_t));
        assert_memory_equal(s.targets, first[k].targets, 200 * sizeof(int32_t));
        assert_memory_equal(s.buckets, first[k].buckets, 200 * sizeof(int32_t));
    }
    for (int k = 1; k < 16; k++) assert_memory_not_equal(first[k].tokens, first[k - 1].tokens, 200 * sizeof(int32_t));
    data_close(src);
}

static void test_config_errors(void **state) {
    (void)state;
    Config c = logic_config(32, 2, 6, 4);   // depth 6 needs up to 13 + 49 + 2 = 64 tokens
    expect_open_error(&c, SPLIT_TRAIN, "model.seq_len 32", "data.logic.depth_max", NULL);
    c = logic_config(64, 2, 6, 4);          // exactly fits
    data_close(open_ok(&c, SPLIT_TRAIN));
    c = logic_config(256, 2, 6, 4);
    c.vocab_size = 10;
    expect_open_error(&c, SPLIT_TRAIN, "model.vocab_size", NULL);
    c = logic_config(256, 2, 6, 0);
    expect_open_error(&c, SPLIT_TRAIN, "data.logic.n_vars", NULL);
    c = logic_config(256, 4, 3, 4);
    expect_open_error(&c, SPLIT_TRAIN, "data.logic.depth_max", NULL);
    c = logic_config(256, 0, 3, 4);
    expect_open_error(&c, SPLIT_TRAIN, "data.logic.depth_min", NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_targets_match_evaluation),
        cmocka_unit_test(test_train_val_disjoint),
        cmocka_unit_test(test_deterministic_any_order),
        cmocka_unit_test(test_config_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
