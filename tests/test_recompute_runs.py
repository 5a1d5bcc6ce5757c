"""train.recompute changes what the forward pass keeps, never the numbers: a few training steps with
"attention" and "block" give bitwise the losses, traces, R3SI and SGA records and checkpoint of
"none", on one rank and on two pipeline stages (docs/design.md section 10)."""
import h5py
import numpy as np
import pytest
from conftest import read_params, set_args, small_model

STEPS = 4
# Datasets that measure the machine, not the model.
TIMING = {"steps/step_ms", "steps/tokens_per_s", "steps/mfu"}

# SGA with R3SI (injection after the monitor of step 0, L_SD) and traces on every other step:
# every reader of the forward activations is exercised.
SGA_R3SI = ["attention.kind=sga", "r3si.enabled=true", "r3si.layers=[1, 2]", "r3si.k=4", "r3si.d_s=4",
            "r3si.monitor_every=2", "r3si.lsd_lambda=0.1", "trace.every=2", "trace.snapshot_layers=[1]"]
CASES = {"sdpa": ["trace.every=2"], "sga_r3si": SGA_R3SI, "sdpa_post": ["model.norm=post", "trace.every=2"],
         "sdpa_fused": ["attention.fused=true", "trace.every=2", "trace.snapshot_layers=[1]"]}


def metrics(run_dir):
    out = {}
    with h5py.File(run_dir / "metrics.h5", "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return {k: v for k, v in out.items() if k not in TIMING}


def train(mpirun, run_dir, ranks, sets):
    args = small_model(4, steps=STEPS, extra=set_args(*sets, f"parallel.pp={ranks}"))
    mpirun(ranks, "train", *args, "--run-dir", run_dir, check=0)
    return metrics(run_dir), read_params(run_dir / "checkpoints" / f"step_{STEPS:08d}.h5")


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("ranks", [1, 2])
def test_every_mode_trains_bitwise_like_none(mpirun, tmp_path, case, ranks):
    ref_metrics, ref_params = train(mpirun, tmp_path / "none", ranks, CASES[case] + ["train.recompute=none"])
    assert len(ref_metrics["steps/loss"]) == STEPS and np.all(np.isfinite(ref_metrics["steps/loss"]))
    assert "trace/attn_entropy" in ref_metrics
    for mode in ["attention", "block"]:
        got_metrics, got_params = train(mpirun, tmp_path / mode, ranks, CASES[case] + [f"train.recompute={mode}"])
        assert got_metrics.keys() == ref_metrics.keys()
        for k in ref_metrics:
            a, b = np.asarray(ref_metrics[k]), np.asarray(got_metrics[k])
            assert a.shape == b.shape and a.tobytes() == b.tobytes(), f"{case}, {ranks} rank(s), {mode}: {k} differs"
        assert got_params.keys() == ref_params.keys()
        for k in ref_params:
            assert ref_params[k].tobytes() == got_params[k].tobytes(), f"{case}, {ranks} rank(s), {mode}: {k} differs"


def test_unknown_mode_is_refused(entrank, tmp_path):
    proc = entrank("train", *small_model(4, steps=2, extra=set_args("train.recompute=layers")), "--run-dir", tmp_path / "r")
    assert proc.returncode == 2
    assert "train.recompute" in proc.stderr and "block" in proc.stderr
