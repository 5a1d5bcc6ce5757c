"""R3SI's injection basis W_s exists at the checkpoint blocks only: checkpoints store it as
(checkpoint layers, d_s, C), and files written before that (W_s stacked over every layer) keep
loading, with the same evaluation and resume."""
import re
import shutil

import h5py
import numpy as np

STEPS = ["--set", "train.steps=6", "--set", "train.warmup_steps=1", "--set", "r3si.monitor_every=2",
         "--set", "eval.every=0", "--set", "checkpoint.every=3", "--set", "model.n_layer=8",
         "--set", "r3si.layers=[3, 5]"]


def val_loss(out):
    return float(re.search(r"val loss ([0-9.]+)", out).group(1))


def to_legacy_layout(src, dst, layers, n_layer):
    """The file as the earlier layout wrote it: W_s (and its AdamW state) over all layers, zeros elsewhere."""
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        del f.attrs["model.attention"]
        f.attrs["format_version"] = 1.0   # the earlier layout's files predate the checksums (version 2)
        for group in ("params", "adam_m", "adam_v"):
            ws = f[f"{group}/blocks.r3si_ws"][...]
            full = np.zeros((n_layer,) + ws.shape[1:], dtype=ws.dtype)
            full[layers] = ws
            del f[f"{group}/blocks.r3si_ws"]
            f[f"{group}/blocks.r3si_ws"] = full


def test_w_s_is_stored_for_checkpoint_layers_and_legacy_files_load(entrank, tmp_path):
    run = tmp_path / "run"
    entrank("train", "-c", "configs/tiny-r3si.cfg", *STEPS, "--run-dir", run, "--resume", "never", check=0)
    ckpt = run / "checkpoints" / "step_00000006.h5"
    with h5py.File(ckpt, "r") as f:
        assert f["params/blocks.r3si_ws"].shape == (2, 8, 64)
        assert f.attrs["model.attention"] == "sdpa"
    info = entrank("info", "-c", "configs/tiny-r3si.cfg", *STEPS, check=0).stdout
    with h5py.File(ckpt, "r") as f:
        stored = sum(f["params"][k].size for k in f["params"] if k != "lm_head")
    assert re.search(r"parameters: (\d+)", info).group(1) == str(stored)   # info counts what is stored

    legacy = tmp_path / "legacy.h5"
    to_legacy_layout(ckpt, legacy, [3, 5], 8)
    a = val_loss(entrank("eval", "-c", run / "config.cfg", "--checkpoint", ckpt, check=0).stdout)
    b = val_loss(entrank("eval", "-c", run / "config.cfg", "--checkpoint", legacy, check=0).stdout)
    assert a == b

    # Resuming from the legacy file at step 3 ends where the run itself ended.
    legacy3 = tmp_path / "legacy3.h5"
    to_legacy_layout(run / "checkpoints" / "step_00000003.h5", legacy3, [3, 5], 8)
    entrank("train", "-c", "configs/tiny-r3si.cfg", *STEPS, "--run-dir", tmp_path / "resumed", "--resume", legacy3, check=0)
    with h5py.File(run / "metrics.h5", "r") as f, h5py.File(tmp_path / "resumed" / "metrics.h5", "r") as g:
        assert f["steps/loss"][-1] == g["steps/loss"][-1]
