"""A shard truncated while a run reads it (issue 18 point 7c): the memory map used to fault
(SIGBUS, no message). Now the read fails in one line naming the file, exit 2, and `latest`
still names a complete checkpoint that resumes once the file is whole again."""
import os

import numpy as np
import pytest
import subprocess

from conftest import BIN, MPI_ENV, ROOT, entrank_lines, mpirun_cmd, set_args, start_entrank, wait_for, write_llmc_shard, write_megatron

TOKENS = np.arange(200_000) % 64   # configs/tiny.cfg's vocabulary


def args(kind, path, run):
    return ["train", "-c", "configs/tiny.cfg", *set_args(f"data.kind={kind}", f'data.train="{path}"', f'data.val="{path}"',
                                                         "train.steps=100000", "train.warmup_steps=1", "checkpoint.every=2",
                                                         "checkpoint.keep=2", "eval.every=0", "model.n_layer=1",
                                                         "train.batch_size=4", "train.micro_batch_size=4"), "--run-dir", run]


@pytest.mark.parametrize("kind", ["llmc", "megatron"])
def test_a_shard_truncated_during_the_run_ends_in_one_line(tmp_path, kind, entrank):
    if kind == "llmc":
        data = tmp_path / "shard.bin"
        write_llmc_shard(data, TOKENS)
        victim, keep = data, 1024   # the header stays
    else:
        data = tmp_path / "corpus"
        write_megatron(data, [TOKENS[:100_000], TOKENS[100_000:]])
        victim, keep = tmp_path / "corpus.bin", 0
    whole = victim.read_bytes()
    run = tmp_path / "run"
    proc = start_entrank(*args(kind, data, run), stdout=open(os.devnull, "w"), stderr=open(tmp_path / "stderr", "w"))
    try:
        latest = run / "checkpoints" / "latest"
        assert wait_for(latest.exists, 120, 0.02)
        os.truncate(victim, keep)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = (tmp_path / "stderr").read_text()
    assert code == 2, (code, stderr)
    lines = [l for l in stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"entrank: {victim}: truncated while being read: the file now has {keep} bytes"), stderr
    # `latest` names a complete checkpoint, and the run resumes from it once the file is restored.
    named = run / "checkpoints" / latest.read_text().strip()
    assert named.exists() and not named.name.endswith(".tmp")
    victim.write_bytes(whole)
    a = args(kind, data, run)
    a[a.index("train.steps=100000")] = f"train.steps={int(named.stem.split('_')[1]) + 2}"
    done = entrank(*a, "--resume", "auto", check=0)
    assert f"loaded {named}" in done.stdout


def test_under_mpirun_every_rank_that_reads_it_says_so(tmp_path):
    """The same under mpirun -np 2 (dp 2): the rank that reads the shard first stops the job with
    exit 2 (MPI_Abort; mpirun adds its own lines); every `entrank:` line names the file."""
    data = tmp_path / "shard.bin"
    write_llmc_shard(data, TOKENS)
    run = tmp_path / "run"
    a = args("llmc", data, run)
    a[a.index("train.batch_size=4")] = "train.batch_size=8"
    proc = subprocess.Popen(mpirun_cmd(2, BIN, *a), cwd=ROOT, env=dict(os.environ, **MPI_ENV), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for((run / "checkpoints" / "latest").exists, 120, 0.02)
        os.truncate(data, 1024)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, err
    ours = entrank_lines(err)
    # Both ranks may say it, and die() writes a line in three pieces, so their lines can interleave.
    assert ours and all(f"{data}: truncated while being read: the file now has 1024 bytes" in l for l in ours), err
    named = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    assert named.exists()
