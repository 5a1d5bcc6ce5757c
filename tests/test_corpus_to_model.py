"""From a directory of text files to a model others can use (issue 16): tools/prepare-data,
`entrank generate`, tools/sample, tools/export-hf (transformers), tools/import-hf, llm.c model
files and `train --init-from`. The corpus is /usr/share/common-licenses, on every Debian machine
(base-files); the model is configs/tiny-corpus.cfg."""
import json
import struct
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import MPI_ENV, ROOT, entrank_error, one_line_error, set_args

CORPUS = Path("/usr/share/common-licenses")
CONFIG = ROOT / "configs" / "tiny-corpus.cfg"


def data_sets(d):
    return set_args(f'data.train="{d}/train_*.bin"', f'data.val="{d}/val_*.bin"')


@pytest.fixture(scope="module")
def corpus(tool, tmp_path_factory):
    if not CORPUS.is_dir():
        pytest.fail(f"{CORPUS} is missing (Debian's base-files installs it)")
    out = tmp_path_factory.mktemp("corpus") / "data"
    tool("prepare-data", CORPUS, "-o", out, "--train-bpe", 4096, "--workers", 2, "--val-fraction", 0.1,
         "--shard-tokens", 20000, "--no-progress", check=0)
    return out


@pytest.fixture(scope="module")
def trained(corpus, entrank, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "tiny-corpus"
    entrank("train", "-c", CONFIG, *data_sets(corpus), "--run-dir", run, "--resume", "never", check=0)
    return run / "checkpoints" / "step_00000050.h5"


def read_params(path):
    with h5py.File(path, "r") as f:
        return {k: f["params"][k][()] for k in f["params"]}


def test_prepare_data_writes_shards_and_a_manifest_with_the_tokenizer_identity(corpus):
    m = json.loads((corpus / "manifest.json").read_text())
    assert m["vocab_size"] == 4096 and m["tokenizer"]["kind"] == "bpe-trained"
    assert m["documents"] == len(list(CORPUS.iterdir()))
    assert m["splits"]["train"]["documents"] > 0 and m["splits"]["val"]["documents"] > 0
    import hashlib
    assert m["tokenizer"]["sha256"] == hashlib.sha256((corpus / "tokenizer.json").read_bytes()).hexdigest()
    total = 0
    for split in ("train", "val"):
        for shard in m["splits"][split]["llmc_shards"]:
            data = (corpus / shard["file"]).read_bytes()
            magic, version, n = struct.unpack("<3i", data[:12])
            assert (magic, version, n) == (20240520, 1, shard["tokens"]) and len(data) == 1024 + 2 * n
            tokens = np.frombuffer(data[1024:], dtype="<u2")
            assert tokens.max() < 4096
            total += n
    assert total == m["splits"]["train"]["tokens"] + m["splits"]["val"]["tokens"]


def test_text_files_become_a_model_that_transformers_and_llmc_load(corpus, trained, entrank, tool, tools_python, tmp_path):
    # tools/sample prints decoded text (the prompt, then the completion)
    proc = tool("sample", trained, "This License", "--max-tokens", 16, "--seed", 3, check=0)
    assert proc.stdout.startswith("This License") and len(proc.stdout) > len("This License")

    # export-hf -> transformers.GPT2LMHeadModel: its logits on a batch match entrank's
    hf = tmp_path / "hf"
    llmc = tmp_path / "model.bin"
    tool("export-hf", trained, hf, "--llmc-out", llmc, check=0)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in hf.iterdir()}
    batch = np.random.default_rng(0).integers(0, 4096, (3, 64))
    prompts = tmp_path / "batch.txt"
    prompts.write_text("\n".join(" ".join(map(str, row)) for row in batch) + "\n")
    entrank("generate", "--checkpoint", trained, "--prompt-file", prompts, "--max-tokens", 0,
            "--logprobs-out", tmp_path / "entrank.npy", check=0)
    script = (
        "import sys, numpy as np, torch, transformers\n"
        "m = transformers.GPT2LMHeadModel.from_pretrained(sys.argv[1]).eval()\n"
        "ids = torch.tensor(np.loadtxt(sys.argv[2], dtype=np.int64, ndmin=2))\n"
        "with torch.no_grad():\n"
        "    np.save(sys.argv[3], torch.log_softmax(m(ids).logits.double(), -1).numpy())\n"
        "tok = transformers.AutoTokenizer.from_pretrained(sys.argv[1])\n"
        "print(tok.decode(tok('This License')['input_ids']))\n")
    import subprocess
    proc = subprocess.run([str(tools_python), "-c", script, str(hf), str(prompts), str(tmp_path / "hf.npy")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "This License"
    ours, theirs = np.load(tmp_path / "entrank.npy"), np.load(tmp_path / "hf.npy")
    assert ours.shape == theirs.shape == (3, 64, 4096)
    # Log-probabilities: the logits up to each row's constant (entrank keeps the softmax).
    assert np.abs(ours - theirs).max() <= 1e-4 * np.abs(theirs).max()

    # import-hf: the parameters come back bit for bit, from the HF directory and from llm.c's file
    original = read_params(trained)
    for src in (hf, llmc):
        out = tmp_path / f"imported-{src.name}.h5"
        tool("import-hf", src, out, "--config", CONFIG, check=0)
        back = read_params(out)
        assert sorted(back) == sorted(original)
        for k in original:
            assert np.array_equal(back[k], original[k]), k

    # llm.c's model file: header of gpt2_124M.bin, padded vocabulary, and the same file written again
    header = np.frombuffer(llmc.read_bytes()[:32], dtype="<i4")
    assert list(header) == [20240326, 3, 64, 4096, 4, 4, 64, 4096]
    tool("export-hf", tmp_path / "imported-model.bin.h5", tmp_path / "hf2", "--llmc-out", tmp_path / "again.bin",
         "--tokenizer", corpus, check=0)
    assert (tmp_path / "again.bin").read_bytes() == llmc.read_bytes()


def test_train_init_from_starts_at_step_0_from_the_given_parameters(corpus, trained, entrank, tmp_path):
    run = tmp_path / "run"
    entrank("train", "-c", CONFIG, *data_sets(corpus), *set_args("train.steps=1", "train.warmup_steps=0", "checkpoint.every=0"),
            "--run-dir", run, "--resume", "never", "--init-from", trained, check=0)
    log = (run / "log.txt").read_text()
    assert f"initialised from {trained}" in log
    with h5py.File(run / "metrics.h5", "r") as f:
        steps = f["steps"]
        first_loss = float(steps["loss"][0]) if "loss" in steps else None
    fresh = tmp_path / "fresh"
    entrank("train", "-c", CONFIG, *data_sets(corpus), *set_args("train.steps=1", "train.warmup_steps=0"),
            "--run-dir", fresh, "--resume", "never", check=0)
    with h5py.File(fresh / "metrics.h5", "r") as f:
        fresh_loss = float(f["steps"]["loss"][0])
    # A trained start is far below a random one (ln 4096 = 8.3) at step 0.
    assert first_loss is not None and first_loss < fresh_loss - 1


def test_generate_is_deterministic_for_a_seed_and_the_same_on_a_pp_2_pipeline(trained, entrank, mpirun, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("0 12 14\n0 300\n")
    args = ("generate", "--checkpoint", trained, "--prompt-file", prompts, "--max-tokens", 12, "--seed", 5,
            "--top-k", 50, "--top-p", 0.95)
    one = entrank(*args, check=0).stdout
    assert one == entrank(*args, check=0).stdout
    lines = one.splitlines()
    assert len(lines) == 2 and all(len(l.split()) == 12 for l in lines)
    assert entrank(*args[:-6], "--seed", 6, "--top-k", 50, "--top-p", 0.95, check=0).stdout != one
    pp2 = mpirun(2, *args, *set_args("parallel.pp=2"), check=0)
    assert pp2.stdout == one
    greedy = entrank("generate", "--checkpoint", trained, "--prompt", "0 12 14", "--max-tokens", 8, "--temperature", 0, check=0).stdout
    assert greedy == entrank("generate", "--checkpoint", trained, "--prompt", "0 12 14", "--max-tokens", 8,
                             "--temperature", 0, "--seed", 99, check=0).stdout


def test_generate_refuses_a_token_outside_the_vocabulary(trained, entrank):
    proc = entrank("generate", "--checkpoint", trained, "--prompt", "0 4096")
    assert proc.returncode == 2
    assert "token id 4096 is outside the vocabulary" in one_line_error(proc)


def test_trainer_refuses_a_vocabulary_smaller_than_the_manifests(corpus, entrank, tmp_path):
    proc = entrank("train", "-c", CONFIG, *data_sets(corpus), *set_args("model.vocab_size=4000"),
                   "--run-dir", tmp_path / "run")
    line = entrank_error(proc)
    assert "model.vocab_size: 4000 does not cover the 4096 tokens" in line and "manifest.json" in line
    assert not (tmp_path / "run").exists()


def test_llmc_version_2_shards_hold_uint32_tokens_the_trainer_reads(entrank, tmp_path):
    rng = np.random.default_rng(1)
    for split, n in (("train", 4000), ("val", 1000)):
        header = np.zeros(256, dtype="<i4")
        header[:3] = 20240520, 2, n
        (tmp_path / f"{split}_000000.bin").write_bytes(header.tobytes() + rng.integers(0, 4096, n).astype("<u4").tobytes())
    entrank("train", "-c", CONFIG, *data_sets(tmp_path), *set_args("train.steps=1", "train.warmup_steps=0"),
            "--run-dir", tmp_path / "run", "--resume", "never", check=0)
    bad = np.frombuffer((tmp_path / "val_000000.bin").read_bytes(), dtype="<u1").copy()
    bad[1024:1028] = np.frombuffer(np.array([5000], dtype="<u4").tobytes(), dtype="<u1")
    (tmp_path / "val_000000.bin").write_bytes(bad.tobytes())
    proc = entrank("train", "-c", CONFIG, *data_sets(tmp_path), "--run-dir", tmp_path / "run2")
    assert "token id 5000" in entrank_error(proc)


def test_prepare_data_resumed_after_an_interruption_gives_byte_identical_output(tool, tmp_path):
    args = [CORPUS, "--train-bpe", 512, "--workers", 2, "--val-fraction", 0.2, "--shard-tokens", 15000,
            "--output", "both", "--no-progress"]
    tool("prepare-data", *args, "-o", tmp_path / "whole", check=0)
    # Stopped right after its second shard (as a kill would leave it), then run again.
    tool("prepare-data", *args, "-o", tmp_path / "resumed", "--stop-after-shards", 2, check=75)
    assert not (tmp_path / "resumed" / "manifest.json").exists()
    tool("prepare-data", *args, "-o", tmp_path / "resumed", check=0)
    whole = sorted(p.name for p in (tmp_path / "whole").iterdir())
    assert whole == sorted(p.name for p in (tmp_path / "resumed").iterdir())
    assert "train.idx" in whole and "train_000002.bin" in whole
    for name in whole:
        assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "resumed" / name).read_bytes(), name


def test_prepare_data_bad_input_exits_2_naming_file_and_record(tool, tmp_path):
    out = tmp_path / "out"
    missing = tmp_path / "no-such-file.txt"
    proc = tool("prepare-data", missing, "-o", out, "--train-bpe", 300)
    assert proc.returncode == 2 and one_line_error(proc).startswith(f"entrank: {missing}: cannot read")

    jl = tmp_path / "docs.jsonl"
    jl.write_text('{"text": "a b c"}\n{"body": "d e f"}\n')
    proc = tool("prepare-data", jl, "-o", out, "--train-bpe", 300)
    assert proc.returncode == 2
    assert one_line_error(proc) == f'entrank: {jl}: record 2: missing field "text"'

    proc = tool("prepare-data", jl, "-o", out, "--train-bpe", 2**32 + 1, "--field", "text")
    assert proc.returncode == 2 and "over 2^32" in one_line_error(proc)

    huge = tmp_path / "tokenizer.json"
    huge.write_text(json.dumps({"model": {"type": "BPE", "vocab": {"a": 0, "b": 2**32}}, "added_tokens": []}))
    txt = tmp_path / "doc.txt"
    txt.write_text("a b")
    proc = tool("prepare-data", txt, "-o", out, "--tokenizer", huge)
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert line.startswith(f"entrank: {huge}: model.vocab: ") and "over 2^32" in line
    assert not out.exists()


def test_prepare_data_reads_parquet_and_jsonl_fields(tool, tools_python, tmp_path):
    import subprocess
    pq = tmp_path / "docs.parquet"
    subprocess.run([str(tools_python), "-c", "import sys, pyarrow as pa, pyarrow.parquet as pq\n"
                    "pq.write_table(pa.table({'body': ['the cat sat on the mat ' * 20, 'a dog ran ' * 30]}), sys.argv[1])",
                    str(pq)], check=True)
    tool("prepare-data", pq, "--column", "body", "-o", tmp_path / "pq", "--train-bpe", 300, "--val-fraction", 0.5,
         "--output", "megatron", "--no-progress", check=0)
    m = json.loads((tmp_path / "pq" / "manifest.json").read_text())
    assert m["documents"] == 2 and m["splits"]["val"]["documents"] == 1
    assert (tmp_path / "pq" / "train.idx").read_bytes()[:9] == b"MMIDIDX\x00\x00"
    proc = tool("prepare-data", pq, "--column", "text", "-o", tmp_path / "pq2", "--train-bpe", 300)
    assert proc.returncode == 2 and 'column "text": missing' in one_line_error(proc)
