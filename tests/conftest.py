"""Shared fixtures of the pytest suite: the binary, a runner that captures exit code and output,
the checks of bad input's one error line, writers of data files in the public formats, and
helpers for runs that other processes watch (the ranks of an mpirun, waiting on a file)."""
import importlib.machinery
import importlib.util
import os
import re
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

# Every run the tests start would otherwise measure the CPU's sgemm ceiling first (a second or more
# each, hundreds of runs): a given ceiling (the log says so) keeps MFU defined and the suite short.
os.environ.setdefault("ENTRANK_CPU_PEAK_GFLOPS", "100")

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "bin" / "entrank"


@pytest.fixture(scope="session")
def entrank():
    if not BIN.exists():
        pytest.fail(f"{BIN} is missing: run `make` first")

    def run(*args, timeout=600, check=None):
        proc = subprocess.run([str(BIN), *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        if check is not None:
            assert proc.returncode == check, f"exit {proc.returncode}, expected {check}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        return proc

    return run


def set_args(*overrides):
    """`--set` before each override: set_args("a=1", "b=2") == ["--set", "a=1", "--set", "b=2"]."""
    return [x for o in overrides for x in ("--set", o)]


def one_line_error(proc):
    """Bad input prints exactly one non-blank line on stderr; returns it."""
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def entrank_lines(stderr):
    """The lines entrank itself printed (mpirun and the MPI library may add their own)."""
    return [l for l in stderr.splitlines() if l.startswith("entrank:")]


def entrank_error(proc, code=2):
    """Exit `code` and exactly one `entrank:` line on stderr (for runs under mpirun, whose own
    lines may come with it); returns that line."""
    assert proc.returncode == code, proc.stderr
    ours = entrank_lines(proc.stderr)
    assert len(ours) == 1, proc.stderr
    return ours[0]


def start_entrank(*args, **popen_kw):
    """bin/entrank started in the background on one thread, for tests that watch a run as it goes."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return subprocess.Popen([str(BIN), *map(str, args)], cwd=ROOT, env=env, **popen_kw)


def load_source(name, path):
    """A Python program without the .py ending (slurm/submit, analysis/summarize) as a module."""
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def write_llmc_shard(path, tokens, magic=20240520, version=1, count=None):
    """An llm.c token shard: 256 int32 header (magic, version, token count), then uint16 tokens."""
    header = np.zeros(256, dtype="<i4")
    header[0], header[1] = magic, version
    header[2] = len(tokens) if count is None else count
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(tokens, dtype="<u2").tobytes())


def write_megatron(prefix, docs, dtype=np.uint16, magic=b"MMIDIDX\x00\x00"):
    """A Megatron-LM indexed dataset (.idx + .bin), one sequence per document."""
    codes = {np.uint8: 1, np.int8: 2, np.int16: 3, np.int32: 4, np.int64: 5, np.uint16: 8}
    sizes = np.array([len(d) for d in docs], dtype="<i4")
    itemsize = np.dtype(dtype).itemsize
    pointers = np.concatenate([[0], np.cumsum(sizes[:-1]) * itemsize]).astype("<i8")
    doc_idx = np.arange(len(docs) + 1, dtype="<i8")
    with open(f"{prefix}.idx", "wb") as f:
        f.write(magic)
        f.write(struct.pack("<Q", 1))
        f.write(struct.pack("<B", codes[dtype]))
        f.write(struct.pack("<Q", len(sizes)))
        f.write(struct.pack("<Q", len(doc_idx)))
        f.write(sizes.tobytes())
        f.write(pointers.tobytes())
        f.write(doc_idx.tobytes())
    with open(f"{prefix}.bin", "wb") as f:
        for d in docs:
            f.write(np.asarray(d, dtype=dtype).tobytes())


@pytest.fixture
def tiny_fast():
    """Overrides that make configs/tiny.cfg a few-second run."""
    return ["--set", "train.steps=6", "--set", "train.batch_size=8", "--set", "train.micro_batch_size=4",
            "--set", "model.n_layer=2", "--set", "model.seq_len=64", "--set", "eval.batches=1",
            "--set", "train.warmup_steps=2", "--set", "train.log_every=1"]


MPI_ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_rmaps_base_oversubscribe": "1",
    # More ranks than cores: one thread per rank keeps them from fighting over the cores.
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}


def mpirun_cmd(n, program, *args):
    """The command line that starts `program` on n ranks (run it with MPI_ENV)."""
    return ["mpirun", "-np", str(n), "--bind-to", "none", str(program), *map(str, args)]


# Two steps of configs/tiny.cfg: the run whose start-up log the thread and kernel tests read.
TINY_TWO_STEPS = ["train", "-c", "configs/tiny.cfg", *set_args("train.steps=2", "train.warmup_steps=1", "eval.every=0",
                                                               "train.micro_batch_size=64")]


def train_tiny_two_steps(tmp_path, name, env, ranks=0):
    """TINY_TWO_STEPS in tmp_path/name on 2 threads (under mpirun with MPI_ENV when ranks), with
    `env` as the whole environment plus those; returns its stdout and its two losses."""
    env = dict(env, **(MPI_ENV if ranks else {}))
    env["OMP_NUM_THREADS"] = "2"
    args = [*TINY_TWO_STEPS, "--run-dir", str(tmp_path / name), "--resume", "never"]
    cmd = mpirun_cmd(ranks, BIN, *args) if ranks else [str(BIN), *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
    losses = re.findall(r"\| loss ([0-9.]+) \|", proc.stdout)
    assert len(losses) == 2, proc.stdout
    return proc.stdout, losses


@pytest.fixture(scope="session")
def mpirun():
    if not BIN.exists():
        pytest.fail(f"{BIN} is missing: run `make` first")

    def run(n, *args, timeout=600, check=None, env_extra=None, popen=False):
        env = dict(os.environ, **MPI_ENV, **(env_extra or {}))
        cmd = mpirun_cmd(n, BIN, *args)
        if popen:
            return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
        if check is not None:
            assert proc.returncode == check, f"exit {proc.returncode}, expected {check}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        return proc

    return run


def child_pids(parent, command=None):
    """The processes whose parent is `parent` (the ranks an mpirun started), in /proc order; with
    `command`, only those whose program name ends with it."""
    pids = []
    for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()]:
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if command is not None:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if not f.read().split(b"\0")[0].endswith(command.encode()):
                        continue
        except OSError:
            continue
        if ppid == parent:
            pids.append(pid)
    return pids


def wait_for(condition, timeout, poll):
    """Calls condition() every `poll` seconds until it is true or `timeout` seconds have passed;
    returns whether it came true."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(poll)
    return False


def small_model(layers=8, steps=20, extra=()):
    """A tiny model that trains 20 steps on several ranks in a few seconds."""
    return ["-c", "configs/tiny.cfg", "--set", f"model.n_layer={layers}", "--set", "model.d_model=32",
            "--set", "model.n_head=2", "--set", "model.seq_len=32", "--set", "train.batch_size=16",
            "--set", "train.micro_batch_size=2", "--set", f"train.steps={steps}", "--set", "train.warmup_steps=2",
            "--set", "eval.batches=1", "--set", "train.log_every=1",
            # packed sequences of depth 2-3 examples over 4 variables: many scored positions per batch
            "--set", "data.logic.n_vars=4", "--set", "data.logic.depth_min=2", "--set", "data.logic.depth_max=3", *extra]


def read_losses(run_dir):
    import h5py
    with h5py.File(Path(run_dir) / "metrics.h5", "r") as f:
        return f["steps/step"][:], f["steps/loss"][:]


def read_group(path, group):
    """Every dataset of one group of an HDF5 file (metrics.h5, a checkpoint), by name."""
    import h5py
    with h5py.File(path, "r") as f:
        return {k: f[group][k][...] for k in f[group]}


def read_params(checkpoint):
    return read_group(checkpoint, "params")


TOOLS = ROOT / "tools"
TOOLS_PYTHON = ROOT / ".venv" / "bin" / "python"
TOOLS_PACKAGES = ("tokenizers", "tiktoken", "tqdm", "pyarrow", "safetensors", "torch", "transformers")


@pytest.fixture(scope="session")
def tools_python():
    """The interpreter of tools/ (the project venv that `make deps` fills from tools/requirements.txt).
    A missing venv or package fails the test with what to run: nothing is skipped."""
    if not TOOLS_PYTHON.exists():
        pytest.fail(f"{TOOLS_PYTHON} is missing: run `make deps` (installs tools/requirements.txt into .venv)")
    probe = subprocess.run([str(TOOLS_PYTHON), "-c", "import importlib, sys\n"
                            "missing = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]\n"
                            "print(' '.join(missing))", *TOOLS_PACKAGES], capture_output=True, text=True)
    if probe.returncode or probe.stdout.strip():
        pytest.fail(f"{TOOLS_PYTHON} lacks {probe.stdout.strip() or probe.stderr}: run `make deps`")
    return TOOLS_PYTHON


@pytest.fixture(scope="session")
def tool(tools_python):
    """Runs tools/NAME with the tools' interpreter; returns the CompletedProcess."""
    def run(name, *args, check=None, timeout=600, input=None):
        env = dict(os.environ, **{**MPI_ENV, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
        proc = subprocess.run([str(tools_python), str(TOOLS / name), *map(str, args)], cwd=ROOT, capture_output=True,
                              text=True, timeout=timeout, env=env, input=input)
        if check is not None:
            assert proc.returncode == check, f"exit {proc.returncode}, expected {check}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        return proc

    return run
