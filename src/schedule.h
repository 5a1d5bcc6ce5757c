// schedule.h: the non-interleaved 1F1B pipeline schedule (PipeDream-Flush / Megatron-LM).
//
// Stage s of p runs min(p - s - 1, m) warm-up forwards, then alternates one forward and one
// backward, then drains the remaining backwards. It knows nothing of what a forward computes.
#pragma once

typedef enum { ACTION_FORWARD, ACTION_BACKWARD } ActionKind;

typedef struct {
    ActionKind kind;
    int micro_batch;
} Action;

// Writes the 2m actions of stage `stage` into out (room for 2m) and returns 2m.
int schedule_1f1b(int stage, int pp, int micro_batches, Action *out);

// Micro-batches whose activations are alive at once on `stage`: min(pp - stage, m). Micro-batch i
// lives in slot i % slots.
int schedule_slots(int stage, int pp, int micro_batches);
