"""Jobs through a real Slurm (issue 8): slurm/submit -> sbatch -> slurm/train.sbatch -> srun/mpirun ->
entrank, on a private single-node cluster (tests/slurm_cluster.py; skipped with the reason only
where Slurm cannot be installed).

Every scenario is submitted at once by the `submitted` fixture: the slow ones spend their time
waiting for Slurm (the --signal window, the requeue delay), not on the CPU, so they overlap and
the module takes about two minutes. The two runs that the time limit must interrupt are
stretched in wall time, not in work: ENTRANK_FAULT_CHECKPOINT_DELAY=1 holds each checkpoint (one
per step) for a second, so 50 steps of a tiny model take about a minute on 2 cores shared with
other work. The losses do not depend on it.

The jobs, their estimates and the reference runs all use one copy of bin/entrank taken at the
start (ENTRANK_BIN), so a rebuild while the module runs cannot mix two binaries in one run.

Slurm sends --signal=USR1@20 of a 1-minute job between 10 and 40 s after the start (it checks
every 30 s and may signal up to that much early), so a run of ~55 s is always interrupted.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import MPI_ENV, ROOT, mpirun_cmd, set_args  # noqa: E402
from slurm_cluster import slurm  # noqa: E402,F401  (the session fixture)

SUBMIT = ROOT / "slurm" / "submit"

# A model that takes ~1 ms a step: the runs' length is the scheduler's, not the CPU's.
SMALL = ["model.n_layer=2", "model.d_model=32", "model.n_head=2", "model.seq_len=32", "train.batch_size=8",
         "train.micro_batch_size=4", "train.warmup_steps=2", "eval.batches=1", "train.log_every=1"]
# 2x2 run of a catalogue twin (configs/tiny-r3si.cfg, whose logic task needs 64 tokens): 4 layers, 2 per stage.
SMALL_2X2 = ["model.n_layer=4", "model.d_model=32", "model.n_head=2", "model.seq_len=64", "train.batch_size=16",
             "train.micro_batch_size=4", "train.steps=20", "train.tokens=0", "train.warmup_steps=2", "eval.batches=1",
             "train.log_every=1"]
SLOW_STEPS = ["checkpoint.every=1", "checkpoint.keep=2"]


def toml_list(items):
    return "[" + ", ".join('"' + i.replace('"', '\\"') + '"' for i in items) + "]"


def write_job(path, name, overrides, run_dir, ranks=2, time_limit='"1"', schedule="", extra=""):
    path.write_text(f"""description = "test job {name}"
name = "t-{name}"
[train]
config = "configs/tiny.cfg"
set = {toml_list(overrides)}
run_dir = "{run_dir}"
[resources]
ranks_per_node = {ranks}
time = {time_limit}
[schedule]
{schedule}
{extra}
""")
    return path


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    path = tmp_path_factory.mktemp("bin") / "entrank"
    shutil.copy2(ROOT / "bin" / "entrank", path)
    return path


def submit(slurm, binary, *args, env_extra=None):
    env = dict(slurm.env, **MPI_ENV, ENTRANK_BIN=str(binary), **(env_extra or {}))
    proc = subprocess.run([sys.executable, str(SUBMIT), "--entrank", str(binary), *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"slurm/submit {args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    ids = re.findall(r"^submitted job (\d+)", proc.stdout, re.M)
    assert ids, proc.stdout
    return ids, proc.stdout


def flops_of(binary, overrides):
    cmd = [str(binary), "info", "-c", "configs/tiny.cfg", *set_args(*overrides)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return float(re.search(r"tokens, ([0-9.eE+-]+) FLOPs", out).group(1))


@pytest.fixture(scope="module")
def submitted(slurm, binary, tmp_path_factory):
    """Submits every scenario; returns {scenario: (job ids, submit's output, run dir, job file)}."""
    base = tmp_path_factory.mktemp("slurm-jobs")
    slow = {"ENTRANK_FAULT_CHECKPOINT_DELAY": "1"}
    jobs = {}

    # 1. Interrupted by the time limit: 1 minute, USR1 20 s before it; the job requeues itself.
    rq = base / "requeue"
    f = write_job(base / "requeue.toml", "requeue", SMALL + SLOW_STEPS + ["train.steps=50"], rq,
                  schedule="signal_lead = 20\nmargin = 20")
    jobs["requeue"] = (*submit(slurm, binary, f, env_extra=slow), rq, f)

    # 2. A chain sized by the estimate: the token budget at the assumed rate takes 60 s, a job has
    #    60 - 20 s of margin = 40 s -> 2 jobs. Ranks started by mpirun (--signal=B:USR1 + forwarding).
    ch = base / "chain"
    chain_sets = SMALL + SLOW_STEPS + ["train.steps=0", "train.tokens=12800"]   # 50 steps of 8 x 32
    peak = flops_of(binary, chain_sets) / (2 * 0.5 * 60.0)
    f = write_job(base / "chain.toml", "chain", chain_sets, ch,
                  schedule='signal_lead = 20\nmargin = 20\nlauncher = "mpirun"',
                  extra=f"[estimate]\nmfu = 0.5\npeak_flops = {peak!r}")
    jobs["chain"] = (*submit(slurm, binary, f, env_extra=slow), ch, f)

    # 3. A local job file of the catalogue (4 ranks, dp 2 x pp 2), made small with --set; then an
    #    evaluation job (slurm/eval.sbatch) that waits for it with --after.
    d22 = base / "local-2x2"
    jobs["2x2"] = (*submit(slurm, binary, ROOT / "jobs/local/r3si/baseline.toml", "--run-dir", d22, *set_args(*SMALL_2X2)),
                   d22, None)
    ev = base / "eval.toml"
    ev.write_text(f'description = "test eval"\nname = "t-eval"\nkind = "eval"\n[resources]\nranks_per_node = 2\n'
                  f'time = "5"\n[eval]\nrun_dir = "{d22}"\n')
    jobs["eval"] = (*submit(slurm, binary, ev, "--after", jobs["2x2"][0][0]), d22, ev)

    # 4. A sweep as a job array: 3 learning rates (standing in for the ADR coefficient grid).
    sw = base / "sweep"
    f = write_job(base / "sweep.toml", "sweep", SMALL + ["train.steps=10"], sw, ranks=1, time_limit='"5"',
                  extra='[sweep]\nkey = "train.lr"\nvalues = [0.001, 0.002, 0.003]')
    jobs["sweep"] = (*submit(slurm, binary, f), sw, f)
    return jobs


def output_of(run_dir):
    return "\n".join(p.read_text(errors="replace") for p in sorted(Path(run_dir).rglob("slurm-*.out")))


def why(recs, run_dir):
    """A failure message: each job's state and exit code, and the end of the jobs' output."""
    states = {j: (r.get("JobState"), r.get("ExitCode"), r.get("Restarts")) for j, r in recs.items()}
    tail = "\n".join(output_of(run_dir).splitlines()[-60:])
    return f"jobs (state, exit, restarts): {states}\n---- end of the jobs' output:\n{tail}"


def reference_run(binary, tmp_path, overrides, ranks=2):
    """The same training, uninterrupted, outside Slurm, on the same topology."""
    run = tmp_path / "reference"
    cmd = mpirun_cmd(ranks, binary, "train", "-c", "configs/tiny.cfg", *set_args(*overrides), "--run-dir", run)
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, **MPI_ENV), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    with h5py.File(run / "metrics.h5", "r") as f:
        return f["steps/loss"][:]


def read_metrics(run_dir):
    with h5py.File(Path(run_dir) / "metrics.h5", "r") as f:
        return f["steps/step"][:], f["steps/loss"][:], f["steps/tokens"][:]


def test_local_2x2_job_runs_to_the_end(slurm, submitted):
    ids, out, run_dir, _ = submitted["2x2"]
    assert "--ntasks-per-node=4" in out and "--set parallel.pp=2" in out, out
    recs = slurm.wait(ids, timeout=240)
    assert [r["JobState"] for r in recs.values()] == ["COMPLETED"], why(recs, run_dir)
    log = output_of(run_dir)
    assert "4 ranks: dp 2 x pp 2" in log, log
    steps, loss, _ = read_metrics(run_dir)
    assert list(steps) == list(range(20)) and np.all(np.isfinite(loss))
    ckpt = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()
    assert ckpt.name == "step_00000020.h5"
    with h5py.File(ckpt, "r") as f:
        assert int(f.attrs["step"]) == 20
        assert f["params/blocks.qkv_w"].shape == (4, 96, 32)
        assert np.all(np.isfinite(f["params/blocks.qkv_w"][...]))
    # The evaluation job ran after it (afterok) on the run's latest checkpoint.
    eids, eout, _, _ = submitted["eval"]
    assert f"--dependency=afterok:{ids[0]}" in eout, eout
    erecs = slurm.wait(eids, timeout=120)
    assert [r["JobState"] for r in erecs.values()] == ["COMPLETED"], why(erecs, run_dir)
    text = (run_dir / "eval.txt").read_text()
    assert re.search(r"val loss [0-9.]+ \| val ppl", text) and "step_00000020.h5" in text, text


def test_time_limit_signal_checkpoints_requeues_and_resumes_bitwise(slurm, submitted, binary, tmp_path):
    ids, out, run_dir, _ = submitted["requeue"]
    assert "--time=00:01:00" in out and "--signal=USR1@20" in out and "--open-mode=append" in out, out
    assert "--no-requeue" not in out
    recs = slurm.wait(ids, timeout=300)
    (rec,) = recs.values()
    log = output_of(run_dir)
    assert rec["JobState"] == "COMPLETED" and int(rec["Restarts"]) >= 1, why(recs, run_dir)
    # The signal interrupted the first run: checkpoint, exit 3, requeue; the rerun resumed from latest.
    stops = [int(s) for s in re.findall(r"stop signal received: checkpointing at step (\d+)", log)]
    resumes = [int(s) for s in re.findall(r"resuming at step (\d+)", log)]
    assert stops and 0 < stops[0] < 50, log
    assert resumes[:len(stops)] == stops, log
    assert "entrank exited with 3" in log and f"requeueing job {ids[0]}" in log, log
    assert "restart 1 on" in log, log      # one output file, appended to across the requeue
    steps, loss, _ = read_metrics(run_dir)
    assert list(steps) == list(range(50)), steps
    ref = reference_run(binary, tmp_path, SMALL + ["train.steps=50"])
    assert loss[-1].tobytes() == ref[-1].tobytes(), (loss[-1], ref[-1])
    assert np.array_equal(loss, ref)


def test_chain_of_two_jobs_reaches_the_token_budget(slurm, submitted, binary, tmp_path):
    ids, out, run_dir, _ = submitted["chain"]
    assert len(ids) == 2, out
    assert re.search(r"# jobs: 2 \(ceil\(60 s / \(00:01:00 - margin 20 s = 40 s\)\)\)", out), out
    assert "--dependency=afterany:$JOB1" in out and "--signal=B:USR1@20" in out, out
    recs = slurm.wait(ids, timeout=300)
    first, second = recs[ids[0]], recs[ids[1]]
    assert first["JobState"] == "COMPLETED" and second["JobState"] == "COMPLETED", why(recs, run_dir)
    assert second["StartTime"] >= first["EndTime"], (first, second)
    log1 = (run_dir / f"slurm-{ids[0]}.out").read_text()
    log2 = (run_dir / f"slurm-{ids[1]}.out").read_text()
    # The first job was stopped by its time limit's signal (through mpirun) and did not requeue.
    assert "got SIGUSR1, forwarding" in log1 and "stop signal received" in log1, log1
    assert "next job of the chain resumes it" in log1, log1
    stop = int(re.search(r"checkpointing at step (\d+)", log1).group(1))
    assert 0 < stop < 50
    assert f"resuming at step {stop}" in log2, log2
    steps, loss, tokens = read_metrics(run_dir)
    assert list(steps) == list(range(50)) and tokens[-1] == 12800.0
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step_00000050.h5"
    ref = reference_run(binary, tmp_path, SMALL + ["train.steps=0", "train.tokens=12800"])
    assert loss[-1].tobytes() == ref[-1].tobytes()


def test_job_array_sweep_makes_one_run_per_point(slurm, submitted):
    ids, out, run_dir, _ = submitted["sweep"]
    assert "--array=0-2" in out and "--sweep train.lr --value 0.001 --value 0.002 --value 0.003" in out, out
    recs = slurm.wait(ids, timeout=240)
    assert len(recs) == 3 and all(r["JobState"] == "COMPLETED" for r in recs.values()), why(recs, run_dir)
    assert sorted(r["ArrayTaskId"] for r in recs.values()) == ["0", "1", "2"]
    finals = []
    for lr in ("0.001", "0.002", "0.003"):
        point = run_dir / f"train.lr={lr}"
        cfg = (point / "config.cfg").read_text()
        m = re.search(r"^\s*lr\s*=\s*([^;]+);", cfg, re.M)
        assert m and float(m.group(1)) == float(lr), cfg
        steps, loss, _ = read_metrics(point)
        assert list(steps) == list(range(10))
        finals.append(loss[-1])
    assert len(set(finals)) == 3   # three different runs, not one run three times
