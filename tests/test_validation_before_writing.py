"""Input that the run cannot use is refused by validate_run before anything is written: exit 2, one
`entrank:` line naming the key (or the file and byte offset), and no run directory. The corrected
command then runs in that same directory (docs/faults.md)."""
import numpy as np
import pytest
from conftest import write_llmc_shard

# A two-step run of configs/tiny.cfg (train.warmup_steps must stay below train.steps).
SHORT = ["--set", "train.steps=2", "--set", "train.warmup_steps=0"]
R3SI_BAD = ["--set", "r3si.enabled=true", "--set", "r3si.layers=[1, 99]"]
VOCAB = 64   # configs/tiny.cfg's model.vocab_size
# A batch that two dp replicas can share.
TWO_RANKS = ["--set", "train.batch_size=8", "--set", "train.micro_batch_size=4"]


def entrank_lines(stderr):
    return [l for l in stderr.splitlines() if l.startswith("entrank:")]


def one_line_error(proc):
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("entrank: "), proc.stderr
    return lines[0]


def refused_before_writing(proc, run_root):
    """Exit 2 with one `entrank:` line, and not even the run directory's parent was created."""
    assert proc.returncode == 2, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert not run_root.exists(), sorted(str(p) for p in run_root.rglob("*"))
    return one_line_error(proc)


def test_too_many_micro_batches_exit_2_and_nothing_is_created(entrank, tmp_path):
    # 8192 micro-batches of 1 sequence: more than the 4096 one step schedules. This used to be found
    # inside the first trainer_step, after metrics.h5 was written, and the rerun was then refused.
    root = tmp_path / "runs"
    run = root / "batch"
    bad = ["--set", "train.batch_size=8192", "--set", "train.micro_batch_size=1"]
    msg = refused_before_writing(entrank("train", "-c", "configs/tiny.cfg", *bad, *SHORT, "--run-dir", run), root)
    assert msg.startswith("entrank: train.micro_batches: ")
    assert "8192" in msg and "4096" in msg and "train.micro_batch_size" in msg
    # Corrected, in the same directory: runs.
    entrank("train", "-c", "configs/tiny.cfg", *SHORT, "--run-dir", run, check=0)
    assert (run / "metrics.h5").exists()


def test_r3si_layer_beyond_the_model_exit_2_and_nothing_is_created(entrank, tmp_path):
    root = tmp_path / "runs"
    run = root / "r3si"
    msg = refused_before_writing(entrank("train", "-c", "configs/tiny.cfg", *R3SI_BAD, *SHORT, "--run-dir", run), root)
    assert msg == "entrank: r3si.layers: block 99 does not exist in a 8-layer model (model.n_layer)"
    fixed = ["--set", "r3si.enabled=true", "--set", "r3si.layers=[1, 5]"]
    entrank("train", "-c", "configs/tiny.cfg", *fixed, *SHORT, "--run-dir", run, check=0)
    assert (run / "metrics.h5").exists()


def test_info_refuses_r3si_layer_beyond_the_model(entrank):
    msg = one_line_error(entrank("info", "-c", "configs/tiny.cfg", *R3SI_BAD, check=2))
    assert msg == "entrank: r3si.layers: block 99 does not exist in a 8-layer model (model.n_layer)"
    # Disabled, the default r3si.layers (14 ... 26) of an 8-layer model are not the model's business.
    entrank("info", "-c", "configs/tiny.cfg", check=0)


@pytest.mark.parametrize("where", ["train part", "held-out part"])
def test_llmc_token_beyond_vocab_deep_in_the_file_exit_2_and_nothing_is_created(entrank, tmp_path, where):
    # 200k tokens, data.val_fraction 0.05: the first 190k train, the last 10k validate. One bad id,
    # far from any window the first steps would read: found by the pass over the whole file.
    n = 200_000
    tokens = np.random.default_rng(7).integers(0, VOCAB, n)
    at = 123_457 if where == "train part" else n - 1_234
    tokens[at] = VOCAB
    shard = tmp_path / "shard_000.bin"
    write_llmc_shard(shard, tokens)
    data = ["--set", "data.kind=llmc", "--set", f'data.train="{tmp_path}/shard_*.bin"']
    root = tmp_path / "runs"
    run = root / "llmc"
    msg = refused_before_writing(entrank("train", "-c", "configs/tiny.cfg", *data, *SHORT, "--run-dir", run), root)
    assert msg == f"entrank: {shard}: byte offset {1024 + 2 * at}: token id {VOCAB} >= model.vocab_size {VOCAB}"
    tokens[at] = VOCAB - 1
    write_llmc_shard(shard, tokens)
    entrank("train", "-c", "configs/tiny.cfg", *data, *SHORT, "--run-dir", run, check=0)
    assert (run / "metrics.h5").exists()


def test_unreadable_resume_checkpoint_creates_no_run_directory(entrank, tmp_path):
    # The checkpoint is read before train_command creates the run directory.
    missing = tmp_path / "nowhere" / "step_00000002.h5"
    root = tmp_path / "runs"
    msg = refused_before_writing(entrank("train", "-c", "configs/tiny.cfg", *SHORT, "--run-dir", root / "resume",
                                         "--resume", missing), root)
    assert msg.startswith(f"entrank: {missing}: cannot read checkpoint")


def test_too_many_micro_batches_on_two_ranks(mpirun, tmp_path):
    # Two dp replicas: 16384 sequences / (1 x 2) = 8192 micro-batches per rank. Both ranks reach the
    # verdict; rank 0 alone prints it.
    root = tmp_path / "runs"
    run = root / "mpi"
    bad = ["--set", "train.batch_size=16384", "--set", "train.micro_batch_size=1"]
    proc = mpirun(2, "train", "-c", "configs/tiny.cfg", *bad, *SHORT, "--run-dir", run, timeout=120)
    assert proc.returncode == 2, proc.stderr
    ours = entrank_lines(proc.stderr)
    assert len(ours) == 1 and ours[0].startswith("entrank: train.micro_batches: ") and "2 dp replicas" in ours[0], proc.stderr
    assert not root.exists()
    mpirun(2, "train", "-c", "configs/tiny.cfg", *TWO_RANKS, *SHORT, "--run-dir", run, timeout=300, check=0)
    assert (run / "metrics.h5").exists()


def test_token_pass_shared_by_two_ranks_reports_once(mpirun, tmp_path):
    # Each rank checks half of each split: the bad id is in rank 1's half, rank 0 prints the line.
    n = 200_000
    tokens = np.random.default_rng(8).integers(0, VOCAB, n)
    at = 150_001
    tokens[at] = 1000
    shard = tmp_path / "shard.bin"
    write_llmc_shard(shard, tokens)
    data = ["--set", "data.kind=llmc", "--set", f'data.train="{shard}"']
    root = tmp_path / "runs"
    proc = mpirun(2, "train", "-c", "configs/tiny.cfg", *data, *TWO_RANKS, *SHORT, "--run-dir", root / "mpi", timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert entrank_lines(proc.stderr) == [f"entrank: {shard}: byte offset {1024 + 2 * at}: token id 1000 >= model.vocab_size {VOCAB}"], proc.stderr
    assert not root.exists()
