// task_retrieval.c: generator of the `retrieval` task (format in task_retrieval.h).
//
// Keys are unique within a sequence, so the answer is determined: there are at most (T - 1) / 2
// pairs, hence n_keys = max(32, T / 2) key tokens. Values are drawn from 32 tokens independently.
// Split: a sequence is VAL iff data_hash_tokens(sequence) % 8 == 0; it is redrawn until it belongs
// to the requested split, so TRAIN and VAL share no sequence.
#include "task_retrieval.h"
#include <string.h>

#define RETR_MAX_TRIES 4096

int retrieval_init(RetrievalTask *task, const Config *cfg, Error *err) {
    memset(task, 0, sizeof *task);
    task->T = cfg->seq_len;
    task->n_keys = task->T / 2 > 32 ? task->T / 2 : 32;
    if (cfg->retrieval_n_distances < 1 || cfg->retrieval_n_distances > CFG_MAX_LIST)
        return error_set(err, "data.retrieval.distances: needs 1 to %d distances, got %d", CFG_MAX_LIST, cfg->retrieval_n_distances);
    for (int i = 0; i < cfg->retrieval_n_distances; i++) {
        int d = cfg->retrieval_distances[i];
        if (d < 2) return error_set(err, "data.retrieval.distances: %d must be >= 2 (a pair is two tokens)", d);
        for (int j = 0; j < i; j++)
            if (cfg->retrieval_distances[j] == d) return error_set(err, "data.retrieval.distances: %d appears twice", d);
        if (d <= task->T - 3) task->distances[task->n_distances++] = d;
    }
    if (task->n_distances == 0)
        return error_set(err, "data.retrieval.distances: none fits in model.seq_len %d (a distance d needs d + 3 <= model.seq_len)", task->T);
    return 0;
}

// Fills tokens[a, b) with pairs of fresh keys (keys[*k...]) and random values; odd length: PAD first.
static void fill_pairs(int32_t *tokens, int a, int b, const int *keys, int *k, int value0, DataRng *rng) {
    if ((b - a) % 2) tokens[a++] = RETR_PAD;
    for (int t = a; t < b; t += 2) {
        tokens[t] = RETR_KEY0 + keys[(*k)++];
        tokens[t + 1] = value0 + (int)data_rng_below(rng, RETR_N_VALUES);
    }
}

int retrieval_fill(const RetrievalTask *task, uint64_t seed, DataSplit split, uint64_t step, int index,
                   SequenceBuffers out, Error *err) {
    int T = task->T, q = T - 3, value0 = retrieval_value0(task);
    DataRng rng = data_rng(data_hash4(seed, (uint64_t)split, step, (uint64_t)(int64_t)index));
    int bucket = (int)data_rng_below(&rng, (uint64_t)task->n_distances);
    int p = q - task->distances[bucket];
    int n_pairs = T / 2;   // upper bound on the pairs one sequence uses
    int *keys = xmalloc((size_t)task->n_keys * sizeof *keys);
    for (int i = 0; i < task->n_keys; i++) keys[i] = i;
    int tries;
    for (tries = 0; tries < RETR_MAX_TRIES; tries++) {
        // Partial Fisher-Yates: keys[0, n_pairs) become a uniform draw of distinct keys.
        for (int i = 0; i < n_pairs && i < task->n_keys - 1; i++) {
            int j = i + (int)data_rng_below(&rng, (uint64_t)(task->n_keys - i));
            int tmp = keys[i]; keys[i] = keys[j]; keys[j] = tmp;
        }
        int k = 0;
        fill_pairs(out.tokens, 0, p, keys, &k, value0, &rng);
        int32_t key = RETR_KEY0 + keys[k++], value = value0 + (int)data_rng_below(&rng, RETR_N_VALUES);
        out.tokens[p] = key;
        out.tokens[p + 1] = value;
        fill_pairs(out.tokens, p + 2, q, keys, &k, value0, &rng);
        out.tokens[q] = RETR_QUERY;
        out.tokens[q + 1] = key;
        out.tokens[q + 2] = value;
        if (data_content_is_val(data_hash_tokens(out.tokens, T)) == (split == SPLIT_VAL)) break;
    }
    free(keys);
    if (tries == RETR_MAX_TRIES)
        return error_set(err, "data.retrieval: no %s sequence after %d tries", split == SPLIT_VAL ? "validation" : "training", RETR_MAX_TRIES);
    for (int t = 0; t < T; t++) {
        out.targets[t] = -1;
        out.buckets[t] = -1;
    }
    out.targets[q + 1] = out.tokens[q + 2];
    out.buckets[q + 1] = bucket;
    return 0;
}
