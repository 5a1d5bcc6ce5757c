"""tools/export-hf for models that are not GPT-2 (issue 16, Interop): the self-contained PyTorch
module (modeling_entrank.py) it ships must reproduce entrank's logits within 1e-4 relative on
checkpoints of configs/tiny-sga.cfg (and each SGA ablation a checkpoint can carry), of
configs/tiny-r3si.cfg after monitor steps (R3SI's stored V_c and alpha_c injected), and of the
head_scale variant with an attention temperature. entrank's side is `generate --logprobs-out`
(the log-probabilities of its evaluation pass), compared as tests/test_corpus_to_model.py does."""
import json
import subprocess

import h5py
import numpy as np
import pytest

from conftest import set_args

# A few steps of each preset, with a batch that keeps each run to seconds.
SHORT = set_args("train.steps=3", "train.warmup_steps=1", "model.init_std=0.2", "sga.alpha_init=0.5", "train.batch_size=8", "train.micro_batch_size=8",
                 "eval.every=0", "train.log_every=1")
R3SI = ["-c", "configs/tiny-r3si.cfg", *set_args("train.steps=12", "train.warmup_steps=2", "r3si.monitor_every=5",
                                                 "train.batch_size=8", "train.micro_batch_size=8", "eval.every=0")]

COMPARE = r"""
import json, sys, numpy as np, torch
sys.path.insert(0, sys.argv[1])
from modeling_entrank import EntrankForCausalLM
m = EntrankForCausalLM.from_pretrained(sys.argv[1]).eval()
ids = torch.tensor(np.loadtxt(sys.argv[2], dtype=np.int64, ndmin=2))
out = {}
with torch.no_grad():
    out["module"] = torch.log_softmax(m(ids).double(), -1).numpy()
    # The same model with its method switched off: the comparison must be able to fail.
    for b in m.blocks:
        if b.r3si is not None:
            b.r3si.alpha.zero_()
        b.sga = b.head_scale = None
    out["without"] = torch.log_softmax(m(ids).double(), -1).numpy()
np.savez(sys.argv[3], **out)
"""


def compare(entrank, tool, tools_python, ckpt, tmp_path, name):
    """(relative error of the module against entrank, relative change without the method)."""
    hf = tmp_path / f"hf-{name}"
    tool("export-hf", ckpt, hf, check=0)
    assert {"config.json", "model.safetensors", "modeling_entrank.py"} <= {p.name for p in hf.iterdir()}
    batch = np.random.default_rng(0).integers(0, 64, (3, 64))
    prompts = tmp_path / f"{name}.txt"
    prompts.write_text("\n".join(" ".join(map(str, row)) for row in batch) + "\n")
    entrank("generate", "--checkpoint", ckpt, "--prompt-file", prompts, "--max-tokens", 0,
            "--logprobs-out", tmp_path / f"{name}.npy", check=0)
    # The module runs from the exported directory alone: a fresh interpreter, nothing of tools/ on the path.
    proc = subprocess.run([str(tools_python), "-I", "-c", COMPARE, str(hf), str(prompts), str(tmp_path / f"{name}.npz")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    ours, theirs = np.load(tmp_path / f"{name}.npy"), np.load(tmp_path / f"{name}.npz")
    scale = np.abs(theirs["module"]).max()
    assert ours.shape == theirs["module"].shape == (3, 64, 64)
    return (np.abs(ours - theirs["module"]).max() / scale, np.abs(ours - theirs["without"]).max() / scale,
            json.loads((hf / "config.json").read_text()))


@pytest.mark.parametrize("name, extra", [
    ("sga", []),
    ("sga-no-dct", ["sga.spectral=false"]),
    ("sga-fixed", ["sga.fixed_filter=true"]),
    ("sga-no-blend", ["sga.blend=false", "sga.gate_hidden=16"]),
])
def test_the_sga_module_reproduces_entranks_logits(name, extra, entrank, tool, tools_python, tmp_path):
    run = tmp_path / "run"
    entrank("train", "-c", "configs/tiny-sga.cfg", *SHORT, *set_args(*extra), "--run-dir", run, check=0)
    err, change, cfg = compare(entrank, tool, tools_python, run, tmp_path, name)
    assert err <= 1e-4, err
    # Without SGA the module would miss the tolerance: the comparison can fail (measured: changes
    # of 4e-4 to 6e-3 against errors of ~1e-6).
    assert change > max(1e-4, 100 * err), change
    # The checkpoint's ablation settings travel in config.json.
    assert cfg["attention"] == "sga" and cfg["norm"] == "post"
    assert cfg["sga"]["spectral"] == ("sga.spectral=false" not in extra)
    assert cfg["sga"]["fixed_filter"] == ("sga.fixed_filter=true" in extra)
    assert cfg["sga"]["blend"] == ("sga.blend=false" not in extra)
    assert cfg["sga"]["gate_hidden"] == (16 if "sga.gate_hidden=16" in extra else 64)


def test_the_r3si_module_injects_the_stored_buffers_as_entrank_does(entrank, tool, tools_python, tmp_path):
    run = tmp_path / "run"
    entrank("train", *R3SI, "--run-dir", run, check=0)
    ckpt = run / "checkpoints" / "step_00000012.h5"
    with h5py.File(ckpt, "r") as f:
        alpha, V = f["r3si/alpha"][...], f["r3si/V"][...]
        assert f.attrs["r3si.monitors"] == 3   # steps 0, 5, 10
    assert (alpha > 0).all() and np.abs(V).max() > 0   # non-trivial buffers: the injection is on
    err, change, cfg = compare(entrank, tool, tools_python, ckpt, tmp_path, "r3si")
    assert err <= 1e-4, err
    assert change > max(1e-4, 100 * err), change
    assert cfg["r3si"] == {"inject": True, "layers": [7, 9, 11, 13], "k": 16, "d_s": 8}
    # safetensors lives in the tools' venv, not in the interpreter running the tests.
    tensors = tmp_path / "r3si-buffers.npz"
    subprocess.run([str(tools_python), "-c", "import sys, numpy as np\nfrom safetensors.numpy import load_file\n"
                    "t = load_file(sys.argv[1]); np.savez(sys.argv[2], **{k: t[k] for k in ('r3si.alpha', 'r3si.V')})",
                    str(tmp_path / "hf-r3si" / "model.safetensors"), str(tensors)], check=True)
    t = np.load(tensors)
    assert np.array_equal(t["r3si.alpha"], alpha) and np.array_equal(t["r3si.V"], V)


def test_head_scale_an_untied_head_and_an_attention_temperature(entrank, tool, tools_python, tmp_path):
    run = tmp_path / "run"
    entrank("train", "-c", "configs/tiny-sga.cfg", *SHORT,
            *set_args('attention.kind="head_scale"', "model.tie_embeddings=false", 'temperature.mode="attention"',
                      "temperature.gamma=0.5", "temperature.beta=0.5"),
            "--run-dir", run, check=0)
    err, change, cfg = compare(entrank, tool, tools_python, run, tmp_path, "head-scale")
    assert err <= 1e-4, err
    assert cfg["tie_embeddings"] is False and cfg["attention"] == "head_scale"
    # temp(step 2) = 1 + 0.5 tanh(0.5 x 2): the logits are divided by it
    assert abs(cfg["attn_temperature"] - (1 + 0.5 * np.tanh(1.0))) < 1e-12


def test_llmc_out_is_refused_for_a_model_that_is_not_gpt2(entrank, tool, tmp_path):
    run = tmp_path / "run"
    entrank("train", "-c", "configs/tiny-sga.cfg", *SHORT, *set_args("train.steps=2", "model.n_layer=2"),
            "--run-dir", run, check=0)
    proc = tool("export-hf", run, tmp_path / "hf", "--llmc-out", tmp_path / "m.bin")
    assert proc.returncode == 2 and "--llmc-out writes GPT-2 models only" in proc.stderr
    assert not (tmp_path / "hf").exists() and not (tmp_path / "m.bin").exists()
