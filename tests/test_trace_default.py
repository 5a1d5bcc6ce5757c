"""Per-layer traces are on by default (issue 17): `train -c configs/tiny-sga.cfg` with no trace key
writes /trace every trace.every = 50 steps from step 0, and analysis/summarize has entropies to show
(before, the default was 0 and every entropy and rank row of the summary was n/a)."""
import json
import subprocess
import sys

import h5py
import numpy as np

from conftest import ROOT, set_args


def test_a_run_without_trace_keys_has_traces(entrank, tmp_path):
    run = tmp_path / "sga"
    entrank("train", "-c", "configs/tiny-sga.cfg", *set_args("train.steps=52", "train.warmup_steps=2", "train.batch_size=4",
                                                             "train.micro_batch_size=4", "eval.every=0"),
            "--run-dir", run, check=0)
    assert "\n  every = 50;" in (run / "config.cfg").read_text()
    with h5py.File(run / "metrics.h5", "r") as f:
        assert list(f["/trace/step"][:]) == [0, 50]
        e = f["/trace/attn_entropy"][:]
        assert e.shape == (2, 12, 4) and np.all(np.isfinite(e)) and np.all(e > 0)
        assert np.all(np.isfinite(f["/trace/resid_rank"][:]))
    proc = subprocess.run([sys.executable, str(ROOT / "analysis" / "summarize"), str(run), "--json"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    j = json.loads(proc.stdout)
    assert j["entropy"]["collapse_pct"] is not None and "/trace/attn_entropy" not in j.get("missing", [])
