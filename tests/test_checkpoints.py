"""Parallel-HDF5 checkpoints: logical shapes, exact resume, any topology, atomic under kills,
signals, and refusal of bad files (docs/checkpoint-format.md, docs/faults.md)."""
import os
import shutil
import signal
import time

import h5py
import numpy as np
import pytest
from conftest import child_pids, entrank_error, read_losses, read_params, small_model, wait_for


def run_args(pp=1, steps=20, extra=()):
    return small_model(5, steps=steps, extra=["--set", f"parallel.pp={pp}", "--set", "checkpoint.keep=50", *extra])


def test_every_tensor_has_its_logical_shape(mpirun, tmp_path):
    mpirun(4, "train", *run_args(pp=2, steps=4), "--set", "checkpoint.every=2", "--run-dir", tmp_path / "run", check=0)
    ckpt = tmp_path / "run" / "checkpoints"
    assert (ckpt / "latest").read_text().strip() == "step_00000004.h5"
    L, C, T, V, H = 5, 32, 32, 64, 128
    expected = {"wte": (V, C), "wpe": (T, C), "lnf_w": (C,), "lnf_b": (C,),
                "blocks.ln1_w": (L, C), "blocks.ln1_b": (L, C), "blocks.qkv_w": (L, 3 * C, C), "blocks.qkv_b": (L, 3 * C),
                "blocks.attproj_w": (L, C, C), "blocks.attproj_b": (L, C), "blocks.ln2_w": (L, C), "blocks.ln2_b": (L, C),
                "blocks.fc_w": (L, H, C), "blocks.fc_b": (L, H), "blocks.fcproj_w": (L, C, H), "blocks.fcproj_b": (L, C)}
    with h5py.File(ckpt / "step_00000004.h5", "r") as f:
        for group in ("params", "adam_m", "adam_v"):
            assert {k: f[group][k].shape for k in f[group]} == expected
        assert f.attrs["step"] == 4 and f.attrs["dp"] == 2 and f.attrs["pp"] == 2
        assert "n_layer = 5" in f.attrs["config"]
        # LayerNorm weights start at 1 and every layer was written by its own stage.
        assert np.all(np.abs(f["params/blocks.ln1_w"][...] - 1) < 0.1)
        assert np.all(f["adam_v/blocks.qkv_w"][...] >= 0) and np.all(np.any(f["adam_v/blocks.qkv_w"][...] > 0, axis=(1, 2)))
    assert not list(ckpt.glob("*.tmp"))


def test_resume_reproduces_an_uninterrupted_run(mpirun, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    mpirun(1, "train", *run_args(), "--run-dir", straight, check=0)
    mpirun(1, "train", *run_args(), "--set", "checkpoint.every=10", "--run-dir", split, check=0)
    # Throw away everything after step 10 and resume from there.
    os.remove(split / "checkpoints" / "step_00000020.h5")
    (split / "checkpoints" / "latest").write_text("step_00000010.h5\n")
    proc = mpirun(1, "train", *run_args(), "--run-dir", split, "--resume", "auto", check=0)
    assert "resuming at step 10" in proc.stdout
    # metrics.h5 continues the series: the rows of steps 10-19 of the first run were dropped.
    steps_a, loss_a = read_losses(straight)
    steps_b, loss_b = read_losses(split)
    assert list(steps_b) == list(range(20))
    assert loss_a.tobytes() == loss_b.tobytes()
    a = read_params(straight / "checkpoints" / "step_00000020.h5")
    b = read_params(split / "checkpoints" / "step_00000020.h5")
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k      # bitwise on the same topology


@pytest.mark.parametrize("dp,pp,zero", [(1, 4, 0), (4, 1, 1), (1, 1, 0)])
def test_checkpoint_from_2x2_resumes_on_other_topologies(mpirun, tmp_path, dp, pp, zero):
    src = tmp_path / "src"
    mpirun(4, "train", *run_args(pp=2), "--set", "checkpoint.every=10", "--set", "parallel.zero=1", "--run-dir", src, check=0)
    final = read_params(src / "checkpoints" / "step_00000020.h5")
    dst = tmp_path / "dst"
    (dst / "checkpoints").mkdir(parents=True)
    shutil.copy(src / "checkpoints" / "step_00000010.h5", dst / "checkpoints")
    mpirun(dp * pp, "train", *run_args(pp=pp), "--set", f"parallel.zero={zero}", "--run-dir", dst,
           "--resume", dst / "checkpoints" / "step_00000010.h5", check=0)
    _, loss_src = read_losses(src)
    _, loss_dst = read_losses(dst)
    np.testing.assert_allclose(loss_dst, loss_src[10:], rtol=1e-5, atol=0)
    got = read_params(dst / "checkpoints" / "step_00000020.h5")
    for k in final:
        assert np.abs(got[k] - final[k]).max() <= 1e-5, k


def test_eval_reads_a_checkpoint_on_any_topology(mpirun, tmp_path):
    mpirun(4, "train", *run_args(pp=2, steps=6), "--run-dir", tmp_path / "run", check=0)
    ckpt = tmp_path / "run" / "checkpoints" / "step_00000006.h5"
    outs = []
    for n, pp in [(1, 1), (4, 2), (3, 3)]:
        proc = mpirun(n, "eval", *run_args(pp=pp, steps=6), "--checkpoint", ckpt, check=0)
        line = [l for l in proc.stdout.splitlines() if l.startswith("val loss")]
        assert len(line) == 1
        outs.append(float(line[0].split()[2]))
    log_val = [l for l in (tmp_path / "run" / "log.txt").read_text().splitlines() if l.startswith("eval step 5")]
    assert np.allclose(outs, outs[0], rtol=1e-6)
    assert abs(outs[0] - float(log_val[0].split("val loss")[1].split()[0])) < 1e-6


def test_sigkill_while_writing_leaves_the_previous_checkpoint(mpirun, tmp_path):
    run = tmp_path / "run"
    # The fault hook holds each finished .tmp file for 30 s before publishing it.
    proc = mpirun(2, "train", *run_args(steps=40), "--set", "checkpoint.every=2", "--run-dir", run, popen=True,
                  env_extra={"ENTRANK_FAULT_CHECKPOINT_DELAY": "30"})
    ckpt = run / "checkpoints"
    wait_for((ckpt / "step_00000002.h5.tmp").exists, 120, 0.1)
    time.sleep(0.5)
    ranks = child_pids(proc.pid)
    assert ranks, "no rank of the mpirun found"
    os.kill(ranks[0], signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert (ckpt / "step_00000002.h5.tmp").exists() and not (ckpt / "latest").exists()
    # First checkpoint published, second being written when killed:
    proc = mpirun(2, "train", *run_args(steps=6), "--set", "checkpoint.every=2", "--run-dir", tmp_path / "run2", popen=True,
                  env_extra={"ENTRANK_FAULT_CHECKPOINT_DELAY": "0"})
    proc.wait(timeout=120)
    ck2 = tmp_path / "run2" / "checkpoints"
    assert (ck2 / "latest").read_text().strip() == "step_00000006.h5"
    # Simulate the kill of a later write: a torn .tmp next to a complete latest.
    (ck2 / "step_00000008.h5.tmp").write_bytes((ck2 / "step_00000006.h5").read_bytes()[:5000])
    os.remove(ck2 / "step_00000006.h5")
    (ck2 / "latest").write_text("step_00000004.h5\n")
    out = mpirun(2, "train", *run_args(steps=8), "--set", "checkpoint.every=2", "--run-dir", tmp_path / "run2",
                 "--resume", "auto", check=0).stdout
    assert "loaded" in out and "step_00000004.h5" in out and "resuming at step 4" in out


def test_sigusr1_checkpoints_exits_3_and_resume_finishes_the_same(mpirun, tmp_path):
    straight = tmp_path / "straight"
    mpirun(4, "train", *run_args(pp=2, steps=200), "--run-dir", straight, check=0)
    run = tmp_path / "run"
    proc = mpirun(4, "train", *run_args(pp=2, steps=200), "--run-dir", run, popen=True)
    # Signal once a few steps are done (rows are flushed at each log line).
    def two_rows():
        try:
            with h5py.File(run / "metrics.h5", "r", locking=False) as f:
                return "steps/loss" in f and f["steps/loss"].shape[0] >= 2
        except (OSError, KeyError):
            return False

    wait_for(two_rows, 60, 0.05)
    for pid in child_pids(proc.pid):
        os.kill(pid, signal.SIGUSR1)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    latest = (run / "checkpoints" / "latest").read_text().strip()
    stopped_at = int(latest[5:13])
    assert 0 < stopped_at < 200, out
    assert f"checkpointing at step {stopped_at}" in out
    with h5py.File(run / "checkpoints" / latest, "r") as f:
        assert f.attrs["step"] == stopped_at
    mpirun(4, "train", *run_args(pp=2, steps=200), "--run-dir", run, "--resume", "auto", check=0)
    _, a = read_losses(straight)
    steps, b = read_losses(run)
    assert b[-1] == a[-1]                                  # same final loss, bitwise (same topology)


def corrupt_cases(src, tmp_path):
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    missing = tmp_path / "missing.h5"
    shutil.copy(src, missing)
    with h5py.File(missing, "r+") as f:
        del f["adam_v/blocks.fc_w"]
    return trunc, missing


def test_bad_checkpoints_are_refused_and_nothing_is_touched(mpirun, tmp_path):
    mpirun(1, "train", *run_args(steps=4), "--run-dir", tmp_path / "run", check=0)
    src = tmp_path / "run" / "checkpoints" / "step_00000004.h5"
    trunc, missing = corrupt_cases(src, tmp_path)
    before = {p: p.read_bytes() for p in (src, trunc, missing)}
    cases = [
        (trunc, [], f"{trunc}: not a readable HDF5 file"),
        (missing, [], f"{missing}: missing dataset /adam_v/blocks.fc_w"),
        (src, ["--set", "model.d_model=64"], f"{src}: model.d_model is 32 in the checkpoint but 64 in the config"),
    ]
    for path, extra, message in cases:
        dst = tmp_path / f"dst_{path.stem}_{len(extra)}"
        proc = mpirun(2, "train", *run_args(steps=8), *extra, "--run-dir", dst, "--resume", path, timeout=120)
        assert message in entrank_error(proc), proc.stderr
        assert not (dst / "metrics.h5").exists() and not (dst / "checkpoints").exists()
    for p, data in before.items():
        assert p.read_bytes() == data
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "step_00000004.h5"


@pytest.mark.parametrize("mode", ["attention", "loss"])
def test_eval_uses_the_attention_temperature_the_weights_were_trained_at(entrank, tmp_path, mode):
    # A steep schedule: at the last step the logits are divided by about 1.8 ("attention"), or the
    # loss is ("loss": then evaluation divides nothing). eval must reproduce training's last evaluation.
    temp = ["--set", f'temperature.mode="{mode}"', "--set", "temperature.beta=0.8", "--set", "temperature.gamma=1"]
    entrank("train", *run_args(steps=6, extra=temp), "--run-dir", tmp_path / "run", check=0)
    proc = entrank("eval", "--checkpoint", tmp_path / "run", check=0)
    line = [l for l in proc.stdout.splitlines() if l.startswith("val loss")]
    log_val = [l for l in (tmp_path / "run" / "log.txt").read_text().splitlines() if l.startswith("eval step 5")]
    assert len(line) == 1 and len(log_val) == 1
    assert abs(float(line[0].split()[2]) - float(log_val[0].split("val loss")[1].split()[0])) < 1e-6
