// head_pruning.c: see head_pruning.h.
#include "head_pruning.h"
#include <math.h>
#include <stdio.h>

void print_eval(const Trainer *t, const Config *cfg, const char *what, const EvalResult *ev) {
    printf("%sval loss %.6f | val ppl %.4f | %ld scored positions in %d batches\n", what, ev->loss, ev->ppl, ev->scored,
           cfg->eval_batches);
    for (int b = 0; b < ev->n_buckets; b++)
        printf("%s%s acc %.4f (n=%ld)\n", what, data_bucket_label(t->val_data, b),
               ev->total[b] ? (double)ev->correct[b] / ev->total[b] : NAN, ev->total[b]);
}

// Post-hoc head pruning (the SGA post's baseline): per head, the variance over validation
// sequences of its mean row entropy; the `fraction` of heads with the lowest variance are masked.
int prune_heads(Trainer *t, const Config *cfg, double fraction, Error *err) {
    int L = t->model.shape.n_layer, NH = t->model.shape.n_head, n = L * NH;
    HeadEntropyStats st = {xcalloc((size_t)n, sizeof(double)), xcalloc((size_t)n, sizeof(double)), 0};
    EvalResult ev;
    if (trainer_evaluate(t, &ev, &st, err)) return -1;
    if (t->comm->world_rank == 0) print_eval(t, cfg, "before pruning: ", &ev);
    double *var = xmalloc((size_t)n * sizeof(double));
    int *order = xmalloc((size_t)n * sizeof(int));
    for (int k = 0; k < n; k++) {
        double mean = st.sum[k] / st.sequences;
        var[k] = st.sum_sq[k] / st.sequences - mean * mean;
        order[k] = k;
    }
    // Lowest variance first; ties by index, so every rank picks the same heads.
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && (var[order[j]] < var[order[j - 1]] || (var[order[j]] == var[order[j - 1]] && order[j] < order[j - 1])); j--) {
            int tmp = order[j]; order[j] = order[j - 1]; order[j - 1] = tmp;
        }
    int pruned = (int)lround(fraction * n);
    float *mask = xmalloc((size_t)n * sizeof(float));
    for (int k = 0; k < n; k++) mask[k] = 1;
    for (int i = 0; i < pruned; i++) mask[order[i]] = 0;
    if (t->comm->world_rank == 0) {
        printf("pruned %d of %d heads (lowest variance of mean row entropy over %.0f sequences):", pruned, n, st.sequences);
        for (int i = 0; i < pruned; i++) printf(" L%dH%d", order[i] / NH, order[i] % NH);
        printf("\n");
    }
    int n_local = t->model.layer_end - t->model.layer_begin;
    t->model.head_mask = t->be->alloc((size_t)n_local * NH);
    t->be->upload(t->model.head_mask, mask + (size_t)t->model.layer_begin * NH, (size_t)n_local * NH);
    free(st.sum); free(st.sum_sq); free(var); free(order); free(mask);
    return 0;
}

