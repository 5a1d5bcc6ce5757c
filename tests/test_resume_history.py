"""A resume that changes the config (issue 17): `--resume auto --set train.steps=75` on a finished
60-step run used to move the learning rate without a word and overwrite config.cfg. Now the log
lists what changed and the LR of the resume step under both schedules, config.cfg's previous text
is kept as config.N.cfg, and train.extend offers a constant or re-warmed tail that later resumes
of the extended run follow exactly."""
import math
import re
import shutil

import h5py
import numpy as np
import pytest

from conftest import set_args

LR, MIN_LR, WARMUP = 3e-3, 3e-4, 10   # configs/tiny.cfg's lr and min_lr; a short warmup
BASE = ["train", "-c", "configs/tiny.cfg",
        *set_args("train.batch_size=8", "train.micro_batch_size=8", f"train.warmup_steps={WARMUP}",
                  "eval.every=0", "trace.every=0", "train.log_every=10")]


def cosine(step, total, lr=LR, warmup=WARMUP, start=0):
    """The plain schedule (src/optimizer.c), written again: warmup, then cosine to MIN_LR."""
    if step - start < warmup:
        return lr * (step - start + 1) / warmup
    p = min(1.0, (step - start - warmup) / (total - start - warmup))
    return MIN_LR + (lr - MIN_LR) * 0.5 * (1 + math.cos(math.pi * p))


def lr_rows(run):
    with h5py.File(run / "metrics.h5", "r") as f:
        return f["/steps/step"][:], f["/steps/lr"][:], f["/steps/loss"][:]


@pytest.fixture
def finished(entrank, tmp_path):
    """A finished 60-step run, as in the issue."""
    run = tmp_path / "run"
    entrank(*BASE, "--set", "train.steps=60", "--run-dir", run, check=0)
    return run


def test_changed_steps_are_logged_and_the_previous_config_is_kept(entrank, finished):
    proc = entrank(*BASE, "--set", "train.steps=75", "--run-dir", finished, "--resume", "auto", check=0)
    old, new = cosine(60, 60), cosine(60, 75)
    assert old == pytest.approx(MIN_LR) and new > 2 * old   # the jump the issue saw, now said
    assert "resume at step 60 with a changed config (the previous one is kept as config.1.cfg):" in proc.stdout
    assert "\n  train.steps: 60 -> 75\n" in proc.stdout
    m = re.search(r"learning rate at step 60: ([0-9.e+-]+) under the previous schedule, ([0-9.e+-]+) under this one "
                  r"\(train.extend = \"none\"", proc.stdout)
    assert m, proc.stdout
    assert float(m.group(1)) == pytest.approx(old, rel=1e-4) and float(m.group(2)) == pytest.approx(new, rel=1e-4)
    assert "train.steps: 60 -> 75" in (finished / "log.txt").read_text()
    # Only train.steps differs: no other key is listed.
    assert len(re.findall(r"^  [a-z_.]+: ", proc.stdout, re.M)) == 1, proc.stdout
    assert re.search(r"^  steps = 60;", (finished / "config.1.cfg").read_text(), re.M)
    assert re.search(r"^  steps = 75;", (finished / "config.cfg").read_text(), re.M)
    steps, lr, _ = lr_rows(finished)
    assert list(steps) == list(range(75))
    np.testing.assert_allclose(lr[60:], [cosine(s, 75) for s in range(60, 75)], rtol=1e-12)
    # A second change is kept as config.2.cfg; the first stays.
    entrank(*BASE, "--set", "train.steps=80", "--run-dir", finished, check=0)
    assert re.search(r"^  steps = 75;", (finished / "config.2.cfg").read_text(), re.M)
    assert re.search(r"^  steps = 60;", (finished / "config.1.cfg").read_text(), re.M)


def test_unchanged_resume_keeps_no_copy_and_says_nothing(entrank, finished):
    proc = entrank(*BASE, "--set", "train.steps=60", "--run-dir", finished, check=0)
    assert "changed config" not in proc.stdout and not (finished / "config.1.cfg").exists()


def test_constant_tail_keeps_the_lr_reached(entrank, finished):
    proc = entrank(*BASE, *set_args("train.steps=75", "train.extend=constant"), "--run-dir", finished, check=0)
    assert "\n  train.extend: \"none\" -> \"constant\"\n" in proc.stdout
    assert '(train.extend = "constant" from step 60)' in proc.stdout
    _, lr, _ = lr_rows(finished)
    np.testing.assert_allclose(lr[:60], [cosine(s, 60) for s in range(60)], rtol=1e-12)
    np.testing.assert_allclose(lr[60:], MIN_LR, rtol=1e-12)
    text = (finished / "config.cfg").read_text()
    assert re.search(r"^  extend_step = 60;", text, re.M) and re.search(r"^  extend_lr = 0\.0003;", text, re.M)


def test_rewarm_tail_and_a_later_resume_follows_it_bitwise(entrank, finished, tmp_path):
    args = [*BASE, *set_args("train.steps=80", "train.extend=rewarm", "checkpoint.every=5", "checkpoint.keep=10")]
    entrank(*args, "--run-dir", finished, check=0)
    _, lr, loss = lr_rows(finished)
    # Re-warm from MIN_LR (reached at step 60) to LR over min(warmup 10, 20 / 2) steps, then cosine to 80.
    want = [MIN_LR + (LR - MIN_LR) * (s - 60 + 1) / 10 if s < 70 else cosine(s, 80, start=60) for s in range(60, 80)]
    np.testing.assert_allclose(lr[60:], want, rtol=1e-12)
    # The same command resumed from the extended run's step-70 checkpoint (a requeue): the
    # checkpoint's tail is inherited, so steps 70-79 repeat bit for bit and nothing is reported.
    again = tmp_path / "again"
    proc = entrank(*args, "--run-dir", again, "--resume", finished / "checkpoints" / "step_00000070.h5", check=0)
    assert "changed config" not in proc.stdout
    _, lr2, loss2 = lr_rows(again)
    assert lr2.tobytes() == lr[70:].tobytes() and loss2.tobytes() == loss[70:].tobytes()
    assert re.search(r"^  extend_step = 60;", (again / "config.cfg").read_text(), re.M)
