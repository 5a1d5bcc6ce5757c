// train.c: one rank's share of a training step. The rank holds one pipeline stage and one dp
// slice of the global batch; it runs the 1F1B schedule over its micro-batches, sends activations
// and their gradients to its pipeline neighbours, reduces gradients over its dp replicas while
// the backward pass goes on, and applies AdamW (to its ZeRO-1 shard, if sharded).
#include "train.h"
#include <math.h>
#include <string.h>
#include "flops.h"
#include "schedule.h"


long total_steps_of(const Config *cfg) {
    if (cfg->steps > 0) return cfg->steps;
    double per_step = (double)cfg->batch_size * cfg->seq_len;
    return (long)ceil(cfg->tokens / per_step);
}

int check_topology(const Config *cfg, int world_size, Error *err) {
    int pp = cfg->pp;
    if (world_size % pp != 0)
        return error_set(err, "parallel.pp: %d ranks cannot be split into pipelines of %d stages", world_size, pp);
    if (pp > cfg->n_layer)
        return error_set(err, "parallel.pp: %d stages for %d layers (model.n_layer): every stage needs a layer", pp, cfg->n_layer);
    int dp = world_size / pp;
    if (cfg->batch_size % (dp * cfg->micro_batch_size) != 0)
        return error_set(err, "train.batch_size: %d sequences cannot be cut into micro-batches of %d (train.micro_batch_size) over %d dp replicas",
                         cfg->batch_size, cfg->micro_batch_size, dp);
    int m = cfg->batch_size / (dp * cfg->micro_batch_size);
    if (cfg->micro_batches != 0 && cfg->micro_batches != m)
        return error_set(err, "train.micro_batches: %d micro-batches of %d sequences on %d dp replicas do not make train.batch_size %d (it would take %d)",
                         cfg->micro_batches, cfg->micro_batch_size, dp, cfg->batch_size, m);
    if (m < pp)
        return error_set(err, "train.micro_batches: %d micro-batches per step is fewer than the %d pipeline stages (parallel.pp); 1F1B needs at least pp",
                         m, pp);
    return 0;
}

static size_t stage_io_numel(const Trainer *t);

// The largest dp transfer of a step: the whole arena under ZeRO-1 (reduce-scatter and
// all-gather), else the largest bucket (a layer's region, the embeddings or the head).
static size_t largest_dp_transfer(const Trainer *t) {
    const Model *m = &t->model;
    if (t->cfg->zero) return m->num_params;
    size_t n = m->regions[REGION_EMBEDDING].numel > m->regions[REGION_HEAD].numel ? m->regions[REGION_EMBEDDING].numel
                                                                                  : m->regions[REGION_HEAD].numel;
    for (int l = m->layer_begin; l < m->layer_end; l++)
        if (model_layer_region(m, l).numel > n) n = model_layer_region(m, l).numel;
    return n;
}

int trainer_init(Trainer *t, const Config *cfg, const Backend *be, Comm *comm, Error *err) {
    memset(t, 0, sizeof *t);
    t->cfg = cfg;
    t->be = be;
    t->comm = comm;
    if (check_topology(cfg, comm->world_size, err)) return -1;
    t->total_steps = total_steps_of(cfg);
    t->micro_batch_size = cfg->micro_batch_size;
    t->micro_batches = cfg->batch_size / (comm->dp * cfg->micro_batch_size);
    t->sequences_per_rank = t->micro_batches * t->micro_batch_size;

    t->train_data = data_open(cfg, SPLIT_TRAIN, err);
    if (!t->train_data) return -1;
    t->val_data = data_open(cfg, SPLIT_VAL, err);
    if (!t->val_data) { data_close(t->train_data); return -1; }
    // validate_run (validate.c) has checked the vocabulary the data needs and every token id.

    trainer_alloc_state(t, cfg, be, comm->stage, comm->pp, comm->dp, comm->dp_index);
    model_init_weights(&t->model, cfg->seed);
    t->attn_temperature = 1.0;
    t->act_sends = xcalloc((size_t)t->n_slots, sizeof(CommHandle));
    t->grad_sends = xcalloc((size_t)t->n_slots, sizeof(CommHandle));
    ModelShape shape = t->model.shape;
    // Buckets start during the backward pass unless ZeRO-1 reduce-scatters the whole arena.
    t->reduce_in_backward = !cfg->zero && comm->dp > 1;
    comm->warm_up(comm, stage_io_numel(t), largest_dp_transfer(t), t->model.params[PARAM_WTE].present ? t->model.params[PARAM_WTE].numel : 0);

    size_t n = (size_t)t->sequences_per_rank * cfg->seq_len;
    t->host_tokens = xmalloc(n * sizeof(int32_t));
    t->host_targets = xmalloc(n * sizeof(int32_t));
    t->host_buckets = xmalloc(n * sizeof(int32_t));
    t->host_predictions = xmalloc(n * sizeof(int32_t));
    t->flops_per_token = flops_per_token(&shape);
    if (cfg->trace_every > 0) trace_init(&t->trace, &shape, t->micro_batch_size, cfg->trace_snapshot_layers, cfg->trace_snapshot_n);
    return 0;
}

// Every device buffer of the rank, in one place: the stage's model (parameters, gradients, the
// hooks' state), the schedule's activation slots, AdamW's moments (the ZeRO-1 shard and its
// gradient buffer, if sharded) and the trainer's own buffers. Allocation only, no upload and no op:
// estimate_memory (memory_estimate.c) runs this very function on a counting backend, so the
// estimate and the allocations cannot drift apart.
void trainer_alloc_state(Trainer *t, const Config *cfg, const Backend *be, int stage, int pp, int dp, int dp_index) {
    t->cfg = cfg;
    t->be = be;
    t->micro_batch_size = cfg->micro_batch_size;
    t->micro_batches = cfg->batch_size / (dp * cfg->micro_batch_size);
    t->sequences_per_rank = t->micro_batches * t->micro_batch_size;
    // Layers split as evenly as possible: stage s holds [L s / pp, L (s+1) / pp).
    ModelShape shape = model_shape_from_config(cfg);
    int l0 = (int)((long)shape.n_layer * stage / pp), l1 = (int)((long)shape.n_layer * (stage + 1) / pp);
    size_t multiple = cfg->zero ? (size_t)dp * 16 : 1;
    model_init(&t->model, be, shape, l0, l1, stage == 0, stage == pp - 1, multiple);

    t->actions = xcalloc(2 * (size_t)t->micro_batches, sizeof(Action));
    t->n_slots = schedule_slots(stage, pp, t->micro_batches);
    t->slots = xcalloc((size_t)t->n_slots, sizeof(Activations));
    for (int i = 0; i < t->n_slots; i++) activations_init(&t->slots[i], &t->model, t->micro_batch_size);

    if (cfg->zero) {
        size_t shard = t->model.num_params / (size_t)dp;
        adam_init(&t->adam, &t->model, (size_t)dp_index * shard, shard);
        t->shard_grads = be->alloc(shard);
    } else {
        adam_init(&t->adam, &t->model, 0, t->model.num_params);
    }
    t->device_predictions = be->alloc_i32((size_t)t->micro_batch_size * cfg->seq_len);
}

size_t trainer_warm_up_numel(const Trainer *t) {
    size_t n = stage_io_numel(t), dp_n = largest_dp_transfer(t);
    size_t tie_n = t->model.params[PARAM_WTE].present ? t->model.params[PARAM_WTE].numel : 0;
    if (dp_n > n) n = dp_n;
    return tie_n > n ? tie_n : n;
}

void trainer_free_state(Trainer *t) {
    adam_free(&t->adam, &t->model);
    if (t->shard_grads) t->be->free(t->shard_grads);
    for (int i = 0; i < t->n_slots; i++) activations_free(&t->slots[i], &t->model);
    free(t->slots); free(t->actions);
    t->be->free(t->device_predictions);
    model_free(&t->model);
    t->slots = NULL; t->actions = NULL; t->shard_grads = NULL; t->device_predictions = NULL; t->n_slots = 0;
}

void trainer_free(Trainer *t) {
    if (!t->model.be) { memset(t, 0, sizeof *t); return; }   // freed before the model was built
    if (t->trace.L) trace_free(&t->trace);
    free(t->act_sends); free(t->grad_sends);
    trainer_free_state(t);
    data_close(t->train_data);
    data_close(t->val_data);
    free(t->host_tokens); free(t->host_targets); free(t->host_buckets); free(t->host_predictions);
    memset(t, 0, sizeof *t);
}

// Reads sequences first_index .. first_index + n_seq - 1 of batch `batch` into the host staging.
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

double temperature_at(const Config *cfg, long step) {
    if (!strcmp(cfg->temperature_mode, "none")) return 1.0;
    return cfg->temperature_base * (1 + cfg->temperature_beta * tanh(cfg->temperature_gamma * ((double)step - cfg->temperature_t_switch)));
}

double attention_temperature_at(const Config *cfg, long step) {
    return strcmp(cfg->temperature_mode, "attention") ? 1.0 : temperature_at(cfg, step);
}

double attention_temperature_after(const Config *cfg, long steps_done) {
    return attention_temperature_at(cfg, steps_done > 0 ? steps_done - 1 : 0);
}

// Uploads the tokens of micro-batch mb of the host staging (at `staged`) into slot a, for a pass
// of micro-batch mb of the step `ctx`.
static void upload_micro_batch(Trainer *t, Activations *a, int mb, int staged, const StepContext *ctx) {
    size_t n = (size_t)t->micro_batch_size * t->cfg->seq_len, off = (size_t)staged * n;
    a->pass = (PassContext){*ctx, mb, t->comm->dp_index * t->sequences_per_rank + mb * t->micro_batch_size};
    t->be->upload_i32(a->tokens, t->host_tokens + off, n);
    t->be->upload_i32(a->targets, t->host_targets + off, n);
}

static size_t stage_io_numel(const Trainer *t) {
    return (size_t)t->micro_batch_size * t->cfg->seq_len * t->cfg->d_model;
}

// Forward of micro-batch mb on this stage: input from the previous stage (or the embedding),
// output on to the next. Returns this micro-batch's loss sum on the last stage, 0 elsewhere.
static double forward_micro_batch(Trainer *t, int mb, const StepContext *ctx, double aux_sums[NUM_AUX]) {
    Comm *c = t->comm;
    int slot = mb % t->n_slots;
    Activations *a = &t->slots[slot];
    // The slot's previous output may still be on its way to the next stage.
    c->wait(c, &t->act_sends[slot]);
    upload_micro_batch(t, a, mb, mb, ctx);
    if (c->stage > 0) c->recv(c, c->stage - 1, a->input, stage_io_numel(t), TAG_ACTIVATION);
    model_forward(&t->model, a);
    // Traces come from replica 0's first micro-batch: the same sequences on every topology.
    if (t->trace_step && mb == 0 && c->dp_index == 0) trace_forward(&t->trace, &t->model, a);
    for (int i = 0; i < NUM_AUX; i++) aux_sums[i] += a->aux[i];
    if (c->stage < c->pp - 1) {
        c->send(c, c->stage + 1, model_stage_output(&t->model, a), stage_io_numel(t), TAG_ACTIVATION, &t->act_sends[slot]);
        return 0;
    }
    return model_loss_sum(&t->model, a);
}

// Starts the dp reduction of one region as soon as the backward pass has finished it.
static void start_bucket(void *ctx, ModelRegion region, int is_embedding) {
    Trainer *t = ctx;
    // The tied embedding's two copies are summed across the pipeline first (after the schedule).
    if (is_embedding && t->comm->pp > 1 && t->model.shape.tie_embeddings) return;
    if (t->n_grad_buckets == MAX_GRAD_BUCKETS) die(EXIT_FAILURE_OTHER, "internal: more than %d gradient buckets", MAX_GRAD_BUCKETS);
    t->comm->dp_allreduce_start(t->comm, be_offset(t->be, t->model.grads_mem, region.offset), region.numel,
                                &t->grad_buckets[t->n_grad_buckets++]);
}

static void backward_micro_batch(Trainer *t, int mb, double dloss) {
    Comm *c = t->comm;
    int slot = mb % t->n_slots;
    Activations *a = &t->slots[slot];
    // The slot's previous input gradient may still be on its way to the previous stage.
    c->wait(c, &t->grad_sends[slot]);
    if (c->stage < c->pp - 1) c->recv(c, c->stage + 1, a->dresidual, stage_io_numel(t), TAG_GRADIENT);
    int last = mb == t->micro_batches - 1;
    model_backward(&t->model, a, dloss, last && t->reduce_in_backward ? start_bucket : NULL, t);
    if (c->stage > 0) c->send(c, c->stage - 1, a->dresidual, stage_io_numel(t), TAG_GRADIENT, &t->grad_sends[slot]);
}

// Sums the tied embedding between the first and last stage, then finishes the dp reduction.
// Returns the gradients of the optimizer's range (the whole arena, or the ZeRO-1 shard).
static const void *reduce_gradients(Trainer *t) {
    Comm *c = t->comm;
    Model *m = &t->model;
    // Only the first and last stages hold a copy of the tied wte.
    int tied_pipeline = c->pp > 1 && m->shape.tie_embeddings && m->params[PARAM_WTE].present;
    if (tied_pipeline) {
        // Stage 0's wte gradient (from the embedding) plus the last stage's (from the LM head).
        c->tie_allreduce(c, model_grad(m, PARAM_WTE, 0), m->params[PARAM_WTE].numel);
        if (t->reduce_in_backward && m->regions[REGION_EMBEDDING].numel > 0) {
            ModelRegion r = m->regions[REGION_EMBEDDING];
            c->dp_allreduce_start(c, be_offset(t->be, m->grads_mem, r.offset), r.numel, &t->grad_buckets[t->n_grad_buckets++]);
        }
    }
    for (int i = 0; i < t->n_grad_buckets; i++) c->wait(c, &t->grad_buckets[i]);
    t->n_grad_buckets = 0;
    if (!t->cfg->zero) return m->grads_mem;
    c->dp_reduce_scatter(c, m->grads_mem, t->shard_grads, t->adam.numel);
    return t->shard_grads;
}

int trainer_step(Trainer *t, long step, StepResult *out, Error *err) {
    const Config *cfg = t->cfg;
    Comm *c = t->comm;
    memset(out, 0, sizeof *out);
    int first = c->dp_index * t->sequences_per_rank;
    long scored_local = read_sequences(t, t->train_data, (uint64_t)step, first, t->sequences_per_rank, err);
    if (scored_local < 0) return -1;
    // Each position's loss is divided by the scored positions of the whole global batch, so the
    // summed gradient is the same however the batch is cut into micro-batches and replicas.
    double scored = c->stage == c->pp - 1 ? (double)scored_local : 0;
    c->world_sum(c, &scored, 1);
    double dloss = scored > 0 ? 1.0 / scored : 0.0;
    // Temperature schedule: "loss" divides the whole objective (so every gradient) by temp(t);
    // "attention" divides every attention logit.
    double temp = temperature_at(cfg, step), loss_scale = 1.0;
    if (!strcmp(cfg->temperature_mode, "loss")) loss_scale = 1.0 / temp;
    dloss *= loss_scale;
    StepContext ctx = {.training = 1, .step = step, .loss_scale = loss_scale, .attn_temperature = attention_temperature_at(cfg, step),
                       .micro_batches = t->micro_batches * c->dp};
    t->attn_temperature = ctx.attn_temperature;
    t->trace_step = cfg->trace_every > 0 && step % cfg->trace_every == 0;
    if (t->trace_step) trace_clear(&t->trace);

    t->be->zero(t->model.grads_mem, t->model.num_params);
    model_begin_step(&t->model, &ctx);
    int n_actions = schedule_1f1b(c->stage, c->pp, t->micro_batches, t->actions);
    double loss_sum = 0, aux_sums[NUM_AUX] = {0};
    for (int i = 0; i < n_actions; i++) {
        if (t->actions[i].kind == ACTION_FORWARD) loss_sum += forward_micro_batch(t, t->actions[i].micro_batch, &ctx, aux_sums);
        else backward_micro_batch(t, t->actions[i].micro_batch, dloss);
    }
    for (int s = 0; s < t->n_slots; s++) { c->wait(c, &t->act_sends[s]); c->wait(c, &t->grad_sends[s]); }
    const void *grads = reduce_gradients(t);
    out->monitored = model_after_gradients(&t->model, c, &ctx, (double)cfg->batch_size * cfg->seq_len, !cfg->zero);
    if (t->trace_step) {
        trace_finish(&t->trace, &t->model, c, !cfg->zero);
        out->traced = 1;
    }

    // Every rank needs the same loss and norm to take the same decision. The norm counts each
    // stage once: under ZeRO-1 every replica holds a different shard, otherwise replica 0 speaks.
    double sums[2 + NUM_AUX] = {loss_sum, 0};
    for (int i = 0; i < NUM_AUX; i++) sums[2 + i] = aux_sums[i];
    if (cfg->zero || c->dp_index == 0) sums[1] = grad_sum_squares(&t->model, grads, t->adam.begin, t->adam.numel);
    c->world_sum(c, sums, 2 + NUM_AUX);
    // Reported losses are the unscaled ones; `loss` is the objective the gradient follows
    // (divided by the temperature in "loss" mode).
    out->lm_loss = sums[0] * dloss / loss_scale;
    out->aux_loss = 0;
    for (int i = 0; i < NUM_AUX; i++) {
        double term = model_aux_weight(&t->model, (AuxTerm)i, &ctx) * sums[2 + i];
        if (i == AUX_LSD) out->lsd = term;
        out->aux_loss += term;
    }
    out->loss = (out->lm_loss + out->aux_loss) * loss_scale;
    out->temperature = temp;
    out->grad_norm = sqrt(sums[1]);
    out->lr = lr_at_step(cfg, step, t->total_steps);
    if (!isfinite(out->loss) || !isfinite(out->grad_norm)) {
        out->skipped = 1;
        out->bad_in_row = ++t->bad_in_row;
        out->stop = t->bad_in_row >= cfg->max_bad_steps;
        return 0;
    }
    t->bad_in_row = 0;
    double clip = cfg->grad_clip > 0 && out->grad_norm > cfg->grad_clip ? cfg->grad_clip / out->grad_norm : 1.0;
    adam_step(&t->adam, &t->model, cfg, out->lr, clip, grads);
    if (cfg->zero) c->dp_allgather(c, t->model.params_mem, t->adam.numel);
    return 0;
}

// Adds this micro-batch's per-sequence head entropies of the stage's layers to stats.
static void gather_head_entropies(Trainer *t, const Activations *a, HeadEntropyStats *stats) {
    int NH = t->model.shape.n_head, B = a->B;
    double *ent = xmalloc((size_t)a->n_local * B * NH * sizeof(double));
    model_head_entropies(&t->model, a, ent);   // (n_local, B, NH)
    for (int li = 0; li < a->n_local; li++)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++) {
                double e = ent[((size_t)li * B + b) * NH + h];
                size_t k = (size_t)(t->model.layer_begin + li) * NH + h;
                stats->sum[k] += e;
                stats->sum_sq[k] += e * e;
            }
    // Sequences are counted once per replica: on stage 0.
    if (t->comm->stage == 0) stats->sequences += B;
    free(ent);
}

int trainer_evaluate(Trainer *t, EvalResult *out, HeadEntropyStats *stats, Error *err) {
    const Config *cfg = t->cfg;
    const Backend *be = t->be;
    Comm *c = t->comm;
    memset(out, 0, sizeof *out);
    out->n_buckets = data_n_buckets(t->val_data);
    int T = cfg->seq_len, mbs = t->micro_batch_size;
    size_t n = (size_t)mbs * T;
    Activations *a = &t->slots[0];
    int last_stage = c->stage == c->pp - 1;
    // An evaluation pass: no hook measures, draws or adds a loss; an injecting hook uses its current buffers.
    // The logits keep the temperature of the last training step.
    StepContext ctx = {.training = 0, .step = 0, .loss_scale = 1, .attn_temperature = t->attn_temperature, .micro_batches = 1};
    // sums: loss, scored, then correct and total per bucket
    double sums[2 + 2 * DATA_MAX_BUCKETS] = {0};
    for (int batch = 0; batch < cfg->eval_batches; batch++) {
        int first = c->dp_index * t->sequences_per_rank;
        for (int mb = 0; mb < t->micro_batches; mb++) {
            long scored = read_sequences(t, t->val_data, (uint64_t)batch, first + mb * mbs, mbs, err);
            if (scored < 0) return -1;
            upload_micro_batch(t, a, mb, 0, &ctx);
            // Forward only, one direction: blocking hand-over from stage to stage cannot deadlock.
            if (c->stage > 0) c->recv(c, c->stage - 1, a->input, stage_io_numel(t), TAG_ACTIVATION);
            model_forward(&t->model, a);
            if (stats) gather_head_entropies(t, a, stats);
            if (!last_stage) {
                CommHandle h = {0};
                c->send(c, c->stage + 1, model_stage_output(&t->model, a), stage_io_numel(t), TAG_ACTIVATION, &h);
                c->wait(c, &h);
                continue;
            }
            sums[0] += model_loss_sum(&t->model, a);
            sums[1] += (double)scored;
            be->argmax_rows(t->device_predictions, a->logits, (int)n, cfg->vocab_size);
            be->download_i32(t->host_predictions, t->device_predictions, n);
            for (size_t p = 0; p < n; p++) {
                int bucket = t->host_buckets[p];
                if (bucket < 0 || t->host_targets[p] < 0) continue;
                sums[2 + 2 * bucket] += t->host_predictions[p] == t->host_targets[p];
                sums[3 + 2 * bucket] += 1;
            }
        }
    }
    c->world_sum(c, sums, 2 + 2 * out->n_buckets);
    if (stats) {
        size_t n = (size_t)t->model.shape.n_layer * t->model.shape.n_head;
        c->world_sum(c, stats->sum, (int)n);
        c->world_sum(c, stats->sum_sq, (int)n);
        c->world_sum(c, &stats->sequences, 1);
    }
    out->scored = (long)sums[1];
    out->loss = out->scored > 0 ? sums[0] / (double)out->scored : 0;
    out->ppl = exp(out->loss);
    for (int b = 0; b < out->n_buckets; b++) {
        out->correct[b] = (long)sums[2 + 2 * b];
        out->total[b] = (long)sums[3 + 2 * b];
    }
    return 0;
}

CheckpointTarget trainer_checkpoint_target(Trainer *t) {
    CheckpointTarget target = {&t->model, &t->adam, t->comm, t->cfg, &t->bad_in_row};
    return target;
}
