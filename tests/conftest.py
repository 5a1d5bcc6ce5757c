"""Shared fixtures of the pytest suite: the binary, a runner that captures exit code and output,
and writers of data files in the public formats."""
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

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


@pytest.fixture(scope="session")
def mpirun():
    if not BIN.exists():
        pytest.fail(f"{BIN} is missing: run `make` first")

    def run(n, *args, timeout=600, check=None, env_extra=None, popen=False):
        env = dict(os.environ, **MPI_ENV, **(env_extra or {}))
        cmd = ["mpirun", "-np", str(n), "--bind-to", "none", str(BIN), *map(str, args)]
        if popen:
            return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
        if check is not None:
            assert proc.returncode == check, f"exit {proc.returncode}, expected {check}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        return proc

    return run


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


def read_params(checkpoint):
    import h5py
    with h5py.File(checkpoint, "r") as f:
        return {k: f["params"][k][...] for k in f["params"]}
