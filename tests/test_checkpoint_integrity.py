"""Checkpoint integrity (issue 18, point 6 and 7a): every dataset carries a checksum of its logical
contents; a byte flipped anywhere in dataset storage, a non-finite or out-of-range value, a wrong
element type or shape, or an attribute that is not a count is refused with exit 2 naming the file
and the dataset or attribute, and a clean copy still loads and resumes bitwise."""
import random
import shutil

import h5py
import numpy as np
import pytest
from conftest import entrank_error, read_losses, set_args

ARGS = ["-c", "configs/tiny.cfg", *set_args("train.steps=8", "train.warmup_steps=2", "checkpoint.every=4", "eval.every=0",
                                           "train.batch_size=16", "train.micro_batch_size=8", "model.n_layer=2",
                                           "eval.batches=1", "train.log_every=1", "checkpoint.keep=5")]


def mix64(x):
    x = np.uint64(x)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30); x *= np.uint64(0xbf58476d1ce4e5b9)
        x ^= x >> np.uint64(27); x *= np.uint64(0x94d049bb133111eb)
        return x ^ (x >> np.uint64(31))


def checksum(values):
    """The checksum entrank stores: sum mod 2^64 over elements of mix(mix(index + golden) ^ bits)."""
    flat = np.ascontiguousarray(values).reshape(-1)
    bits = flat.view(np.uint32 if flat.dtype == np.float32 else np.uint64).astype(np.uint64)
    with np.errstate(over="ignore"):
        idx = np.arange(flat.size, dtype=np.uint64) + np.uint64(0x9e3779b97f4a7c15)
        return int(np.sum(mix64(mix64(idx) ^ bits), dtype=np.uint64))


@pytest.fixture(scope="module")
def reference(mpirun, tmp_path_factory):
    run = tmp_path_factory.mktemp("integrity") / "run"
    mpirun(2, "train", *ARGS, "--run-dir", run, check=0)
    return run


def resume_from(mpirun, path, run_dir, n=1):
    return mpirun(n, "train", *ARGS, "--run-dir", run_dir, "--resume", path, timeout=120)


def test_checksums_are_the_logical_contents_whatever_the_topology(reference):
    with h5py.File(reference / "checkpoints" / "step_00000004.h5", "r") as f:
        assert f.attrs["format_version"] == 2
        n = 0
        for group in ("params", "adam_m", "adam_v"):
            for name, d in f[group].items():
                assert int(d.attrs["checksum"]) == checksum(d[...]), f"{group}/{name}"
                n += 1
        assert n == 48


def test_fifty_byte_flips_in_dataset_storage_are_refused(entrank, mpirun, reference, tmp_path):
    src = reference / "checkpoints" / "step_00000004.h5"
    with h5py.File(src, "r") as f:
        extents = [(f"/{g}/{k}", f[g][k].id.get_offset(), f[g][k].id.get_storage_size())
                   for g in ("params", "adam_m", "adam_v") for k in f[g]]
    rng = random.Random(18)
    data = src.read_bytes()
    for i in range(50):
        name, offset, size = rng.choice(extents)
        pos = offset + rng.randrange(size)
        bad = bytearray(data)
        bad[pos] ^= 1 << rng.randrange(8)
        path = tmp_path / f"flip{i}.h5"
        path.write_bytes(bytes(bad))
        # One rank without mpirun is quickest; every fifth file is read by two ranks (the checksum
        # is then summed over both).
        if i % 5:
            proc = entrank("train", *ARGS, "--run-dir", tmp_path / f"run{i}", "--resume", path, timeout=120)
        else:
            proc = resume_from(mpirun, path, tmp_path / f"run{i}", n=2)
        line = entrank_error(proc)
        assert f"{path}: {name}: checksum mismatch" in line, (pos, line)
        assert not (tmp_path / f"run{i}" / "metrics.h5").exists()
        path.unlink()
    # The clean file still loads and the resumed run ends as the reference did, bitwise.
    clean = tmp_path / "clean.h5"
    shutil.copy(src, clean)
    mpirun(2, "train", *ARGS, "--run-dir", tmp_path / "resumed", "--resume", clean, check=0)
    _, a = read_losses(reference)
    _, b = read_losses(tmp_path / "resumed")
    assert b.tobytes() == a[4:].tobytes()


def edited(src, tmp_path, name, edit):
    path = tmp_path / f"{name}.h5"
    shutil.copy(src, path)
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def set_values(f, name, values):
    """Replaces a dataset's values and stores their true checksum: only the value check can refuse it."""
    f[name][...] = values
    f[name].attrs["checksum"] = np.uint64(checksum(f[name][...]))


def test_bad_values_types_shapes_and_attributes_are_refused(mpirun, reference, tmp_path):
    src = reference / "checkpoints" / "step_00000004.h5"

    def nan_weight(f):
        v = f["params/wte"][...]; v[3, 5] = np.nan; set_values(f, "params/wte", v)

    def negative_v(f):
        v = f["adam_v/lnf_w"][...]; v[0] = -1e-3; set_values(f, "adam_v/lnf_w", v)

    def float16(f):
        v = f["params/lnf_b"][...]; c = f["params/lnf_b"].attrs["checksum"]
        del f["params/lnf_b"]; f["params/lnf_b"] = v.astype(np.float16); f["params/lnf_b"].attrs["checksum"] = c

    def int32(f):
        v = f["adam_m/wpe"][...]; del f["adam_m/wpe"]; f["adam_m/wpe"] = v.astype(np.int32)

    def no_checksum(f):
        del f["params/blocks.fc_b"].attrs["checksum"]

    cases = [
        ("step_negative", lambda f: f.attrs.__setitem__("step", -5.0), "attribute step: -5 is not an integer"),
        ("step_fraction", lambda f: f.attrs.__setitem__("step", 2.5), "attribute step: 2.5 is not an integer"),
        ("adam_t_negative", lambda f: f.attrs.__setitem__("adam_t", -1.0), "attribute adam_t: -1 is not an integer"),
        ("nan_weight", nan_weight, "/params/wte: 1 values are not finite"),
        ("negative_v", negative_v, "/adam_v/lnf_w: 1 values are negative or not finite"),
        ("float16", float16, "/params/lnf_b: element type is not float32"),
        ("int32", int32, "/adam_m/wpe: element type is not float32"),
        ("no_checksum", no_checksum, "/params/blocks.fc_b: missing checksum attribute"),
    ]
    for name, edit, message in cases:
        path = edited(src, tmp_path, name, edit)
        before = path.read_bytes()
        line = entrank_error(resume_from(mpirun, path, tmp_path / f"run_{name}", n=2))
        assert line.startswith(f"entrank: {path}: ") and message in line, line
        assert path.read_bytes() == before and not (tmp_path / f"run_{name}").exists()
    # A directory is not a checkpoint: one line, no MPI-IO message.
    (tmp_path / "dir.h5").mkdir()
    line = entrank_error(resume_from(mpirun, tmp_path / "dir.h5", tmp_path / "run_dir", n=2))
    assert "not a regular file (a directory)" in line


R3SI = ["-c", "configs/tiny-r3si.cfg", *set_args("train.steps=3", "train.warmup_steps=1", "r3si.monitor_every=2",
                                                 "eval.every=0", "checkpoint.every=3", "model.n_layer=8", "r3si.layers=[3, 5]",
                                                 "train.batch_size=8", "train.micro_batch_size=4", "eval.batches=1")]


def test_r3si_buffers_of_the_wrong_size_are_refused_not_a_crash(entrank, tmp_path):
    entrank("train", *R3SI, "--run-dir", tmp_path / "run", check=0)
    src = tmp_path / "run" / "checkpoints" / "step_00000003.h5"

    def long_vector(name):
        def edit(f):
            del f[name]; f[name] = np.arange(20, dtype=np.float64)
        return edit

    def wrong_v(f):
        v = f["r3si/V"][...]; del f["r3si/V"]; f["r3si/V"] = v[:, :, :-1]

    for name, edit, message in [("rank20", long_vector("r3si/rank"), "/r3si/rank: shape is not (2)"),
                                ("layers20", long_vector("r3si/layers"), "/r3si/layers: shape is not (2)"),
                                ("v_shape", wrong_v, "/r3si/V: shape is not (2,")]:
        path = edited(src, tmp_path, name, edit)
        for cmd in (["eval", "-c", tmp_path / "run" / "config.cfg", "--checkpoint", path],
                    ["train", *R3SI, "--run-dir", tmp_path / f"run_{name}", "--resume", path]):
            proc = entrank(*cmd)
            assert proc.returncode == 2, proc.stderr
            lines = [l for l in proc.stderr.splitlines() if l.strip()]
            assert len(lines) == 1 and message in lines[0], proc.stderr
