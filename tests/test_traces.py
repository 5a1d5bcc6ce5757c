"""Per-layer traces in metrics.h5: the same on every topology, readable while the run goes on,
attributes visible to h5dump (docs/metrics-schema.md)."""
import os
import subprocess
import time

import h5py
import numpy as np
from conftest import small_model, start_entrank

TRACE_KEYS = ["attn_entropy_bh", "attn_entropy", "head_redundancy", "attn_eff_rank", "resid_rank", "token_cos",
              "grad_diversity"]


def traced(layers=5, steps=4, extra=()):
    return small_model(layers, steps=steps, extra=["--set", "trace.every=2", *extra])


def read_traces(run):
    with h5py.File(run / "metrics.h5", "r") as f:
        out = {k: f["trace"][k][...] for k in TRACE_KEYS}
        out["step"] = f["trace/step"][...]
        for k in ("alpha", "stats", "gate_band"):
            if "sga" in f:
                out["sga/" + k] = f["sga"][k][...]
        if "snapshot" in f:
            out["snapshot/attn"] = f["snapshot/attn"][...].astype(np.float64)
            out["snapshot/step"] = f["snapshot/step"][...]
            out["snapshot/layer"] = f["snapshot/layer"][...]
        return out


def test_traces_are_the_same_on_1x1_and_2x2(mpirun, tmp_path):
    # Snapshots of layers 1 and 4: under pp = 2 each is taken by another stage.
    sga = ["--set", "attention.kind=sga", "--set", "trace.snapshot_layers=[1, 4]"]
    mpirun(1, "train", *traced(extra=sga), "--run-dir", tmp_path / "a", check=0)
    mpirun(4, "train", *traced(extra=sga + ["--set", "parallel.pp=2"]), "--run-dir", tmp_path / "b", check=0)
    a, b = read_traces(tmp_path / "a"), read_traces(tmp_path / "b")
    assert list(a["step"]) == [0, 2]
    L, B, H = 5, 2, 2
    assert a["attn_entropy_bh"].shape == (2, L, B, H) and a["resid_rank"].shape == (2, L + 1)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-7, err_msg=k)
    # values in their ranges: entropy below ln T, cosines in [-1, 1], ranks in (0, d_model]
    assert np.all(a["attn_entropy"] > 0) and np.all(a["attn_entropy"] < np.log(32))
    assert np.all(np.abs(a["head_redundancy"]) <= 1 + 1e-9)
    assert np.all(a["resid_rank"] > 0) and np.all(a["resid_rank"] <= 32)
    assert np.all((a["sga/alpha"] >= 0) & (a["sga/alpha"] <= 1))
    # Attention snapshots: (rows, layers, heads, T, T) causal maps whose rows sum to 1 (float16).
    snap = a["snapshot/attn"]
    assert snap.shape == (2, 2, H, 32, 32) and list(a["snapshot/step"]) == [0, 2] and list(a["snapshot/layer"]) == [1, 4]
    assert np.all(np.triu(snap, 1) == 0)
    np.testing.assert_allclose(snap.sum(axis=-1), 1.0, atol=1e-2)


def test_snapshot_layers_are_validated(entrank):
    for value, why, every in [("[5]", "block 5 does not exist in a 5-layer model", 2),
                              ("[3, 1]", "distinct and ascending", 2), ("[1]", "set trace.every > 0", 0)]:
        p = entrank("train", *traced(extra=["--set", f"trace.snapshot_layers={value}", "--set", f"trace.every={every}"]),
                    "--run-dir", "/tmp/never-created")
        assert p.returncode == 2 and "trace.snapshot_layers" in p.stderr and why in p.stderr, p.stderr
    assert not os.path.exists("/tmp/never-created")


def test_metrics_can_be_read_while_the_run_goes_on(tmp_path):
    run = tmp_path / "run"
    proc = start_entrank("train", *traced(steps=400, extra=["--set", "train.log_every=5"]), "--run-dir", run,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lengths = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(set(lengths)) < 3:
            try:
                with h5py.File(run / "metrics.h5", "r") as f:
                    if "steps/loss" in f:
                        lengths.append(f["steps/loss"].shape[0])
            except OSError:
                pass                       # between a flush's open and close: try again
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before the reads"
    finally:
        proc.kill()
        proc.wait()
    # The series grew while the run was going, and every read saw a consistent file.
    assert len(set(lengths)) >= 3 and lengths == sorted(lengths)


def test_h5dump_shows_the_attributes(entrank, tmp_path):
    entrank("train", *traced(), "--run-dir", tmp_path / "run", check=0)
    out = subprocess.run(["h5dump", "-H", str(tmp_path / "run" / "metrics.h5")], capture_output=True, text=True).stdout
    for needle in ('ATTRIBUTE "description"', 'ATTRIBUTE "units"', 'ATTRIBUTE "config"', 'ATTRIBUTE "revision"',
                   'DATASET "attn_entropy_bh"', 'ATTRIBUTE "axis1_layer"'):
        assert needle in out, needle


def test_every_axis_is_a_dimension_scale(entrank, tmp_path):
    """netCDF-4 readers (h5netcdf, hence xarray) accept a dataset only if all or none of its axes
    are dimension scales: in the trainer's file every axis of every dataset has one, labelled."""
    run = tmp_path / "run"
    entrank("train", *traced(extra=["--set", "attention.kind=sga", "--set", "trace.snapshot_layers=[2]"]),
            "--run-dir", run, check=0)
    with h5py.File(run / "metrics.h5", "r") as f:
        seen = []

        def check(name, obj):
            if not isinstance(obj, h5py.Dataset) or h5py.h5ds.is_scale(obj.id):
                return
            seen.append("/" + name)
            for k, dim in enumerate(obj.dims):
                assert len(dim) == 1, f"/{name} axis {k}: {len(dim)} scales"
                assert dim.label, f"/{name} axis {k} has no label"
                assert dim[0].shape == (obj.shape[k],) or k == 0, f"/{name} axis {k}"
        f.visititems(check)
        assert {"/eval/task_acc", "/trace/attn_entropy_bh", "/sga/stats", "/snapshot/attn", "/steps/loss"} <= set(seen)
        assert [d.label for d in f["/eval/task_acc"].dims] == ["step", "bucket"]
        assert list(f["/sga/step"][:]) == list(f["/trace/step"][:]) == [0, 2]


def test_resume_drops_trace_rows_after_the_checkpoint(entrank, tmp_path):
    """A run resumed from step 3 recomputes steps 3-5: their trace, SGA and snapshot rows are
    written once, not twice."""
    run = tmp_path / "run"
    args = traced(steps=6, extra=["--set", "attention.kind=sga", "--set", "trace.every=1", "--set", "trace.snapshot_layers=[1]",
                                  "--set", "checkpoint.every=3"])
    entrank("train", *args, "--run-dir", run, check=0)
    entrank("train", *args, "--run-dir", run, "--resume", run / "checkpoints" / "step_00000003.h5", check=0)
    with h5py.File(run / "metrics.h5", "r") as f:
        for group in ("steps", "trace", "sga", "snapshot"):
            assert list(f[group + "/step"][:]) == [0, 1, 2, 3, 4, 5], group
        assert f["trace/attn_entropy"].shape[0] == f["snapshot/attn"].shape[0] == 6
