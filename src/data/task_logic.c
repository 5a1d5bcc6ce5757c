// task_logic.c: generator of the `logic` task (format in task_logic.h).
//
// Shape of the trees: an operator node of height h has one child of height exactly h - 1 (the
// "spine", so the height is exact) and, for binary operators, a side child of height drawn in
// [0, (h - 1) / 2]. Capping the side subtree keeps the length polynomial in the depth (49 tokens
// at depth 6) instead of 2^depth, so several examples fit in a few hundred positions.
//
// Balance: the answer bit is drawn first and examples are resampled until they evaluate to it,
// so answers are 50/50 at every depth (an expression like (a OR b) alone would be 75% ones).
// Split: an example is VAL iff data_hash_tokens(example) % 8 == 0; the generator resamples until
// the example belongs to the requested split, so TRAIN and VAL share no example.
#include "task_logic.h"
#include <string.h>
#include <stdlib.h>

// After this many rejected drafts the configuration has (almost) no example of the wanted kind.
#define LOGIC_MAX_TRIES (1 << 16)

int logic_max_example_len(int n_vars, int depth) {
    int L[LOGIC_MAX_DEPTH + 1];
    L[0] = 1;
    for (int h = 1; h <= depth; h++) {
        int unary = 1 + L[h - 1], binary = 3 + L[h - 1] + L[(h - 1) / 2];
        L[h] = unary > binary ? unary : binary;
    }
    return 3 * n_vars + 1 + L[depth] + 2;   // "v = b" each, ";", expression, "?", answer
}

int logic_init(LogicTask *task, const Config *cfg, Error *err) {
    memset(task, 0, sizeof *task);
    task->depth_min = cfg->logic_depth_min;
    task->depth_max = cfg->logic_depth_max;
    task->n_vars = cfg->logic_n_vars;
    task->T = cfg->seq_len;
    if (task->n_vars < 1 || task->n_vars > LOGIC_MAX_VARS)
        return error_set(err, "data.logic.n_vars: %d must be in [1, %d]", task->n_vars, LOGIC_MAX_VARS);
    if (task->depth_min < 1 || task->depth_min > LOGIC_MAX_DEPTH)
        return error_set(err, "data.logic.depth_min: %d must be in [1, %d]", task->depth_min, LOGIC_MAX_DEPTH);
    if (task->depth_max < task->depth_min || task->depth_max > LOGIC_MAX_DEPTH)
        return error_set(err, "data.logic.depth_max: %d must be in [data.logic.depth_min = %d, %d]", task->depth_max, task->depth_min, LOGIC_MAX_DEPTH);
    if (task->depth_max - task->depth_min + 1 > DATA_MAX_BUCKETS)
        return error_set(err, "data.logic.depth_max: %d - data.logic.depth_min %d + 1 is more than %d accuracy buckets",
                         task->depth_max, task->depth_min, DATA_MAX_BUCKETS);
    task->max_example_len = logic_max_example_len(task->n_vars, task->depth_max);
    if (task->max_example_len > task->T)
        return error_set(err, "data.logic.depth_max: depth %d with data.logic.n_vars %d makes examples of up to %d tokens, more than model.seq_len %d",
                         task->depth_max, task->n_vars, task->max_example_len, task->T);
    return 0;
}

// Appends a random expression of height exactly h to tok[*n...]; returns its value.
static int gen_expr(DataRng *rng, int h, const int *vals, int n_vars, int32_t *tok, int *n) {
    if (h == 0) {
        int v = (int)data_rng_below(rng, (uint64_t)n_vars);
        tok[(*n)++] = LOGIC_VAR0 + v;
        return vals[v];
    }
    int op = (int)data_rng_below(rng, 4);
    if (op == 0) {
        tok[(*n)++] = LOGIC_NOT;
        return !gen_expr(rng, h - 1, vals, n_vars, tok, n);
    }
    int spine_left = (int)data_rng_below(rng, 2);
    int side = (int)data_rng_below(rng, (uint64_t)((h - 1) / 2 + 1));
    tok[(*n)++] = LOGIC_LPAREN;
    int a = gen_expr(rng, spine_left ? h - 1 : side, vals, n_vars, tok, n);
    tok[(*n)++] = op == 1 ? LOGIC_AND : op == 2 ? LOGIC_OR : LOGIC_XOR;
    int b = gen_expr(rng, spine_left ? side : h - 1, vals, n_vars, tok, n);
    tok[(*n)++] = LOGIC_RPAREN;
    return op == 1 ? (a & b) : op == 2 ? (a | b) : (a ^ b);
}

// One example of the requested split into tok (capacity task->max_example_len); returns its length.
static int gen_example(const LogicTask *task, DataRng *rng, DataSplit split, int32_t *tok, int *depth, int *vals, Error *err) {
    *depth = task->depth_min + (int)data_rng_below(rng, (uint64_t)(task->depth_max - task->depth_min + 1));
    int want = (int)(data_rng_next(rng) & 1);
    for (int tries = 0; tries < LOGIC_MAX_TRIES; tries++) {
        uint64_t bits = data_rng_next(rng);
        int n = 0;
        for (int i = 0; i < task->n_vars; i++) {
            vals[i] = (int)((bits >> i) & 1);
            tok[n++] = LOGIC_VAR0 + i;
            tok[n++] = LOGIC_EQ;
            tok[n++] = vals[i] ? LOGIC_TRUE : LOGIC_FALSE;
        }
        tok[n++] = LOGIC_SEMI;
        int v = gen_expr(rng, *depth, vals, task->n_vars, tok, &n);
        tok[n++] = LOGIC_QUERY;
        tok[n++] = v ? LOGIC_TRUE : LOGIC_FALSE;
        if (v != want) continue;
        if (data_content_is_val(data_hash_tokens(tok, n)) != (split == SPLIT_VAL)) continue;
        return n;
    }
    return error_set(err, "data.logic: no %s example with answer %d at depth %d after %d tries: too few distinct examples (raise data.logic.n_vars)",
                     split == SPLIT_VAL ? "validation" : "training", want, *depth, LOGIC_MAX_TRIES);
}

int logic_fill(const LogicTask *task, uint64_t seed, DataSplit split, uint64_t step, int index,
               SequenceBuffers out, Error *err) {
    int T = task->T;
    for (int t = 0; t < T; t++) {
        out.tokens[t] = LOGIC_PAD;
        out.targets[t] = -1;
        out.buckets[t] = -1;
    }
    DataRng rng = data_rng(data_hash4(seed, (uint64_t)split, step, (uint64_t)(int64_t)index));
    int32_t *ex = xmalloc((size_t)task->max_example_len * sizeof *ex);
    int p = 0;
    int vals[LOGIC_MAX_VARS];
    for (;;) {
        int depth;
        int n = gen_example(task, &rng, split, ex, &depth, vals, err);
        if (n < 0) { free(ex); return -1; }
        if (p + n > T) break;   // max_example_len <= T, so the first example always fits
        memcpy(out.tokens + p, ex, (size_t)n * sizeof *ex);
        out.targets[p + n - 2] = ex[n - 1];          // the "?" predicts the answer
        out.buckets[p + n - 2] = depth - task->depth_min;
        p += n;
    }
    free(ex);
    return 0;
}
