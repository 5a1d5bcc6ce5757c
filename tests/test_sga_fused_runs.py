"""attention.fused for SGA (the tiled form, src/sga_tiled.c): a tiny-sga run trains like the
materialised form (losses, traces and final parameters to fp32 tolerance: only the order of the gate
gradients' sums over tiles differs), with tiles of whole (sequence, head) pairs and with tiles of
query rows; the tiled form gives bitwise the same run under every train.recompute mode, and its
checkpoint evaluates to the same loss in either form."""
import re

import h5py
import numpy as np
from conftest import read_params, set_args

STEPS = 4
# configs/tiny-sga.cfg cut to 3 blocks and 8 sequences a step; traces with a snapshot on steps 0 and 2.
TINY_SGA = ["-c", "configs/tiny-sga.cfg", *set_args(
    "model.n_layer=3", f"train.steps={STEPS}", "train.batch_size=8", "train.micro_batch_size=4", "train.warmup_steps=2",
    "train.log_every=1", "eval.batches=1", "trace.every=2", "trace.snapshot_layers=[1]")]
# 4 sequences x 4 heads = 16 pairs per micro-batch: tiles of 3 straddle sequences and leave a remainder.
FUSED = ["attention.fused=true", "attention.tile_heads=3"]
# T = 64 in blocks of 24 query rows: 24, 24, 16.
FUSED_ROWS = ["attention.fused=true", "attention.tile_rows=24"]
TIMING = {"steps/step_ms", "steps/tokens_per_s", "steps/mfu"}


def metrics(run_dir):
    out = {}
    with h5py.File(run_dir / "metrics.h5", "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return {k: v for k, v in out.items() if k not in TIMING}


def train(entrank, run_dir, sets):
    entrank("train", *TINY_SGA, *set_args(*sets), "--run-dir", run_dir, check=0)
    return metrics(run_dir), read_params(run_dir / "checkpoints" / f"step_{STEPS:08d}.h5")


def val_loss(out):
    return float(re.search(r"val loss ([0-9.]+)", out).group(1))


def test_fused_sga_trains_like_the_materialised_form(entrank, tmp_path):
    ref_metrics, ref_params = train(entrank, tmp_path / "materialised", [])
    assert "sga/stats" in ref_metrics and "snapshot/attn" in ref_metrics and "trace/attn_entropy" in ref_metrics
    fused = {}
    for mode in ["none", "attention", "block"]:
        fused[mode] = train(entrank, tmp_path / f"fused-{mode}", FUSED + [f"train.recompute={mode}"])
    fused["rows"] = train(entrank, tmp_path / "fused-rows", FUSED_ROWS)
    for tiles in ["none", "rows"]:
        got_metrics, got_params = fused[tiles]
        assert got_metrics.keys() == ref_metrics.keys()
        loss_ref, loss = ref_metrics["steps/loss"], got_metrics["steps/loss"]
        assert len(loss) == STEPS and np.all(np.isfinite(loss))
        print(tiles, "losses", loss_ref, loss, "max rel", np.max(np.abs(loss - loss_ref) / np.abs(loss_ref)))
        np.testing.assert_allclose(loss, loss_ref, rtol=1e-5, atol=0)
        # Everything else the run records (traces, evaluation, SGA stats, snapshots): fp32 tolerance.
        for k in ref_metrics:
            a, b = np.asarray(ref_metrics[k]), np.asarray(got_metrics[k])
            assert a.shape == b.shape, k
            if a.dtype.kind == "f":
                np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5, equal_nan=True, err_msg=f"{tiles}: {k}")
            else:
                assert np.array_equal(a, b), k
        assert got_params.keys() == ref_params.keys()
        for k in ref_params:
            np.testing.assert_allclose(got_params[k], ref_params[k], rtol=1e-4, atol=1e-5, err_msg=f"{tiles}: {k}")
    got_metrics, got_params = fused["none"]
    # The tiled form under train.recompute: the same ops on the same inputs, bitwise.
    for mode in ["attention", "block"]:
        m, p = fused[mode]
        for k in got_metrics:
            assert np.asarray(m[k]).tobytes() == np.asarray(got_metrics[k]).tobytes(), f"recompute={mode}: {k} differs"
        for k in got_params:
            assert p[k].tobytes() == got_params[k].tobytes(), f"recompute={mode}: {k} differs"

    # The fused run's checkpoint in the materialised form and back: the same validation loss.
    ckpt = tmp_path / "fused-none" / "checkpoints" / f"step_{STEPS:08d}.h5"
    cfg = tmp_path / "fused-none" / "config.cfg"
    as_fused = val_loss(entrank("eval", "-c", cfg, "--checkpoint", ckpt, check=0).stdout)
    as_materialised = val_loss(entrank("eval", "-c", cfg, "--checkpoint", ckpt, *set_args("attention.fused=false"), check=0).stdout)
    print("val loss fused", as_fused, "materialised", as_materialised)
    assert abs(as_fused - as_materialised) <= 1e-5 * abs(as_materialised)
    # ...and the materialised run's checkpoint in the tiled form.
    ckpt = tmp_path / "materialised" / "checkpoints" / f"step_{STEPS:08d}.h5"
    cfg = tmp_path / "materialised" / "config.cfg"
    a = val_loss(entrank("eval", "-c", cfg, "--checkpoint", ckpt, check=0).stdout)
    b = val_loss(entrank("eval", "-c", cfg, "--checkpoint", ckpt, *set_args(*FUSED), check=0).stdout)
    assert abs(a - b) <= 1e-5 * abs(a)


def test_bad_tile_sizes_are_refused(entrank, tmp_path):
    # 4 sequences x 4 heads: 17 pairs per tile cannot be.
    proc = entrank("train", *TINY_SGA, *set_args("attention.fused=true", "attention.tile_heads=17"), "--run-dir", tmp_path / "r")
    assert proc.returncode == 2 and "attention.tile_heads" in proc.stderr, proc.stderr
    proc = entrank("train", *TINY_SGA, *set_args("attention.fused=true", "attention.tile_heads=-1"), "--run-dir", tmp_path / "s")
    assert proc.returncode == 2 and "attention.tile_heads" in proc.stderr, proc.stderr
    # 65 query rows of a 64-token sequence; rows and pairs at once.
    proc = entrank("train", *TINY_SGA, *set_args("attention.fused=true", "attention.tile_rows=65"), "--run-dir", tmp_path / "t")
    assert proc.returncode == 2 and "attention.tile_rows: 65" in proc.stderr, proc.stderr
    proc = entrank("train", *TINY_SGA, *set_args("attention.fused=true", "attention.tile_rows=8", "attention.tile_heads=2"),
                   "--run-dir", tmp_path / "u")
    assert proc.returncode == 2 and "attention.tile_rows: 8 with attention.tile_heads 2" in proc.stderr, proc.stderr
    for d in "tu":
        assert not (tmp_path / d).exists()
