"""train.device on a machine without a usable GPU (CI): "auto" trains on the CPU after one notice
line in the run's log (never on stderr), "cuda" is bad input: exit 2, one `entrank:` line naming
train.device, nothing written. Holds for builds with and without the CUDA backend; the "no device"
cases skip where nvidia-smi sees a GPU."""
import shutil
import subprocess

import h5py
import pytest
from conftest import entrank_error, entrank_lines, one_line_error


def gpu_visible():
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        proc = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and "GPU" in proc.stdout


no_gpu = pytest.mark.skipif(gpu_visible(), reason="a GPU is visible: the no-device behaviour cannot be observed")

STEPS = ["--set", "train.steps=3", "--set", "train.warmup_steps=1", "--set", "eval.batches=1"]


def notice_lines(text):
    return [l for l in text.splitlines() if l.startswith("device auto:")]


@pytest.fixture(scope="module")
def auto_run(entrank, tmp_path_factory):
    """One short run with train.device = "auto": its directory and the finished process."""
    run = tmp_path_factory.mktemp("auto") / "run"
    proc = entrank("train", "-c", "configs/tiny.cfg", *STEPS, "--set", "train.device=auto", "--run-dir", run, check=0)
    return run, proc


@no_gpu
def test_auto_without_gpu_trains_on_the_cpu_after_one_notice(auto_run):
    run, proc = auto_run
    assert entrank_lines(proc.stderr) == [], proc.stderr
    notices = notice_lines(proc.stdout)
    assert len(notices) == 1, proc.stdout
    assert "running on the CPU" in notices[0]
    assert len(notice_lines((run / "log.txt").read_text())) == 1
    assert "| device cpu (cpu-f32) |" in proc.stdout
    assert len([l for l in proc.stdout.splitlines() if l.startswith("step ")]) >= 1
    with h5py.File(run / "metrics.h5", "r") as f:
        assert f.attrs["device"] == "cpu"
        assert f["steps/loss"].shape == (3,)


def test_cpu_device_prints_no_notice(entrank, tmp_path):
    proc = entrank("train", "-c", "configs/tiny.cfg", *STEPS, "--set", "train.device=cpu", "--run-dir", tmp_path / "run", check=0)
    assert notice_lines(proc.stdout) == []
    with h5py.File(tmp_path / "run" / "metrics.h5", "r") as f:
        assert f.attrs["device"] == "cpu"


def assert_refused(proc):
    line = one_line_error(proc)
    assert line.startswith("entrank:"), proc.stderr
    assert "train.device" in line and '"cuda"' in line, line
    # Either build says why: no CUDA backend in this binary, or no usable device (with the reason).
    assert "no CUDA backend" in line or "no CUDA device is usable (" in line, line


@no_gpu
def test_cuda_without_gpu_is_refused_before_anything_is_written(entrank, tmp_path):
    run = tmp_path / "run"
    proc = entrank("train", "-c", "configs/tiny.cfg", *STEPS, "--set", "train.device=cuda", "--run-dir", run, check=2)
    assert_refused(proc)
    assert not run.exists()
    assert notice_lines(proc.stdout) == []


@no_gpu
def test_cuda_without_gpu_is_refused_once_on_several_ranks(mpirun, tmp_path):
    run = tmp_path / "run"
    proc = mpirun(2, "train", "-c", "configs/tiny.cfg", *STEPS, "--set", "train.device=cuda", "--run-dir", run)
    assert "train.device" in entrank_error(proc)
    assert not run.exists()


@no_gpu
def test_eval_follows_the_same_rules(entrank, auto_run):
    run, _ = auto_run
    checkpoint = run / "checkpoints" / "step_00000003.h5"
    assert checkpoint.exists()
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    proc = entrank("eval", "-c", "configs/tiny.cfg", "--set", "eval.batches=1", "--set", "train.device=cuda",
                   "--checkpoint", checkpoint, check=2)
    assert_refused(proc)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before
    assert notice_lines(proc.stdout) == []
    proc = entrank("eval", "-c", "configs/tiny.cfg", "--set", "eval.batches=1", "--set", "train.device=auto",
                   "--checkpoint", checkpoint, check=0)
    assert entrank_lines(proc.stderr) == [], proc.stderr
    assert len(notice_lines(proc.stdout)) == 1, proc.stdout
    assert "val loss" in proc.stdout
