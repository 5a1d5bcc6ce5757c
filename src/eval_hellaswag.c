// eval_hellaswag.c: scoring multiple-choice items with the evaluation forward pass.
//
// Each (item, ending) is one sequence: context ++ ending, cut from the left to seq_len + 1 tokens
// (inputs are all but the last token, targets all but the first); only positions whose target is
// an ending token carry a loss. The model's per-position losses (-log p of the target) are summed
// per sequence on the host. The forward pass is the one evaluation and generation use, so every
// attention variant and block hook scores as it trains, on the CPU and CUDA backends alike.
#include "eval_hellaswag.h"
#include <math.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>
#include "inference_stage.h"

// Fills the tokens and targets (B, T) of the sequences of items [first, first + n).
static void fill_batch(const McItems *it, int first, int n, int T, int32_t *tokens, int32_t *targets) {
    int E = it->n_endings, B = n * E;
    for (size_t k = 0; k < (size_t)B * T; k++) { tokens[k] = 0; targets[k] = -1; }
    for (int i = 0; i < n; i++)
        for (int e = 0; e < E; e++) {
            size_t idx = (size_t)(first + i) * E + e;
            int cl = it->ctx_len[first + i], el = it->end_len[idx], len = cl + el;
            int drop = len - 1 > T ? len - 1 - T : 0;   // context tokens cut from the left
            int32_t *tok = tokens + ((size_t)i * E + e) * T, *tgt = targets + ((size_t)i * E + e) * T;
            for (int t = 0; t + 1 < len - drop; t++) {
                int src = drop + t;   // position in context ++ ending
                tok[t] = src < cl ? it->ctx[first + i][src] : it->end[idx][src - cl];
                int next = src + 1;
                if (next >= cl) tgt[t] = it->end[idx][next - cl];
            }
        }
}

int eval_multiple_choice(const Config *cfg, const RunDevice *dev, Comm *comm, const char *checkpoint,
                         const McItems *items, McScore *out, Error *err) {
    const Backend *be = dev->be;
    int T = cfg->seq_len, E = items->n_endings;
    // Items per forward pass: at least one, about a micro-batch of sequences.
    int per_pass = cfg->micro_batch_size / E > 0 ? cfg->micro_batch_size / E : 1;
    int B = per_pass * E;
    InferenceStage st;
    if (inference_stage_load(&st, cfg, be, comm, checkpoint, B, err)) return -1;
    int32_t *tokens = xmalloc((size_t)B * T * sizeof *tokens), *targets = xmalloc((size_t)B * T * sizeof *targets);
    float *losses = xmalloc((size_t)B * T * sizeof *losses);
    long counts[2] = {0, 0};   // correct_norm, correct_sum (this rank's share; last stages only)
    int n_passes = (items->n_items + per_pass - 1) / per_pass;
    for (int p = comm->dp_index; p < n_passes; p += comm->dp) {
        int first = p * per_pass, n = items->n_items - first < per_pass ? items->n_items - first : per_pass;
        fill_batch(items, first, n, T, tokens, targets);
        if (!inference_stage_forward(&st, comm, tokens, targets)) continue;
        be->download(losses, st.acts.losses, (size_t)B * T);
        for (int i = 0; i < n; i++) {
            int item = first + i, best_norm = 0, best_sum = 0;
            double sum[EVAL_MAX_ENDINGS], mean[EVAL_MAX_ENDINGS];
            for (int e = 0; e < E; e++) {
                double acc = 0;
                for (int t = 0; t < T; t++)
                    if (targets[((size_t)i * E + e) * T + t] >= 0) acc += losses[((size_t)i * E + e) * T + t];
                sum[e] = acc;
                mean[e] = acc / items->end_len[(size_t)item * E + e];
                // The first lowest wins ties, as torch's argmin in llm.c.
                if (mean[e] < mean[best_norm]) best_norm = e;
                if (sum[e] < sum[best_sum]) best_sum = e;
            }
            counts[0] += best_norm == items->label[item];
            counts[1] += best_sum == items->label[item];
        }
    }
    long total[2];
    mpiCheck(MPI_Allreduce(counts, total, 2, MPI_LONG, MPI_SUM, MPI_COMM_WORLD));
    *out = (McScore){.items = items->n_items, .correct_norm = total[0], .correct_sum = total[1], .step = st.step};
    free(tokens);
    free(targets);
    free(losses);
    inference_stage_free(&st);
    return 0;
}
