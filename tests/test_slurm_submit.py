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
        gpus = "(8 GPUs)" if re.search(r"/sga(-780m)?/", m.group(1)) else "(64 GPUs)"
        assert gpus in block, block


def test_every_full_scale_job_fits_its_gpus_with_10_percent_headroom():
    """Every training job at the posts' scale states its GPUs' memory and passes the gate (need at
    most 90% of it) at the post's batch and sequence length, naming its train.recompute."""
    full = sorted(p for p in JOBS.rglob("*.toml") if "local" not in p.parts)
    proc = run_submit("--dry-run", *full)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    blocks = {re.match(r"# (\S+): ", b).group(1): b for b in proc.stdout.split("\n\n") if re.match(r"# (\S+): ", b)}
    for path in full:
        text = path.read_text()
        assert re.search(r"^gpu_memory_gib = 74\.5 ", text, re.M), path
        if 'kind = "eval"' in text:
            continue
        assert re.search(r'^  "train\.recompute=(none|attention|block)",   # \S', text, re.M), f"{path}: no commented train.recompute"
        m = re.search(r"^# memory: ([0-9.]+) GiB per rank on a GPU \(fp32, train\.recompute (\w+), entrank info\); "
                      r"fits 90% of resources\.gpu_memory_gib = 74\.5 \(67\.0 GiB\)$", blocks[str(path)], re.M)
        assert m and float(m.group(1)) <= 0.9 * 74.5, (path, blocks[str(path)])
        assert f'"train.recompute={m.group(2)}"' in text


OVERSIZED = """# a deliberately oversized job: the SGA post's 48 x 768 model without recomputation on 8 x 80GB
[train]
config = "configs/sga/sga.cfg"
set = ["train.device=cuda", "train.recompute=none"]
run_dir = "RUN"
[resources]
nodes = 1
gpus_per_node = 8
gpu_memory_gib = 74.5
time = "24:00:00"
"""


def check_refusal(proc, job):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    m = re.fullmatch(rf"slurm/submit: {re.escape(str(job))}: needs ([0-9.]+) GiB per rank \(fp32, train\.recompute none, dp 8 x pp 1\), "
                     r"more than 90% of resources\.gpu_memory_gib = 74\.5 \(67\.0 GiB\); fits with: (.*)", lines[0])
    assert m and float(m.group(1)) > 67.0, lines[0]
    fits = m.group(2).split("; ")
    # The cheapest first: recomputation alone, then smaller micro-batches; each with its need.
    assert fits[0].startswith("train.recompute=attention (") and fits[1].startswith("train.recompute=block ("), fits
    assert len(fits) == 3 and fits[2].startswith("train.micro_batch_size=8 "), fits
    for f in fits:
        assert float(re.search(r"\(([0-9.]+) GiB\)$", f).group(1)) <= 67.0, f
    assert "JOB1=" not in proc.stdout   # nothing printed as submitted


def test_oversized_job_is_refused_by_the_dry_run(tmp_path):
    job = tmp_path / "oversized.toml"
    job.write_text(OVERSIZED.replace("RUN", str(tmp_path / "run")))
    check_refusal(run_submit("--dry-run", job), job)
    # The same job with a setting the refusal named goes through.
    proc = run_submit("--dry-run", "--set", "train.recompute=attention", job)
    assert proc.returncode == 0 and "fits 90% of resources.gpu_memory_gib = 74.5" in proc.stdout, proc.stderr


def test_oversized_job_is_refused_before_sbatch_runs(tmp_path):
    """A real submission checks the gate before any sbatch call: a fake sbatch on PATH records
    every call, and none is made; no run directory is created."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "sbatch-calls"
    (bindir / "sbatch").write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\necho 4242\n")
    (bindir / "sbatch").chmod(0o755)
    job = tmp_path / "oversized.toml"
    job.write_text(OVERSIZED.replace("RUN", str(tmp_path / "run")))
    import os
    proc = run_submit(job, env={"PATH": f"{bindir}:{os.environ['PATH']}"})
    check_refusal(proc, job)
    assert not calls.exists() and not (tmp_path / "run").exists()
    # The fake sbatch does work: a job that fits is submitted through it.
    proc = run_submit("--set", "train.recompute=attention", job, env={"PATH": f"{bindir}:{os.environ['PATH']}"})
    assert proc.returncode == 0 and "submitted job 4242" in proc.stdout, proc.stdout + proc.stderr
    assert calls.read_text().count("slurm/train.sbatch") == 1


def test_bad_gpu_memory_field_is_refused(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[train]\nconfig = "configs/tiny.cfg"\n[resources]\ngpu_memory_gib = "80GB"\n')
    proc = run_submit("--dry-run", bad)
    assert proc.returncode == 2 and f"{bad}: resources.gpu_memory_gib: expected float or int" in proc.stderr, proc.stderr
    bad.write_text('[train]\nconfig = "configs/tiny.cfg"\n[resources]\ngpu_memory_gib = -1\n')
    proc = run_submit("--dry-run", bad)
    assert proc.returncode == 2 and f"{bad}: resources.gpu_memory_gib: must be >= 0" in proc.stderr, proc.stderr


def test_info_gate_exits_2_with_one_line(entrank_bin=ROOT / "bin" / "entrank"):
    cmd = [str(entrank_bin), "info", "-c", "configs/sga/sga.cfg", "--dp", "8", "--gpu-memory-gib", "74.5"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert re.match(r"entrank: configs/sga/sga\.cfg: needs [0-9.]+ GiB per rank \(fp32, train\.recompute \"none\"\), more than 90% "
                    r"of the 74\.5 GiB budget \(67\.0 GiB\)", proc.stderr), proc.stderr
    proc = subprocess.run(cmd + ["--set", "train.recompute=attention"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and "memory gate: " in proc.stdout, proc.stderr


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
