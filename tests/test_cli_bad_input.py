"""Bad input gets one line naming the file and the key / byte offset, exit 2, and leaves what is
on disk alone (docs/faults.md)."""
import numpy as np
from conftest import one_line_error, set_args, write_llmc_shard, write_megatron


def test_unknown_config_key_names_file_line_and_key(entrank, tmp_path):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text('train = { steps = 10; };\nmodel = {\n  n_layre = 4;\n};\n')
    msg = one_line_error(entrank("info", "-c", cfg, check=2))
    assert f"{cfg}:3" in msg and "model.n_layre" in msg and "unknown key" in msg


def test_bad_set_value_names_the_key(entrank):
    msg = one_line_error(entrank("info", "-c", "configs/tiny.cfg", "--set", "train.lr=fast", check=2))
    assert msg.startswith("entrank: --set train.lr")
    msg = one_line_error(entrank("info", "-c", "configs/tiny.cfg", "--set", "model.n_layer=-3", check=2))
    assert "--set model.n_layer" in msg and "range" in msg


def test_unknown_command_and_missing_config_are_usage_errors(entrank):
    assert "unknown command" in one_line_error(entrank("fly", check=2))
    assert "missing -c" in one_line_error(entrank("train", check=2))
    assert "--bogus" in one_line_error(entrank("train", "-c", "configs/tiny.cfg", "--bogus", "1", check=2))
    assert entrank("--help", check=0).stdout.startswith("usage:")


def train_on(kind, path, run_dir):
    """The arguments of a two-step run of configs/tiny.cfg that trains and validates on the data at `path`."""
    data = set_args(f"data.kind={kind}", f'data.train="{path}"', f'data.val="{path}"')
    return ["train", "-c", "configs/tiny.cfg", *data, "--run-dir", run_dir, *set_args("train.steps=2", "train.warmup_steps=1")]


def test_llmc_wrong_magic_names_file_and_offset(entrank, tmp_path):
    shard = tmp_path / "bad_magic.bin"
    write_llmc_shard(shard, np.arange(1000) % 64, magic=12345)
    msg = one_line_error(entrank(*train_on("llmc", shard, tmp_path / "run"), check=2))
    assert str(shard) in msg and "offset 0" in msg
    assert not (tmp_path / "run" / "metrics.h5").exists()


def test_llmc_truncated_shard_names_file_and_size(entrank, tmp_path):
    shard = tmp_path / "short.bin"
    write_llmc_shard(shard, np.arange(1000) % 64, count=5000)
    msg = one_line_error(entrank(*train_on("llmc", shard, tmp_path / "run"), check=2))
    assert str(shard) in msg and "trunc" in msg.lower()


def test_llmc_token_beyond_vocab_names_byte_offset(entrank, tmp_path):
    shard = tmp_path / "big_ids.bin"
    write_llmc_shard(shard, np.full(1000, 500))     # every token >= vocab_size 64
    msg = one_line_error(entrank(*train_on("llmc", shard, tmp_path / "run"), check=2))
    assert str(shard) in msg and "offset" in msg and "model.vocab_size" in msg


def test_megatron_wrong_magic_names_file_and_offset(entrank, tmp_path):
    prefix = tmp_path / "corpus"
    write_megatron(prefix, [np.arange(300) % 64, np.arange(400) % 64], magic=b"NOTMAGIC\x00")
    msg = one_line_error(entrank(*train_on("megatron", prefix, tmp_path / "run"), check=2))
    assert f"{prefix}.idx" in msg and "offset 0" in msg


def test_existing_run_is_not_overwritten(entrank, tmp_path, tiny_fast):
    run = tmp_path / "run"
    entrank("train", "-c", "configs/tiny.cfg", *tiny_fast, "--set", "train.steps=3", "--run-dir", run, check=0)
    before = (run / "metrics.h5").read_bytes()
    # --resume never on a directory that holds a run: refused, nothing touched.
    msg = one_line_error(entrank("train", "-c", "configs/tiny.cfg", *tiny_fast, "--run-dir", run, "--resume", "never", check=2))
    assert str(run / "metrics.h5") in msg
    assert (run / "metrics.h5").read_bytes() == before
    # Complete checkpoints whose `latest` is gone: refused in both modes, naming the one to pass.
    (run / "checkpoints" / "latest").unlink()
    msg = one_line_error(entrank("train", "-c", "configs/tiny.cfg", *tiny_fast, "--run-dir", run, check=2))
    assert f"{run}/checkpoints/latest: missing although {run}/checkpoints/step_00000003.h5 exists" in msg
    assert (run / "metrics.h5").read_bytes() == before
    # No checkpoint at all: nothing to protect (a failed start, docs/faults.md "The run directory"):
    # the run starts over at step 0 and says so.
    import shutil
    shutil.rmtree(run / "checkpoints")
    proc = entrank("train", "-c", "configs/tiny.cfg", *tiny_fast, "--run-dir", run, check=0)
    assert "starting at step 0, its 3 step rows dropped" in proc.stdout


def test_special_files_are_refused_without_blocking(entrank, tmp_path):
    """Issue 18 point 9: a FIFO as config, data or checkpoint path used to block for ever in open();
    a directory or FIFO anywhere a file is expected gets one line naming it and what it is, exit 2,
    and no run directory."""
    import os
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    folder = tmp_path / "folder"
    folder.mkdir()
    run = tmp_path / "run"
    msg = one_line_error(entrank("info", "-c", fifo, check=2, timeout=30))
    assert msg == f"entrank: {fifo}: cannot open: not a regular file (a FIFO)"
    for kind in ("llmc", "megatron"):
        for special, what in ((fifo, "a FIFO"), (folder, "a directory")):
            # Megatron's prefix names PREFIX.idx: make that the special file.
            path = special if kind == "llmc" else tmp_path / f"{special.name}_prefix"
            if kind == "megatron":
                target = tmp_path / f"{special.name}_prefix.idx"
                if not target.exists():
                    (os.mkfifo(target) if special == fifo else target.mkdir())
                shown = target
            else:
                shown = special
            msg = one_line_error(entrank(*train_on(kind, path, run), check=2, timeout=30))
            assert msg == f"entrank: {shown}: cannot open (data.train): not a regular file ({what})", msg
    msg = one_line_error(entrank("train", "-c", "configs/tiny.cfg", "--run-dir", run, "--resume", fifo, check=2, timeout=30))
    assert msg == f"entrank: {fifo}: cannot read checkpoint: not a regular file (a FIFO): a checkpoint is an HDF5 file"
    msg = one_line_error(entrank("train", "-c", "configs/tiny.cfg", "--run-dir", run, "--init-from", fifo, check=2, timeout=30))
    assert msg.startswith(f"entrank: {fifo}: cannot read checkpoint: not a regular file (a FIFO)")
    assert not run.exists()


def test_include_of_a_directory_or_empty_name_names_file_and_line(entrank, tmp_path):
    """Issue 18 point 9: `@include` of a directory or "" ended in "input in flex scanner failed"."""
    (tmp_path / "sub").mkdir()
    cfg = tmp_path / "main.cfg"
    cfg.write_text('train = { steps = 10; };\n@include "sub"\n')
    msg = one_line_error(entrank("info", "-c", cfg, check=2, timeout=30))
    assert msg == f'entrank: {cfg}:2: cannot open include file "sub" ({tmp_path}/sub): not a regular file (a directory)'
    cfg.write_text('@include ""\n')
    msg = one_line_error(entrank("info", "-c", cfg, check=2, timeout=30))
    assert msg == f'entrank: {cfg}:1: cannot open include file "": an empty file name'
