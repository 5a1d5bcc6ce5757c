"""The CPU backend's numbers do not depend on how many threads compute them (src/cpu/gemm_tiles.inc,
issue 21): products are cut into tiles by their shape alone and every reduction keeps its order, so a
run with 1, 2 or 3 OpenMP threads (3: more threads than this 2-core machine has) writes the same
losses, gradient norms and final parameters, bit for bit, for the baseline, SGA and R3SI."""
import os
import subprocess

import numpy as np
import pytest

from conftest import BIN, ROOT, read_group, read_params, set_args

STEPS = ("train.steps=3", "train.warmup_steps=1", "eval.every=0", "train.log_every=1")


def run(tmp_path, config, threads, extra=()):
    run_dir = tmp_path / f"{config}-{threads}"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    env.pop("OPENBLAS_NUM_THREADS", None)
    proc = subprocess.run([str(BIN), "train", "-c", f"configs/{config}.cfg", *set_args(*STEPS, *extra),
                           "--run-dir", str(run_dir), "--resume", "never"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    metrics = read_group(run_dir / "metrics.h5", "steps")
    return metrics, run_dir


@pytest.mark.parametrize("config,extra", [
    ("tiny", ()),
    ("tiny-sga", ()),
    # SGA's tiled form: one (sequence, head) pair in 24-row blocks, products cut in tiles, not heads
    # (8 sequences: the blocks are the same at any batch, and 32 made this case a minute long).
    ("tiny-sga", ("attention.fused=true", "attention.tile_rows=24", "train.batch_size=8", "train.micro_batch_size=8")),
    ("tiny-r3si", ("r3si.monitor_every=1",)),
    # Products large enough to be cut in several tiles (the fc layers: 1024 x 512 x 128).
    ("tiny", ("model.d_model=128", "model.seq_len=128", "model.vocab_size=256", "train.batch_size=8",
              "train.micro_batch_size=8", "model.n_layer=2")),
])
def test_one_two_and_three_threads_give_the_same_run(tmp_path, config, extra):
    runs = [run(tmp_path, config, threads, extra) for threads in (1, 2, 3)]
    base, base_dir = runs[0]
    assert len(base["loss"]) == 3 and np.all(np.isfinite(base["loss"])), base
    for metrics, run_dir in runs[1:]:
        for key in ("loss", "grad_norm"):
            np.testing.assert_array_equal(metrics[key], base[key], err_msg=f"{config} {key} {run_dir.name}")
        params, base_params = (read_params(d / "checkpoints" / "step_00000003.h5") for d in (run_dir, base_dir))
        assert params.keys() == base_params.keys() and len(params) > 0
        for name in params:
            np.testing.assert_array_equal(params[name], base_params[name], err_msg=f"{config} {name} {run_dir.name}")
