// train.c: the training loop. Per step: read the global batch, run forward/backward over the
// micro-batches, clip, AdamW; log, record metrics and evaluate on schedule.
#include "train.h"
#include <math.h>
#include <string.h>
#include "flops.h"

long total_steps_of(const Config *cfg) {
    if (cfg->steps > 0) return cfg->steps;
    double per_step = (double)cfg->batch_size * cfg->seq_len;
    return (long)ceil(cfg->tokens / per_step);
}

int trainer_init(Trainer *t, const Config *cfg, const Backend *be, Error *err) {
    memset(t, 0, sizeof *t);
    t->cfg = cfg;
    t->be = be;
    t->total_steps = total_steps_of(cfg);
    t->micro_batch_size = cfg->micro_batch_size;
    // One process holds the whole global batch (dp = 1).
    int derived = cfg->batch_size / cfg->micro_batch_size;
    if (cfg->micro_batches != 0 && cfg->micro_batches != derived)
        return error_set(err, "train.micro_batches: %d micro-batches of %d sequences do not make train.batch_size %d on 1 rank",
                         cfg->micro_batches, cfg->micro_batch_size, cfg->batch_size);
    t->micro_batches = derived;

    t->train_data = data_open(cfg, SPLIT_TRAIN, err);
    if (!t->train_data) return -1;
    t->val_data = data_open(cfg, SPLIT_VAL, err);
    if (!t->val_data) { data_close(t->train_data); return -1; }
    int need = data_vocab_needed(t->train_data);
    if (need > cfg->vocab_size) {
        data_close(t->train_data); data_close(t->val_data);
        return error_set(err, "model.vocab_size: %d is smaller than the %d tokens data.kind \"%s\" uses", cfg->vocab_size, need, cfg->data_kind);
    }

    ModelShape shape = model_shape_from_config(cfg);
    model_init(&t->model, be, shape, 0, shape.n_layer, 1, 1);
    model_init_weights(&t->model, cfg->seed);
    activations_init(&t->acts, &t->model, t->micro_batch_size);
    adam_init(&t->adam, &t->model);
    size_t n = (size_t)t->micro_batches * t->micro_batch_size * cfg->seq_len;
    t->host_tokens = xmalloc(n * sizeof(int32_t));
    t->host_targets = xmalloc(n * sizeof(int32_t));
    t->host_buckets = xmalloc(n * sizeof(int32_t));
    t->host_predictions = xmalloc(n * sizeof(int32_t));
    t->device_predictions = be->alloc_i32((size_t)t->micro_batch_size * cfg->seq_len);
    t->flops_per_token = flops_per_token(&shape);
    return 0;
}

void trainer_free(Trainer *t) {
    adam_free(&t->adam, &t->model);
    activations_free(&t->acts, t->be);
    model_free(&t->model);
    data_close(t->train_data);
    data_close(t->val_data);
    t->be->free(t->device_predictions);
    free(t->host_tokens); free(t->host_targets); free(t->host_buckets); free(t->host_predictions);
    memset(t, 0, sizeof *t);
}

// Reads `n_seq` sequences (first_index ...) of batch `batch` from `src` into the host staging.
// Returns the number of scored positions, or -1 on bad data.
static long read_sequences(Trainer *t, DataSource *src, uint64_t batch, int first_index, int n_seq, Error *err) {
    int T = t->cfg->seq_len;
    long scored = 0;
    for (int i = 0; i < n_seq; i++) {
        size_t off = (size_t)i * T;
        SequenceBuffers buf = {t->host_tokens + off, t->host_targets + off, t->host_buckets + off};
        if (data_get_sequence(src, batch, first_index + i, buf, err)) return -1;
        for (int p = 0; p < T; p++) scored += buf.targets[p] >= 0;
    }
    return scored;
}

static void upload_micro_batch(Trainer *t, int mb) {
    size_t n = (size_t)t->micro_batch_size * t->cfg->seq_len, off = (size_t)mb * n;
    t->be->upload_i32(t->acts.tokens, t->host_tokens + off, n);
    t->be->upload_i32(t->acts.targets, t->host_targets + off, n);
}

int trainer_step(Trainer *t, long step, StepResult *out, Error *err) {
    const Config *cfg = t->cfg;
    const Backend *be = t->be;
    memset(out, 0, sizeof *out);
    long scored = read_sequences(t, t->train_data, (uint64_t)step, 0, t->micro_batches * t->micro_batch_size, err);
    if (scored < 0) return -1;
    be->zero(t->model.grads_mem, t->model.num_params);
    // Each position's loss is divided by the scored positions of the whole global batch, so the
    // gradient is the same however the batch is cut into micro-batches and ranks.
    double dloss = scored > 0 ? 1.0 / (double)scored : 0.0;
    double loss_sum = 0;
    for (int mb = 0; mb < t->micro_batches; mb++) {
        upload_micro_batch(t, mb);
        model_forward(&t->model, &t->acts);
        loss_sum += model_loss_sum(&t->model, &t->acts);
        model_backward(&t->model, &t->acts, dloss);
    }
    out->loss = loss_sum * dloss;
    out->grad_norm = sqrt(grad_sum_squares(&t->model));
    out->lr = lr_at_step(cfg, step, t->total_steps);
    if (!isfinite(out->loss) || !isfinite(out->grad_norm)) {
        out->skipped = 1;
        out->bad_in_row = ++t->bad_in_row;
        out->stop = t->bad_in_row >= cfg->max_bad_steps;
        return 0;
    }
    t->bad_in_row = 0;
    double clip = cfg->grad_clip > 0 && out->grad_norm > cfg->grad_clip ? cfg->grad_clip / out->grad_norm : 1.0;
    adam_step(&t->adam, &t->model, cfg, out->lr, clip);
    return 0;
}

int trainer_evaluate(Trainer *t, EvalResult *out, Error *err) {
    const Config *cfg = t->cfg;
    const Backend *be = t->be;
    memset(out, 0, sizeof *out);
    out->n_buckets = data_n_buckets(t->val_data);
    int T = cfg->seq_len, mbs = t->micro_batch_size;
    size_t n = (size_t)mbs * T;
    double loss_sum = 0;
    for (int batch = 0; batch < cfg->eval_batches; batch++) {
        for (int first = 0; first < cfg->batch_size; first += mbs) {
            long scored = read_sequences(t, t->val_data, (uint64_t)batch, first, mbs, err);
            if (scored < 0) return -1;
            upload_micro_batch(t, 0);
            model_forward(&t->model, &t->acts);
            loss_sum += model_loss_sum(&t->model, &t->acts);
            out->scored += scored;
            be->argmax_rows(t->device_predictions, t->acts.logits, (int)n, cfg->vocab_size);
            be->download_i32(t->host_predictions, t->device_predictions, n);
            for (size_t p = 0; p < n; p++) {
                int bucket = t->host_buckets[p];
                if (bucket < 0 || t->host_targets[p] < 0) continue;
                out->total[bucket]++;
                out->correct[bucket] += t->host_predictions[p] == t->host_targets[p];
            }
        }
    }
    out->loss = out->scored > 0 ? loss_sum / out->scored : 0;
    out->ppl = exp(out->loss);
    return 0;
}
