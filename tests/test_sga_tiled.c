// The tiled form of Spectral Gated Attention (attention.fused = true, src/sga_tiled.c) against the
// materialised one (src/sga.c) on the fp64 CPU backend: forward y, dq, dk, dv and every SGA
// parameter gradient, the attention weights layer_probs gives the traces and sga_trace_layer's
// means agree to ~1e-12 at T = 1, 7, 64, for tiles of 1 pair, a non-divisor, all pairs and the
// automatic size, and for tiles of query rows of one pair (1 row, a non-divisor of T, half of T),
// for SGA and each ablation. The tiled form is causal and keeps sequences apart bitwise, with tiles
// that straddle two sequences and with query-row tiles.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include "sga_core_case.h"

enum { B = 2, NH = 3, HS = 4, BH = B * NH };

typedef struct { int spectral, fixed_filter, blend; const char *name; } Ablation;
// A tile size: attention.tile_heads pairs or attention.tile_rows query rows (0, 0: automatic).
typedef struct { int heads, rows; } TileSize;
static const Ablation ABLATIONS[] = {
    {1, 0, 1, "sga"}, {0, 0, 1, "sga.spectral=false"}, {1, 1, 1, "sga.fixed_filter=true"}, {1, 0, 0, "sga.blend=false"},
};

// Worst scale-relative difference max|a - b| / max(1, max|b|) of one tensor, printed and folded into *worst.
static void compare(const char *what, const double *a, const double *b, size_t n, double *worst) {
    double d, ref;
    sga_core_diff(a, b, n, &d, &ref);
    double rel = d / fmax(1.0, ref);
    if (rel > *worst || rel != rel) *worst = rel != rel ? INFINITY : rel;
    if (rel > 1e-12) printf("#   %s: max |diff| %.3e (max |ref| %.3e)\n", what, d, ref);
}

static void test_tiled_matches_materialised(void **state) {
    (void)state;
    const Backend *be = backend_cpu_f64();
    static const int lengths[] = {1, 7, 64};
    // one pair, a non-divisor of BH = 6 (tiles straddle sequences), all, automatic; query rows: one,
    // a non-divisor of 7 and 64, half of 64 (a row count of T or more is a whole pair: skipped)
    static const TileSize tiles[] = {{1, 0}, {4, 0}, {BH, 0}, {0, 0}, {0, 1}, {0, 3}, {0, 5}, {0, 32}};
    for (size_t ai = 0; ai < sizeof ABLATIONS / sizeof ABLATIONS[0]; ai++) {
        const Ablation *ab = &ABLATIONS[ai];
        for (size_t ti = 0; ti < sizeof lengths / sizeof lengths[0]; ti++) {
            int T = lengths[ti];
            Config cfg;
            ModelShape s = sga_core_shape(&cfg, NH, T, HS, ab->spectral, ab->fixed_filter, ab->blend, 0);
            SgaCoreInput in = sga_core_input(&s, B, 100 + 10 * ti + ai);
            SgaCoreOutput ref = sga_core_run(be, &s, &ATTENTION_SGA, &in, 1);
            size_t n = (size_t)BH * T * HS, maps = (size_t)BH * T * T;
            for (size_t k = 0; k < sizeof tiles / sizeof tiles[0]; k++) {
                if (tiles[k].rows >= T) continue;
                cfg.attention_tile_heads = tiles[k].heads;
                cfg.attention_tile_rows = tiles[k].rows;
                SgaCoreOutput got = sga_core_run(be, &s, &ATTENTION_SGA_TILED, &in, 1);
                double worst = 0;
                compare("y", got.y, ref.y, n, &worst);
                compare("dq", got.dq, ref.dq, n, &worst);
                compare("dk", got.dk, ref.dk, n, &worst);
                compare("dv", got.dv, ref.dv, n, &worst);
                compare("layer_probs", got.probs, ref.probs, maps, &worst);
                compare("sga_trace_layer", got.trace, ref.trace, 9, &worst);
                int grads = 0;
                for (int i = 0; i < in.n_params; i++) {
                    if (!in.param[i]) continue;
                    assert_non_null(got.grad[i]);
                    compare(SGA_PARAM_NAMES[i], got.grad[i], ref.grad[i], in.param_n[i], &worst);
                    grads++;
                }
                // The gradients exist and are not all zero (the comparison can fail).
                double gmax = 0, unused;
                sga_core_diff(ref.dq, ref.dq, n, &unused, &gmax);
                printf("# %-22s T=%-3d tile_heads=%d tile_rows=%-2d: %d parameter gradients, worst relative difference %.2e "
                       "(max |dq| %.2e)\n", ab->name, T, tiles[k].heads, tiles[k].rows, grads, worst, gmax);
                assert_true(worst <= 1e-12);
                assert_true(T == 1 || gmax > 0);   // T = 1: one key, the softmax is constant, dq = 0
                sga_core_output_free(&got);
            }
            sga_core_output_free(&ref);
            sga_core_input_free(&in);
        }
    }
}

// Row i of y depends on q_i, k_0..k_i, v_0..v_i only: changing k and v after position `cut` in
// every head of sequence 0 leaves rows 0..cut of its y bitwise unchanged (and does change row cut + 1).
static const TileSize CHECKED_TILES[2] = {{4, 0}, {0, 3}};   // pairs straddling sequences; rows 0-2, 3-5, 6

static void test_tiled_is_causal(void **state) {
    (void)state;
    const Backend *backends[2] = {backend_cpu_f64(), backend_cpu_f32()};
    for (int run = 0; run < 4; run++) {
        const Backend *be = backends[run % 2];
        TileSize tile = CHECKED_TILES[run / 2];
        int T = 7, cut = 3;
        Config cfg;
        ModelShape s = sga_core_shape(&cfg, NH, T, HS, 1, 0, 1, tile.heads);
        cfg.attention_tile_rows = tile.rows;
        SgaCoreInput in = sga_core_input(&s, B, 300);
        SgaCoreOutput before = sga_core_run(be, &s, &ATTENTION_SGA_TILED, &in, 0);
        sga_core_move_keys_after(&in, cut);
        SgaCoreOutput after = sga_core_run(be, &s, &ATTENTION_SGA_TILED, &in, 0);
        int changed;
        assert_true(sga_core_rows_kept_up_to(&in, before.y, after.y, cut, &changed));
        assert_true(changed);
        printf("# %s, tile_heads %d tile_rows %d: rows 0..%d of every head bitwise unchanged by k, v after position %d\n",
               be->name, tile.heads, tile.rows, cut, cut);
        sga_core_output_free(&before);
        sga_core_output_free(&after);
        sga_core_input_free(&in);
    }
}

// Changing every input of sequence 1 leaves sequence 0's y, dq, dk, dv bitwise unchanged, with
// tiles of 4 pairs (the first tile holds sequence 0's 3 heads and sequence 1's first) and with
// tiles of 3 query rows.
static void test_tiled_keeps_sequences_apart(void **state) {
    (void)state;
    const Backend *backends[2] = {backend_cpu_f64(), backend_cpu_f32()};
    for (int run = 0; run < 4; run++) {
        const Backend *be = backends[run % 2];
        TileSize tile = CHECKED_TILES[run / 2];
        int T = 7;
        Config cfg;
        ModelShape s = sga_core_shape(&cfg, NH, T, HS, 1, 0, 1, tile.heads);
        cfg.attention_tile_rows = tile.rows;
        SgaCoreInput in = sga_core_input(&s, B, 400);
        SgaCoreOutput before = sga_core_run(be, &s, &ATTENTION_SGA_TILED, &in, 1);
        sga_core_change_sequence_1(&in);
        SgaCoreOutput after = sga_core_run(be, &s, &ATTENTION_SGA_TILED, &in, 1);
        int changed;
        assert_true(sga_core_sequence_0_kept(&in, &before, &after, &changed));
        assert_true(changed);
        printf("# %s, tile_heads %d tile_rows %d: sequence 0's y, dq, dk, dv bitwise unchanged by sequence 1's inputs\n",
               be->name, tile.heads, tile.rows);
        sga_core_output_free(&before);
        sga_core_output_free(&after);
        sga_core_input_free(&in);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiled_matches_materialised),
        cmocka_unit_test(test_tiled_is_causal),
        cmocka_unit_test(test_tiled_keeps_sequences_apart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
