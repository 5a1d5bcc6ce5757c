"""What protects a run directory (issue 18, points 1, 2, 3, 4, 5): a refusal holds on every rank under
mpirun, one training at a time per directory (a lock naming its holder), metric rows reach disk
before each checkpoint is published, and a log.txt that cannot be written is reported once."""
import hashlib
import os
import signal

import h5py
from conftest import entrank_error, one_line_error, read_losses, set_args, start_entrank, wait_for

ARGS = ["-c", "configs/tiny.cfg", *set_args("train.steps=12", "train.warmup_steps=2", "checkpoint.every=2", "eval.every=0",
                                           "train.batch_size=16", "train.micro_batch_size=8", "model.n_layer=2",
                                           "eval.batches=1", "checkpoint.keep=2")]


def snapshot(run):
    return {p.relative_to(run): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.rglob("*")) if p.is_file()}


def test_resume_never_on_a_finished_run_is_refused_under_mpirun(entrank, mpirun, tmp_path):
    run = tmp_path / "run"
    entrank("train", *ARGS, "--run-dir", run, check=0)
    before = snapshot(run)
    line = entrank_error(mpirun(2, "train", *ARGS, "--run-dir", run, "--resume", "never"))
    assert str(run / "metrics.h5") in line and "--resume never" in line
    # Nothing changed on disk (the lock file's holder line names the last process to lock it).
    after = snapshot(run)
    lock = before.keys() & {p for p in before if p.name == "lock"}
    assert {k: v for k, v in after.items() if k not in lock} == {k: v for k, v in before.items() if k not in lock}
    entrank("eval", "-c", run / "config.cfg", "--checkpoint", run / "checkpoints" / "step_00000012.h5", check=0)


def start_held(monkeypatch, *args):
    """A training whose finished checkpoints are held 30 s before being published."""
    monkeypatch.setenv("ENTRANK_FAULT_CHECKPOINT_DELAY", "30")
    proc = start_entrank(*args, stdout=open(os.devnull, "w"))
    monkeypatch.delenv("ENTRANK_FAULT_CHECKPOINT_DELAY")
    return proc


def test_a_second_training_on_the_same_directory_is_refused(entrank, tmp_path, monkeypatch):
    run = tmp_path / "run"
    # The first run holds its first finished checkpoint 30 s before publishing it.
    first = start_held(monkeypatch, "train", *ARGS, "--run-dir", run)
    try:
        assert wait_for((run / "checkpoints" / "step_00000002.h5.tmp").exists, 120, 0.1)
        metrics = (run / "metrics.h5").read_bytes()
        line = one_line_error(entrank("train", *ARGS, "--run-dir", run, "--resume", "auto", check=2))
        assert f"{run}/lock: the run directory is in use by another training" in line
        assert f"pid {first.pid}" in line and "host " in line
        assert (run / "metrics.h5").read_bytes() == metrics
    finally:
        first.kill()
        first.wait()
    # The lock dies with its holder: the next run gets past it, and since the killed one never
    # published a checkpoint, starts over at step 0 (run_dir.c's rule).
    proc = entrank("train", *ARGS, "--run-dir", run, "--resume", "auto", check=0)
    assert "starting at step 0" in proc.stdout
    assert list(read_losses(run)[0]) == list(range(12))


def test_rows_before_a_checkpoint_survive_a_kill_after_it(entrank, tmp_path, monkeypatch):
    run = tmp_path / "run"
    args = [*ARGS, *set_args("train.log_every=50")]   # rows would otherwise wait for step 50
    straight = tmp_path / "straight"
    # Started like the held run (one thread): the bitwise comparison is across a kill, not across
    # thread counts, which move OpenBLAS's sums on some CPUs.
    assert start_entrank("train", *args, "--run-dir", straight, stdout=open(os.devnull, "w")).wait() == 0
    proc = start_held(monkeypatch, "train", *args, "--run-dir", run)
    # Killed while checkpoint 4 is held unpublished (checkpoint 2 was published 30 s after it was
    # written): `latest` names step 2, and rows 0 and 1 must already be in metrics.h5.
    try:
        assert wait_for((run / "checkpoints" / "step_00000004.h5.tmp").exists, 120, 0.05)
        assert (run / "checkpoints" / "latest").read_text().strip() == "step_00000002.h5"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert start_entrank("train", *args, "--run-dir", run, "--resume", "auto", stdout=open(os.devnull, "w")).wait() == 0
    steps, loss = read_losses(run)
    assert list(steps) == list(range(12))
    assert loss.tobytes() == read_losses(straight)[1].tobytes()


def test_a_log_that_cannot_be_written_is_reported_once(entrank, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.txt").symlink_to("/dev/full")   # every write fails with ENOSPC
    proc = entrank("train", *ARGS, *set_args("train.log_every=1"), "--run-dir", run, check=0)
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and f"{run}/log.txt: write failed: No space left on device" in lines[0], proc.stderr
    assert "step     11/12" in proc.stdout   # stdout keeps every line
    with h5py.File(run / "metrics.h5", "r") as f:
        assert f["steps/step"].shape == (12,)


def test_a_start_killed_before_its_first_checkpoint_restarts_from_step_0(entrank, tmp_path, monkeypatch):
    """Issue 18 point 4, issue 17: a run directory with metrics but no checkpoint is a failed start,
    not a run to protect: `--resume auto` (a requeued job) starts over at step 0, says so in the log
    and drops the earlier rows, and ends with the uninterrupted run's losses."""
    args = [*ARGS, *set_args("checkpoint.every=0", "train.log_every=1")]   # the only checkpoint: the last step's
    straight = tmp_path / "straight"
    entrank("train", *args, "--run-dir", straight, check=0)
    run = tmp_path / "run"
    proc = start_held(monkeypatch, "train", *args, "--run-dir", run)
    try:   # killed while its first (and last) checkpoint is held unpublished: 12 rows, no `latest`
        assert wait_for((run / "checkpoints" / "step_00000012.h5.tmp").exists, 120, 0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert list(read_losses(run)[0]) == list(range(12)) and not (run / "checkpoints" / "latest").exists()
    done = entrank("train", *args, "--run-dir", run, "--resume", "auto", check=0)
    assert f"{run}/metrics.h5: no checkpoint from the earlier start: starting at step 0, its 12 step rows dropped" in done.stdout
    assert "starting at step 0, its 12 step rows dropped" in (run / "log.txt").read_text()
    steps, loss = read_losses(run)
    assert list(steps) == list(range(12))
    assert loss.tobytes() == read_losses(straight)[1].tobytes()
    # Now the directory holds a run: --resume never refuses it and leaves it alone.
    before = snapshot(run)
    line = one_line_error(entrank("train", *args, "--run-dir", run, "--resume", "never", check=2))
    assert str(run / "metrics.h5") in line and "--resume never" in line and "step_00000012.h5" in line
    assert {k: v for k, v in snapshot(run).items() if k.name != "lock"} == {k: v for k, v in before.items() if k.name != "lock"}


def test_resume_never_starts_over_a_failed_start(entrank, tmp_path):
    """The corrected rerun of a start that failed after metrics.h5 existed (issue 17) may say
    --resume never: there is no checkpoint, so nothing to protect."""
    run = tmp_path / "run"
    # A long start killed after a few steps (rows on disk at every step), before any checkpoint.
    first = start_entrank("train", *ARGS, *set_args("train.steps=5000", "checkpoint.every=0", "train.log_every=1"),
                          "--run-dir", run, stdout=open(os.devnull, "w"))
    try:
        assert wait_for(lambda: "step      3/5000" in ((run / "log.txt").exists() and (run / "log.txt").read_text() or ""), 120, 0.05)
    finally:
        first.kill()
        first.wait()
    assert (run / "metrics.h5").exists() and not (run / "checkpoints" / "latest").exists()
    proc = entrank("train", *ARGS, "--run-dir", run, "--resume", "never", check=0)
    assert "no checkpoint from the earlier start: starting at step 0" in proc.stdout
    assert list(read_losses(run)[0]) == list(range(12))
