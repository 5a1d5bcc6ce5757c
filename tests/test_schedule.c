// The 1F1B schedule: every micro-batch forwarded then backwarded once, no more than the slots in
// flight, and, simulated over all stages with blocking receives, it never deadlocks.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <string.h>
#include "schedule.h"

enum { MAX_M = 64, MAX_P = 8 };

static void test_each_stage_runs_every_micro_batch_once_in_order(void **state) {
    (void)state;
    for (int p = 1; p <= MAX_P; p++) {
        for (int m = p; m <= 3 * p + 5; m++) {
            for (int s = 0; s < p; s++) {
                Action a[2 * MAX_M];
                int n = schedule_1f1b(s, p, m, a);
                assert_int_equal(n, 2 * m);
                int fwd = 0, bwd = 0, in_flight = 0, max_in_flight = 0;
                for (int i = 0; i < n; i++) {
                    if (a[i].kind == ACTION_FORWARD) { assert_int_equal(a[i].micro_batch, fwd++); in_flight++; }
                    else { assert_int_equal(a[i].micro_batch, bwd++); in_flight--; }
                    assert_true(bwd <= fwd);
                    if (in_flight > max_in_flight) max_in_flight = in_flight;
                }
                assert_int_equal(fwd, m);
                assert_int_equal(bwd, m);
                assert_int_equal(max_in_flight, schedule_slots(s, p, m));
                // Micro-batches alive together never share a slot.
                assert_true(max_in_flight <= p - s);
            }
        }
    }
}

// Runs every stage's action list with the data dependencies of a pipeline: forward(s, i) needs
// forward(s-1, i); backward(s, i) needs forward(s, i) and backward(s+1, i). Sends never block.
// Returns 1 if all stages finish.
static int simulate(int p, int m) {
    Action a[MAX_P][2 * MAX_M];
    int pos[MAX_P] = {0};
    int fwd_done[MAX_P][MAX_M], bwd_done[MAX_P][MAX_M];
    memset(fwd_done, 0, sizeof fwd_done);
    memset(bwd_done, 0, sizeof bwd_done);
    for (int s = 0; s < p; s++) schedule_1f1b(s, p, m, a[s]);
    for (int progress = 1; progress;) {
        progress = 0;
        for (int s = 0; s < p; s++) {
            if (pos[s] == 2 * m) continue;
            Action x = a[s][pos[s]];
            int ready = x.kind == ACTION_FORWARD ? (s == 0 || fwd_done[s - 1][x.micro_batch])
                                                 : (fwd_done[s][x.micro_batch] && (s == p - 1 || bwd_done[s + 1][x.micro_batch]));
            if (!ready) continue;
            (x.kind == ACTION_FORWARD ? fwd_done : bwd_done)[s][x.micro_batch] = 1;
            pos[s]++;
            progress = 1;
        }
    }
    for (int s = 0; s < p; s++) if (pos[s] != 2 * m) return 0;
    return 1;
}

static void test_schedule_never_deadlocks(void **state) {
    (void)state;
    for (int p = 1; p <= MAX_P; p++)
        for (int m = p; m <= 4 * p; m++) assert_true(simulate(p, m));
}

static void test_warmup_matches_1f1b(void **state) {
    (void)state;
    Action a[16];
    // Stage 0 of 4 with 6 micro-batches: 3 warm-up forwards, then F B pairs, then 3 backwards.
    schedule_1f1b(0, 4, 6, a);
    const char *expect = "FFFFBFBFBBBB";
    for (int i = 0; i < 12; i++) assert_int_equal(a[i].kind == ACTION_FORWARD ? 'F' : 'B', expect[i]);
    // The last stage alternates from the start.
    schedule_1f1b(3, 4, 6, a);
    for (int i = 0; i < 12; i++) assert_int_equal(a[i].kind, i % 2 == 0 ? ACTION_FORWARD : ACTION_BACKWARD);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_stage_runs_every_micro_batch_once_in_order),
        cmocka_unit_test(test_schedule_never_deadlocks),
        cmocka_unit_test(test_warmup_matches_1f1b),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
