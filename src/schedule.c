#include "schedule.h"

int schedule_slots(int stage, int pp, int micro_batches) {
    int in_flight = pp - stage;
    return in_flight < micro_batches ? in_flight : micro_batches;
}

int schedule_1f1b(int stage, int pp, int micro_batches, Action *out) {
    int warmup = pp - stage - 1;
    if (warmup > micro_batches) warmup = micro_batches;
    int n = 0, fwd = 0, bwd = 0;
    for (int i = 0; i < warmup; i++) out[n++] = (Action){ACTION_FORWARD, fwd++};
    for (int i = 0; i < micro_batches - warmup; i++) {
        out[n++] = (Action){ACTION_FORWARD, fwd++};
        out[n++] = (Action){ACTION_BACKWARD, bwd++};
    }
    while (bwd < micro_batches) out[n++] = (Action){ACTION_BACKWARD, bwd++};
    return n;
}
