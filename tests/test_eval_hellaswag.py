"""`entrank eval --task hellaswag FILE` (issue 16) and eval's checkpoint forms (issue 17): a tiny
model trained on a corpus of four repeated sentences (prepare-data -> train), HellaSwag-format items
tokenized by tools/prepare-hellaswag, and accuracies checked against the pattern the model learned
and against a scoring of the same items from `generate --logprobs-out` in NumPy."""
import json
import random
import shutil
import subprocess

import h5py
import numpy as np
import pytest

from conftest import ROOT, entrank_error, one_line_error, set_args

SENTENCES = ["the cat sat on the mat.", "a dog ran in the fog.", "my hat is red and big.", "we eat fish at noon."]
CONFIG = ROOT / "configs" / "tiny-corpus.cfg"
VOCAB = 300
STEPS = 60

# Items whose right ending continues one of the sentences; the wrong ones end other sentences.
PATTERN_ITEMS = [
    {"ctx_a": "the cat sat on", "ctx_b": "the", "endings": ["mat.", "fog.", "noon.", "red and big."], "label": 0},
    {"ctx": "a dog ran in the", "endings": ["mat.", "noon.", "fog.", "is red."], "label": 2},
    {"ctx": "my hat is", "endings": ["on the mat.", "in the fog.", "red and big.", "at noon."], "label": 2},
    {"ctx": "we eat fish", "endings": ["on the mat.", "in the fog.", "red and big.", "at noon."], "label": 3},
    {"ctx": "the cat", "endings": ["ran in the fog.", "sat on the mat.", "eat fish.", "is red."], "label": 1},
    {"ctx": "a dog", "endings": ["sat on the mat.", "eat fish.", "ran in the fog.", "is big."], "label": 2},
]


def write_jsonl(path, items):
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    return path


@pytest.fixture(scope="module")
def run(tool, entrank, tmp_path_factory):
    """prepare-data (a 300-token BPE) on six documents of the four sentences, then 60 steps of
    tiny-corpus on its shards: RUN/checkpoints/step_00000060.h5, RUN/metrics.h5."""
    base = tmp_path_factory.mktemp("hellaswag")
    rng = random.Random(0)
    (base / "text").mkdir()
    for d in range(6):
        (base / "text" / f"doc{d}.txt").write_text(" ".join(rng.choice(SENTENCES) for _ in range(600)))
    data = base / "data"
    tool("prepare-data", base / "text", "-o", data, "--train-bpe", VOCAB, "--workers", 2, "--val-fraction", 0.2,
         "--no-progress", check=0)
    run = base / "run"
    entrank("train", "-c", CONFIG, *set_args(f"model.vocab_size={VOCAB}", f'data.train="{data}/train_*.bin"',
                                             f'data.val="{data}/val_*.bin"', f"train.steps={STEPS}",
                                             f"checkpoint.every={STEPS // 2}"),
            "--run-dir", run, "--resume", "never", check=0)
    return run


def acc_line(stdout):
    """(items, acc_norm count, acc count) from eval's result line."""
    line = next(l for l in stdout.splitlines() if l.startswith("hellaswag "))
    parts = line.split(" | ")
    items = int(parts[1].split()[0])
    norm = int(parts[2].split("(")[1].rstrip(")"))
    plain = int(parts[3].split("(")[1].rstrip(")"))
    assert parts[2].startswith(f"acc_norm {norm / items:.4f}") and parts[3].startswith(f"acc {plain / items:.4f}")
    return items, norm, plain


def test_a_model_trained_on_the_pattern_picks_its_endings_and_the_rows_reach_metrics_h5(run, tool, tools_python, entrank, tmp_path):
    src = write_jsonl(tmp_path / "items.jsonl", PATTERN_ITEMS)
    tok = tmp_path / "items.tok"
    tool("prepare-hellaswag", src, "-o", tok, "--checkpoint", run / "checkpoints" / "latest", check=0)
    lines = tok.read_text().splitlines()
    assert lines[0].startswith("# entrank hellaswag tokens: 6 items") and len(lines) == 8
    # The context is tokenized alone, each ending with a space in front (llm.c's rendering).
    # tokenizers lives in the tools' venv, not in the interpreter running the tests.
    enc = subprocess.run([str(tools_python), "-c", "import json, sys\nfrom tokenizers import Tokenizer\n"
                          "t = Tokenizer.from_file(sys.argv[1])\nprint(json.dumps([t.encode(s).ids for s in sys.argv[2:]]))",
                          str(run.parent / "data" / "tokenizer.json"), "the cat sat on the", " red and big."],
                         capture_output=True, text=True, check=True)
    ctx_ids, end_ids = json.loads(enc.stdout)
    label, ctx, *ends = lines[2].split(" | ")
    assert label == "0" and ctx.split() == [str(i) for i in ctx_ids]
    assert ends[3].split() == [str(i) for i in end_ids]

    out = entrank("eval", "--checkpoint", run, "--task", "hellaswag", tok, check=0).stdout
    assert acc_line(out) == (6, 6, 6)
    # The same items with every label moved to a wrong ending: no item right.
    wrong = [dict(i, label=(i["label"] + 1) % 4) for i in PATTERN_ITEMS]
    tool("prepare-hellaswag", write_jsonl(tmp_path / "wrong.jsonl", wrong), "-o", tmp_path / "wrong.tok",
         "--checkpoint", run / "checkpoints" / "latest", check=0)
    out = entrank("eval", "--checkpoint", run / "checkpoints" / "step_00000030.h5", "--task", "hellaswag",
                  tmp_path / "wrong.tok", check=0).stdout
    items, norm, _ = acc_line(out)
    assert items == 6 and norm <= 1   # step 30 is half-trained: at most one slip
    with h5py.File(run / "metrics.h5", "r") as f:
        g = f["eval/hellaswag"]
        rows = {k: g[k][-2:].tolist() for k in ("step", "acc_norm", "acc", "items")}
        assert g["acc_norm"].attrs["units"] in (b"fraction", "fraction")
        assert "step" in f["eval"] and f["eval/step"].shape[0] >= 1   # validation rows untouched
    assert rows["step"] == [STEPS, STEPS // 2] and rows["items"] == [6, 6]
    # A resume of the run rewinds /eval's rows; the scores of checkpoints in /eval/hellaswag stay
    # (a resumed run writes those checkpoints again bitwise), and no HDF5 error stack is printed.
    again = tmp_path / "resumed"
    shutil.copytree(run, again)
    proc = entrank("train", "-c", CONFIG, "--run-dir", again, "--resume", again / "checkpoints" / "step_00000030.h5",
                   *set_args(f"model.vocab_size={VOCAB}", f'data.train="{run.parent}/data/train_*.bin"',
                             f'data.val="{run.parent}/data/val_*.bin"', f"train.steps={STEPS}",
                             f"checkpoint.every={STEPS // 2}"), check=0)
    assert "HDF5" not in proc.stderr, proc.stderr
    with h5py.File(again / "metrics.h5", "r") as f:
        assert f["eval/hellaswag/step"][-2:].tolist() == [STEPS, STEPS // 2]
        assert f["eval/step"][:].tolist() == sorted(set(f["eval/step"][:].tolist()))   # each evaluation once
    # ... and the result lines to the run's log
    log = (run / "log.txt").read_text()
    assert f"eval step {STEPS} | hellaswag {tok} | 6 items, 4 endings | acc_norm 1.0000 (6) | acc 1.0000 (6)\n" in log
    assert f"eval step {STEPS // 2} | hellaswag {tmp_path / 'wrong.tok'} | 6 items" in log
    assert rows["acc_norm"] == [1.0, norm / 6] and rows["acc"][0] == 1.0


def expected_from_logprobs(entrank, ckpt, items, T, tmp_path):
    """acc_norm and acc counts of `items` (label, ctx ids, [ending ids]) scored in NumPy from
    generate's log-probabilities: each ending's prompt is context ++ ending cut from the left to
    T + 1 tokens, without its last token, padded to T (causality makes the padding irrelevant)."""
    rows, spans = [], []
    for label, ctx, ends in items:
        for e in ends:
            full = ctx + e
            drop = max(0, len(full) - 1 - T)
            inp = full[drop:-1]
            rows.append(inp + [0] * (T - len(inp)))
            first = len(ctx) - drop - 1   # position predicting the ending's first token
            spans.append([(first + j, e[j]) for j in range(len(e))])
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(" ".join(map(str, r)) for r in rows) + "\n")
    entrank("generate", "--checkpoint", ckpt, "--prompt-file", prompts, "--max-tokens", 0,
            "--logprobs-out", tmp_path / "lp.npy", check=0)
    lp = np.load(tmp_path / "lp.npy").astype(np.float64)
    norm = plain = 0
    k = 0
    for label, ctx, ends in items:
        sums, means = [], []
        for e in ends:
            s = -sum(lp[k, t, tok] for t, tok in spans[k])
            sums.append(s)
            means.append(s / len(e))
            k += 1
        norm += int(np.argmin(means)) == label
        plain += int(np.argmin(sums)) == label
    return norm, plain


def test_accuracy_equals_a_numpy_scoring_of_generates_logprobs_and_pp2_dp2_agree(run, entrank, mpirun, tmp_path):
    # Random endings of random lengths (1-6 tokens) after random contexts: the model's choice is
    # anyone's guess, so acc and acc_norm differ, and two items exceed seq_len (64) and are cut.
    rng = np.random.default_rng(3)
    items = []
    for i in range(24):
        ctx_len = 70 if i < 2 else int(rng.integers(2, 12))
        ctx = rng.integers(1, VOCAB, ctx_len).tolist()
        ends = [rng.integers(1, VOCAB, int(rng.integers(1, 7))).tolist() for _ in range(4)]
        items.append((int(rng.integers(0, 4)), ctx, ends))
    tok = tmp_path / "random.tok"
    tok.write_text("# hand-made\n\n" + "".join(f"{l} | {' '.join(map(str, c))} | " + " | ".join(" ".join(map(str, e)) for e in ends) + "\n"
                                             for l, c, ends in items))
    ckpt = run / "checkpoints" / "step_00000030.h5"
    norm, plain = expected_from_logprobs(entrank, ckpt, items, 64, tmp_path)
    assert norm != plain   # the two rules disagree somewhere: each is checked on its own
    args = ("eval", "--checkpoint", ckpt, "--task", "hellaswag", tok)
    assert acc_line(entrank(*args, check=0).stdout) == (24, norm, plain)
    # micro_batch_size 8: two items (of 4 endings) per pass, so passes go round-robin over replicas
    for extra in (set_args("parallel.pp=2"), set_args("train.micro_batch_size=4")):
        assert acc_line(mpirun(2, *args, *extra, check=0).stdout) == (24, norm, plain)


def test_bad_token_files_exit_2_naming_the_file_and_line(run, entrank, tmp_path):
    cases = [
        ("0 | 1 2 | 3 | 4\n1 | 5 | 6 | 7 | 8\n", "line 2: 3 endings, but line 1 has 2 (every item needs the same number)"),
        ("0 | 1 2 | 3\n", "line 1: expected 'LABEL | CONTEXT IDS | ENDING IDS | ...' with at least 2 endings"),
        ("0 | 1 2 | 3 | 4 | 5 | 6\n# note\n4 | 1 | 2 | 3 | 4 | 5\n", "line 3: label 4 is not the index of one of the 4 endings"),
        ("0 | 1 2 | 3 | 300 | 5 | 6\n", "line 1: ending 1: token id 300 is outside the vocabulary (model.vocab_size 300)"),
        ("0 | 1 x | 3 | 4\n", "line 1: context: 'x' is not a token id"),
        ("0 | | 3 | 4\n", "line 1: context is empty"),
        ("a | 1 | 3 | 4\n", "line 1: label 'a' is not an integer"),
        ("0 | 1 | " + " ".join(["5"] * 65) + " | 4\n", "line 1: ending 0 has 65 tokens, more than model.seq_len 64"),
        ("# only a comment\n", "no items"),
    ]
    for i, (text, message) in enumerate(cases):
        path = tmp_path / f"bad{i}.tok"
        path.write_text(text)
        before = [(run / name).read_bytes() for name in ("metrics.h5", "log.txt")]
        proc = entrank("eval", "--checkpoint", run, "--task", "hellaswag", path)
        line = entrank_error(proc)
        assert line == f"entrank: {path}: {message}" or (message == "no items" and line.startswith(f"entrank: {path}: no items")), line
        assert [(run / name).read_bytes() for name in ("metrics.h5", "log.txt")] == before
    proc = entrank("eval", "--checkpoint", run, "--task", "hellaswag", tmp_path / "missing.tok")
    assert entrank_error(proc).startswith(f"entrank: {tmp_path / 'missing.tok'}: cannot read")
    assert "missing FILE" in one_line_error(entrank("eval", "--checkpoint", run, "--task", "hellaswag"))
    assert "unknown task 'mmlu'" in one_line_error(entrank("eval", "--checkpoint", run, "--task", "mmlu", "x"))


def test_prepare_hellaswag_bad_input_exits_2_naming_the_file_and_line(run, tool, tmp_path):
    good = json.dumps(PATTERN_ITEMS[1])
    cases = [
        (good + "\n{not json\n", 'line 2: not JSON'),
        (good + '\n{"ctx": "a", "label": 0}\n', 'line 2: missing field "endings"'),
        ('{"endings": ["a", "b"], "label": 0}\n', 'line 1: missing field "ctx" (or "ctx_a" and "ctx_b")'),
        ('{"ctx": "a", "endings": ["a", "b"], "label": 2}\n', 'line 1: field "label": 2 is not the index of one of the 2 endings'),
        (good + '\n{"ctx": "a", "endings": ["a", "b"], "label": 0}\n', 'line 2: field "endings": 2 endings, but line 1 has 4'),
    ]
    for i, (text, message) in enumerate(cases):
        src, out = tmp_path / f"bad{i}.jsonl", tmp_path / f"bad{i}.tok"
        src.write_text(text)
        proc = tool("prepare-hellaswag", src, "-o", out, "--checkpoint", run)
        assert proc.returncode == 2
        assert one_line_error(proc).startswith(f"entrank: {src}: {message}"), proc.stderr
        assert not out.exists()


def test_eval_takes_a_checkpoint_file_the_latest_pointer_or_a_run_directory_and_its_config(run, entrank, tmp_path):
    ckpt = run / "checkpoints" / f"step_{STEPS:08d}.h5"
    outs = [entrank("eval", "--checkpoint", p, check=0).stdout for p in (ckpt, run / "checkpoints" / "latest", run)]
    # No -c: the checkpoint's config (its data.val), the same val loss from every form.
    vals = [next(l for l in o.splitlines() if l.startswith("val loss")) for o in outs]
    assert vals[0] == vals[1] == vals[2] and all(f"checkpoint {ckpt} (step {STEPS})" in o for o in outs)
    # --set still overrides evaluation keys; -c still works.
    one = entrank("eval", "--checkpoint", run, *set_args("eval.batches=2"), check=0).stdout
    assert "in 2 batches" in one and "in 1 batches" in outs[0]
    same = entrank("eval", "-c", run / "config.cfg", "--checkpoint", run, check=0).stdout
    assert next(l for l in same.splitlines() if l.startswith("val loss")) == vals[0]
    # None of the three: one line, exit 2, nothing from MPI-IO.
    (tmp_path / "empty").mkdir()
    not_ckpt = tmp_path / "notes.txt"
    not_ckpt.write_text("hello\n")
    pointer = tmp_path / "latest"
    pointer.write_text("step_00000099.h5\n")
    for path, message in [(tmp_path / "nope.h5", "cannot read checkpoint: No such file or directory"),
                          (tmp_path / "empty", "a directory without checkpoints/latest"),
                          (not_ckpt, "neither an HDF5 checkpoint nor a `latest` pointer"),
                          (pointer, f"names {tmp_path / 'step_00000099.h5'}, which is not a readable checkpoint file")]:
        proc = entrank("eval", "--checkpoint", path)
        assert proc.returncode == 2 and proc.stdout == ""
        line = one_line_error(proc)
        assert line.startswith(f"entrank: {path}: {message}"), line


def test_a_checkpoint_written_by_a_pipeline_evaluates_on_one_rank_with_its_own_config(run, entrank, mpirun, tmp_path):
    # The stored config says parallel.pp = 2; eval and generate without -c run on the world they get.
    data = run.parent / "data"
    pp_run = tmp_path / "pp2"
    mpirun(2, "train", "-c", CONFIG, *set_args(f"model.vocab_size={VOCAB}", f'data.train="{data}/train_*.bin"',
                                               f'data.val="{data}/val_*.bin"', "train.steps=2", "train.warmup_steps=1",
                                               "parallel.pp=2"),
           "--run-dir", pp_run, "--resume", "never", check=0)
    assert "pp = 2;" in (pp_run / "config.cfg").read_text().replace("  ", " ")
    one = entrank("eval", "--checkpoint", pp_run, check=0).stdout
    assert "1 ranks: dp 1 x pp 1" in one
    two = mpirun(2, "eval", "--checkpoint", pp_run, *set_args("parallel.pp=2"), check=0).stdout
    assert "2 ranks: dp 1 x pp 2" in two
    val = [next(l for l in o.splitlines() if l.startswith("val loss")) for o in (one, two)]
    assert val[0].split("|")[0] == val[1].split("|")[0]   # the same loss to the printed digits
    assert entrank("generate", "--checkpoint", pp_run, "--prompt", "1 2", "--max-tokens", 3, "--temperature", 0,
                   check=0).stdout.split() == mpirun(2, "generate", "--checkpoint", pp_run, "--prompt", "1 2", "--max-tokens", 3,
                                                     "--temperature", 0, check=0).stdout.split()
