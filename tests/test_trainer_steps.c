// The training step: non-finite losses are skipped and counted, the update leaves no trace of
// them, the run is told to stop after train.max_bad_steps in a row; and the memory that `info`
// reports for activations is what the trainer really allocates.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>
#include "flops.h"
#include <mpi.h>
#include "comm.h"
#include "memory_estimate.h"
#include "train.h"

static Config cfg;
static Comm *world;   // a world of one rank

static void load_tiny(void) {
    const char *sets[] = {"model.n_layer=2", "model.seq_len=32", "train.batch_size=4", "train.micro_batch_size=2",
                          "train.steps=10", "train.warmup_steps=2", "train.max_bad_steps=3"};
    Error err = {{0}};
    if (config_load("configs/tiny.cfg", sets, 7, &cfg, &err)) fail_msg("%s", err.msg);
}

static void test_nonfinite_steps_are_skipped_and_stop_the_run(void **state) {
    (void)state;
    load_tiny();
    Trainer t;
    Error err = {{0}};
    assert_int_equal(trainer_init(&t, &cfg, backend_cpu_f32(), world, &err), 0);
    StepResult r;
    assert_int_equal(trainer_step(&t, 0, &r, &err), 0);
    assert_false(r.skipped);
    assert_true(isfinite(r.loss) && r.loss > 0);

    // Poison one weight of the first block: every loss becomes NaN.
    float *before = malloc(t.model.num_params * sizeof(float)), *after = malloc(t.model.num_params * sizeof(float));
    float good, nan_value = NAN;
    void *w = model_param(&t.model, PARAM_QKV_W, 0);
    t.be->download(&good, w, 1);
    t.be->upload(w, &nan_value, 1);
    t.be->download(before, t.model.params_mem, t.model.num_params);
    for (int k = 1; k <= 3; k++) {
        assert_int_equal(trainer_step(&t, k, &r, &err), 0);
        assert_true(r.skipped);
        assert_int_equal(r.bad_in_row, k);
        assert_int_equal(r.stop, k == 3);
    }
    // No update was applied: every parameter (the NaN included) is bit for bit what it was.
    t.be->download(after, t.model.params_mem, t.model.num_params);
    assert_memory_equal(before, after, t.model.num_params * sizeof(float));
    assert_int_equal(t.adam.t, 1);

    // A finite step resets the count.
    t.be->upload(w, &good, 1);
    assert_int_equal(trainer_step(&t, 4, &r, &err), 0);
    assert_false(r.skipped);
    assert_int_equal(r.bad_in_row, 0);
    assert_int_equal(t.adam.t, 2);
    free(before); free(after);
    trainer_free(&t);
}

static void test_info_activation_memory_matches_allocation(void **state) {
    (void)state;
    const char *variants[][2] = {{"attention.kind=sdpa", "r3si.enabled=false"}, {"attention.kind=sga", "r3si.enabled=false"},
                                 {"attention.kind=sdpa", "r3si.enabled=true"}};
    for (int v = 0; v < 3; v++) {
        const char *sets[] = {"model.n_layer=8", "model.seq_len=32", "train.batch_size=4", "train.micro_batch_size=2",
                              "train.steps=10", "train.warmup_steps=2", "r3si.layers=[3, 5]", "r3si.k=8", variants[v][0], variants[v][1]};
        Error e = {{0}};
        if (config_load("configs/tiny.cfg", sets, 10, &cfg, &e)) fail_msg("%s", e.msg);
        // The estimate is the allocations: the CPU backend's counter grows by exactly its bytes.
        size_t before = 0, after = 0;
        backend_cpu_f32()->memory_stats(&before, NULL);
        Trainer tv;
        assert_int_equal(trainer_init(&tv, &cfg, backend_cpu_f32(), world, &e), 0);
        backend_cpu_f32()->memory_stats(&after, NULL);
        MemoryEstimate mv = estimate_memory(&cfg, 1, 1, 0);
        printf("# %s %s: estimated %.0f bytes (activations %.0f), allocated %zu (activations %zu)\n", variants[v][0], variants[v][1],
               mv.allocated_bytes, mv.activation_bytes, after - before, tv.slots[0].bytes);
        assert_true(fabs(mv.activation_bytes - (double)tv.slots[0].bytes) < 1.0);
        assert_true(fabs(mv.allocated_bytes - (double)(after - before)) < 1.0);
        trainer_free(&tv);
    }
    load_tiny();
    Trainer t;
    Error err = {{0}};
    assert_int_equal(trainer_init(&t, &cfg, backend_cpu_f32(), world, &err), 0);
    ModelShape s = t.model.shape;
    // Parameters: the arenas hold exactly the counted parameters (plus alignment padding).
    ParamCounts c = count_params(&s);
    assert_int_equal(model_count_params(&s).total, c.total);
    assert_true(t.model.num_params >= c.total && t.model.num_params < c.total + 16 * (size_t)t.model.n_params * (size_t)s.n_layer);
    trainer_free(&t);
}

static void test_learning_rate_schedule(void **state) {
    (void)state;
    load_tiny();
    cfg.lr = 1e-3; cfg.min_lr = 1e-4; cfg.warmup_steps = 10;
    assert_true(fabs(lr_at_step(&cfg, 0, 110) - 1e-4) < 1e-12);        // warmup: lr (step+1)/warmup
    assert_true(fabs(lr_at_step(&cfg, 9, 110) - 1e-3) < 1e-12);
    assert_true(fabs(lr_at_step(&cfg, 10, 110) - 1e-3) < 1e-12);       // cosine starts at the peak
    assert_true(fabs(lr_at_step(&cfg, 60, 110) - 5.5e-4) < 1e-12);     // halfway: the mean of peak and floor
    assert_true(fabs(lr_at_step(&cfg, 110, 110) - 1e-4) < 1e-12);      // floor
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    world = comm_mpi_create(1, sizeof(float));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nonfinite_steps_are_skipped_and_stop_the_run),
        cmocka_unit_test(test_info_activation_memory_matches_allocation),
        cmocka_unit_test(test_learning_rate_schedule),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    world->free(world);
    MPI_Finalize();
    return failed;
}
