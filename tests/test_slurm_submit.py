"""slurm/submit without a cluster (issue 8): --dry-run of the full-scale jobs of both posts (the sbatch
calls and the time estimate), the whole job catalogue, bad job files, and --local."""
import math
import re
import subprocess
import sys
from pathlib import Path

import h5py

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import MPI_ENV, ROOT, load_source, set_args  # noqa: E402

SUBMIT = ROOT / "slurm" / "submit"
JOBS = ROOT / "jobs"


def run_submit(*args, env=None, timeout=300):
    import os
    proc = subprocess.run([sys.executable, str(SUBMIT), *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, **(env or {})))
    return proc


def load_submit():
    return load_source("entrank_submit", SUBMIT)


def info_flops(config, *overrides):
    cmd = [str(ROOT / "bin" / "entrank"), "info", "-c", config, *set_args(*overrides)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    m = re.search(r"training: (\d+) steps x (\d+) sequences x (\d+) tokens = ([0-9.eE+-]+) tokens, ([0-9.eE+-]+) FLOPs", out)
    return int(m.group(1)), int(m.group(2)), int(m.group(3)), float(m.group(4)), float(m.group(5))


def sbatch_lines(out):
    return [l for l in out.splitlines() if re.match(r"JOB\d+=\$\(sbatch ", l)]


def estimate_hours(out):
    m = re.search(r"^# estimate: .* = ([0-9.]+) (s|min|h|days) wall time", out, re.M)
    assert m, out
    return float(m.group(1)) * {"s": 1 / 3600, "min": 1 / 60, "h": 1, "days": 24}[m.group(2)]


def test_help():
    proc = run_submit("--help")
    assert proc.returncode == 0 and "--dry-run" in proc.stdout and "chain" in proc.stdout


def test_dry_run_r3si_full_scale_is_a_chain_of_64_gpu_jobs():
    proc = run_submit("--dry-run", "jobs/r3si/r3si.toml")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    # 100B tokens of 512 x 2048 at 64 x 312 TFLOP/s x MFU 0.35.
    steps, batch, seq, tokens, flops = info_flops("configs/r3si/32l/r3si.cfg")
    assert (batch, seq, tokens) == (512, 2048, 1e11) and steps == math.ceil(1e11 / (512 * 2048))
    want_h = flops / (64 * 312e12 * 0.35) / 3600
    assert abs(estimate_hours(out) - want_h) / want_h < 0.01, out
    assert f"budget: {steps} steps x 512 sequences x 2048 tokens = 1e+11 tokens" in out
    lines = sbatch_lines(out)
    n = math.ceil(want_h * 3600 / (24 * 3600 - 1800))
    assert len(lines) == n == 3, out
    for i, line in enumerate(lines, 1):
        for opt in ("--nodes=8", "--ntasks-per-node=8", "--gpus-per-node=8", "--time=1-00:00:00", "--signal=USR1@900",
                    "--requeue", "--open-mode=append", "slurm/train.sbatch --launcher srun --run-dir runs/r3si/r3si",
                    "-c configs/r3si/32l/r3si.cfg", "--set train.device=cuda"):
            assert opt in line, (opt, line)
        assert ("--dependency=afterany:$JOB%d" % (i - 1) in line) == (i > 1), line
        # Every job but the last leaves the requeue to the next job of the chain.
        assert ("--no-requeue" in line) == (i < n), line
    assert "# jobs: 3 (ceil(47.3 h / (1-00:00:00 - margin 30.0 min = 23.5 h)))" in out, out


def test_dry_run_sga_full_scale_is_one_8_gpu_job():
    proc = run_submit("--dry-run", "jobs/sga/sga.toml", "jobs/sga/sdpa.toml")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    blocks = out.split("\n\n")
    for block, config in zip(blocks, ("configs/sga/sga.cfg", "configs/sga/sdpa.cfg")):
        # The estimate is entrank info's FLOPs (SGA's own included).
        steps, batch, seq, tokens, flops = info_flops(config)
        assert (steps, batch, seq) == (100000, 256, 512)
        assert "budget: 100000 steps x 256 sequences x 512 tokens" in block
        want_h = flops / (8 * 312e12 * 0.35) / 3600
        assert abs(estimate_hours(block) - want_h) / want_h < 0.01, block
    lines = sbatch_lines(out)
    assert len(lines) == 2, out   # one job per run: ~10 h fits a 24 h limit
    sga, sdpa = lines
    for line in lines:
        for opt in ("--nodes=1", "--ntasks-per-node=8", "--gpus-per-node=8", "--signal=USR1@600", "--requeue",
                    "--open-mode=append", "--set train.device=cuda"):
            assert opt in line, (opt, line)
        assert "--dependency" not in line and "--no-requeue" not in line
    assert "-c configs/sga/sga.cfg" in sga and "--run-dir runs/sga/sga" in sga
    assert "-c configs/sga/sdpa.cfg" in sdpa and "--run-dir runs/sga/sdpa" in sdpa


def test_dry_run_adr_grid_is_a_job_array():
    proc = run_submit("--dry-run", "jobs/r3si/adr-grid.toml")
    assert proc.returncode == 0, proc.stderr
    (line,) = sbatch_lines(proc.stdout)
    assert "--array=0-4%2" in line and "--output=runs/r3si/adr-grid/slurm-%A_%a.out" in line
    assert "--sweep reg.adr_coef --value 0.001 --value 0.003 --value 0.01 --value 0.03 --value 0.1" in line
    assert "5 sweep points" in proc.stdout


def test_every_job_file_dry_runs_and_has_a_local_twin():
    full = sorted(p.relative_to(JOBS) for p in JOBS.rglob("*.toml") if "local" not in p.parts)
    local = sorted(p.relative_to(JOBS / "local") for p in (JOBS / "local").rglob("*.toml"))
    assert len(full) >= 30 and full == local, (full, local)
    proc = run_submit("--dry-run", *sorted(JOBS.rglob("*.toml")))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert proc.stdout.count("# estimate:") == sum(1 for p in JOBS.rglob("*.toml") if 'kind = "eval"' not in p.read_text())
    # Full-scale jobs run at the posts' scale: SGA on 8 GPUs, R3SI on 64.
    for block in proc.stdout.split("\n\n"):
        m = re.match(r"# (\S+): ", block)
        if not m or "jobs/local/" in m.group(1):
            continue
        gpus = "(8 GPUs)" if "/sga/" in m.group(1) else "(64 GPUs)"
        assert gpus in block, block


def test_bad_job_files_are_refused(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[train]\nconfig = "configs/tiny.cfg"\n[resources]\nnodse = 2\n')
    proc = run_submit("--dry-run", bad)
    assert proc.returncode == 2 and f"{bad}: resources.nodse: unknown key" in proc.stderr, proc.stderr
    bad.write_text('[train]\nconfig = "configs/tiny.cfg"\n[resources]\nranks_per_node = 3\npp = 2\n')
    proc = run_submit("--dry-run", bad)
    assert proc.returncode == 2 and "not a multiple of pp 2" in proc.stderr, proc.stderr
    bad.write_text('[train]\nconfig = "configs/tiny.cfg"\n[resources]\ntime = "1:2:3:4"\n')
    proc = run_submit("--dry-run", bad)
    assert proc.returncode == 2 and "not a Slurm time limit" in proc.stderr, proc.stderr
    # A key this build of entrank does not know: the dry run says so, a real submission refuses.
    bad.write_text('[train]\nconfig = "configs/tiny.cfg"\nset = ["nosuch.key=1"]\n')
    proc = run_submit("--dry-run", bad)
    assert proc.returncode == 0 and "not in this build of entrank (unknown key): nosuch.key" in proc.stdout, proc.stdout
    proc = run_submit(bad, env={"SLURM_CONF": "/nonexistent"})
    assert proc.returncode == 2 and "nothing submitted" in proc.stderr, proc.stderr


def test_time_limits_parse_as_slurm_does():
    sub = load_submit()
    assert sub.parse_time("90") == 5400 and sub.parse_time(90) == 5400
    assert sub.parse_time("1:30") == 90 and sub.parse_time("2:00:00") == 7200
    assert sub.parse_time("1-12") == 36 * 3600 and sub.parse_time("1-00:30") == 86400 + 1800
    assert sub.parse_time("2-01:02:03") == 2 * 86400 + 3723
    assert sub.format_time(86400) == "1-00:00:00" and sub.format_time(61) == "00:02:00"


def test_local_mode_runs_a_sweep_without_slurm(tmp_path):
    job = tmp_path / "local.toml"
    job.write_text(f"""description = "local sweep"
[train]
config = "configs/tiny.cfg"
set = ["model.n_layer=2", "model.d_model=32", "model.n_head=2", "model.seq_len=32", "train.batch_size=8",
       "train.micro_batch_size=4", "train.steps=4", "train.warmup_steps=1", "eval.batches=1"]
run_dir = "{tmp_path}/run"
[resources]
ranks_per_node = 2
[sweep]
key = "train.seed"
values = [1, 2]
""")
    proc = run_submit("--local", job, env=MPI_ENV)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    for seed in (1, 2):
        point = tmp_path / "run" / f"train.seed={seed}"
        assert re.search(rf"^\s*seed\s*=\s*{seed}\s*;", (point / "config.cfg").read_text(), re.M)
        with h5py.File(point / "metrics.h5", "r") as f:
            assert len(f["steps/loss"]) == 4
        assert "2 ranks: dp 2 x pp 1" in (point / "log.txt").read_text()


def test_submit_without_sbatch_on_path_is_one_line_and_creates_nothing(tmp_path):
    # A machine without Slurm's client: an empty PATH. Before the check this was a Python traceback
    # (FileNotFoundError from subprocess), exit 1 and an empty run directory.
    empty = tmp_path / "bin"
    empty.mkdir()
    run_dir = tmp_path / "run"
    proc = run_submit("jobs/local/sga/sdpa.toml", "--run-dir", run_dir, env={"PATH": str(empty)})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"slurm/submit: sbatch: not found on PATH ({empty})"), proc.stderr
    assert "Traceback" not in proc.stderr and "--dry-run" in lines[0]
    assert not run_dir.exists() and proc.stdout == ""
    # --dry-run needs no sbatch; --local needs mpirun, refused the same way without it.
    assert run_submit("--dry-run", "jobs/local/sga/sdpa.toml", env={"PATH": str(empty)}).returncode == 0
    proc = run_submit("--local", "jobs/local/sga/sdpa.toml", "--run-dir", run_dir, env={"PATH": str(empty)})
    assert proc.returncode == 2 and proc.stderr.startswith("slurm/submit: mpirun: not found on PATH"), proc.stderr
    assert not run_dir.exists()
