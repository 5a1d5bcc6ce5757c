// inference_stage.c: see inference_stage.h.
#include "inference_stage.h"
#include "checkpoint.h"
#include "commands.h"
#include "train.h"

int inference_stage_load(InferenceStage *st, const Config *cfg, const Backend *be, Comm *comm,
                         const char *checkpoint, int B, Error *err) {
    ModelShape shape = model_shape_from_config(cfg);
    int pp = comm->pp, s = comm->stage;
    int l0 = (int)((long)shape.n_layer * s / pp), l1 = (int)((long)shape.n_layer * (s + 1) / pp);
    model_init(&st->model, be, shape, l0, l1, s == 0, s == pp - 1, 1);
    activations_init(&st->acts, &st->model, B);
    st->B = B;
    st->T = cfg->seq_len;
    st->io_numel = (size_t)B * cfg->seq_len * cfg->d_model;
    AdamState no_adam = {0};
    int bad = 0;
    CheckpointTarget target = {&st->model, &no_adam, comm, cfg, &bad};
    CheckpointProgress progress;
    int failed = checkpoint_load(&target, checkpoint, 0, &progress, err) != 0;
    if (commands_any_failed(comm, failed, err)) {
        inference_stage_free(st);
        return -1;
    }
    st->step = progress.step;
    // No monitor, no auxiliary loss, R3SI injects its stored buffers; the logits are divided as in
    // the last step the weights were trained at.
    st->ctx = (StepContext){.training = 0, .step = 0, .loss_scale = 1,
                            .attn_temperature = attention_temperature_after(cfg, progress.step), .micro_batches = 1};
    return 0;
}

int inference_stage_forward(InferenceStage *st, Comm *comm, const int32_t *tokens, const int32_t *targets) {
    const Backend *be = st->model.be;
    Activations *a = &st->acts;
    int s = comm->stage, last = s == comm->pp - 1;
    a->pass = (PassContext){st->ctx, 0, 0};
    be->upload_i32(a->tokens, tokens, (size_t)st->B * st->T);
    be->upload_i32(a->targets, targets, (size_t)st->B * st->T);
    if (s > 0) comm->recv(comm, s - 1, a->input, st->io_numel, TAG_ACTIVATION);
    model_forward(&st->model, a);
    if (!last) {
        CommHandle h = {0};
        comm->send(comm, s + 1, model_stage_output(&st->model, a), st->io_numel, TAG_ACTIVATION, &h);
        comm->wait(comm, &h);
    }
    return last;
}

void inference_stage_free(InferenceStage *st) {
    activations_free(&st->acts, &st->model);
    model_free(&st->model);
}
