// inference_stage.h: this rank's pipeline stage of a checkpoint's model, for the commands that
// only run forward passes (generate, multiple-choice scoring): parameters only, no optimizer state,
// no data source.
#ifndef ENTRANK_INFERENCE_STAGE_H
#define ENTRANK_INFERENCE_STAGE_H

#include "comm.h"
#include "config.h"
#include "model.h"

typedef struct {
    Model model;         // layers [l0, l1) of this stage, as trainer_init lays them out
    Activations acts;    // B sequences of seq_len
    StepContext ctx;     // an evaluation pass at the attention temperature of the checkpoint's last step
    long step;           // the checkpoint's step
    int B, T;
    size_t io_numel;     // (B, T, C): what one stage hands the next
} InferenceStage;

// Builds the stage for B sequences and loads the checkpoint's parameters into it. Collective: every
// rank returns -1 (err set on the ranks that failed, nothing left allocated) if any rank failed.
int inference_stage_load(InferenceStage *st, const Config *cfg, const Backend *be, Comm *comm,
                         const char *checkpoint, int B, Error *err);

// One forward pass over tokens and targets (B, T) on the host (targets < 0 carry no loss): receives
// the previous stage's output, runs this stage, hands its output to the next stage. Returns 1 on
// the last stage, whose acts.logits (B, T, V) and acts.losses (B, T) then hold the results.
int inference_stage_forward(InferenceStage *st, Comm *comm, const int32_t *tokens, const int32_t *targets);

void inference_stage_free(InferenceStage *st);

#endif
