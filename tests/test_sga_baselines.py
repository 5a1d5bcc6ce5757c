"""The SGA post's runs on configs/tiny-sga.cfg: SGA, its four ablations and five baselines each
train a few steps and change what they should (docs/design.md sections 3 and 5)."""
import re

import h5py
import numpy as np
import pytest
from conftest import read_group, set_args

FAST = ["-c", "configs/tiny-sga.cfg", "--set", "train.steps=3", "--set", "train.warmup_steps=1",
        "--set", "train.batch_size=8", "--set", "train.micro_batch_size=8", "--set", "eval.batches=1",
        "--set", "model.n_layer=6", "--set", "train.log_every=1"]
SDPA = ["--set", "attention.kind=sdpa"]


def train(entrank, run, *extra):
    entrank("train", *FAST, *extra, "--run-dir", run, check=0)
    checkpoint = run / "checkpoints" / "step_00000003.h5"
    return read_group(checkpoint, "params"), read_group(checkpoint, "adam_m"), read_group(run / "metrics.h5", "steps")


def test_sga_trains_and_moves_its_gate_and_alpha(entrank, tmp_path):
    params, _, steps = train(entrank, tmp_path / "run")
    assert np.all(np.isfinite(steps["loss"]))
    assert params["blocks.sga_w1"].shape == (6, 64, 36) and params["blocks.sga_w2"].shape == (6, 64, 64)
    alpha = params["blocks.sga_alpha"][:, 0]
    assert np.all(alpha != np.float32(0.1)) and np.all(np.abs(alpha - 0.1) < 0.05)


@pytest.mark.parametrize("override,present,absent,shapes", [
    ("sga.spectral=false", ["blocks.sga_w1", "blocks.sga_alpha"], [], {}),
    ("sga.fixed_filter=true", ["blocks.sga_alpha"], ["blocks.sga_w1", "blocks.sga_w2", "blocks.sga_e"], {}),
    ("sga.blend=false", ["blocks.sga_w1"], ["blocks.sga_alpha"], {}),
    ("sga.gate_hidden=16", ["blocks.sga_w1"], [], {"blocks.sga_w1": (6, 16, 36), "blocks.sga_w2": (6, 64, 16)}),
])
def test_ablations_train_with_their_own_parameters(entrank, tmp_path, override, present, absent, shapes):
    params, _, steps = train(entrank, tmp_path / "run", "--set", override)
    assert np.all(np.isfinite(steps["loss"]))
    for k in present:
        assert k in params, k
    for k in absent:
        assert k not in params, k
    for k, shape in shapes.items():
        assert params[k].shape == shape


def test_ablations_change_the_model(entrank, tmp_path):
    losses = {}
    for name, extra in [("sga", []), ("no-spectral", ["--set", "sga.spectral=false"]),
                        ("fixed", ["--set", "sga.fixed_filter=true"]), ("sdpa", SDPA)]:
        # A strong blend and larger weights so that every mechanism shows at the first steps.
        strong = set_args("sga.alpha_init=0.9", "model.init_std=0.2")
        losses[name] = train(entrank, tmp_path / name, *strong, *extra)[2]["loss"][0]
    # Same weights where they are shared, same data: the losses differ only through the mechanism.
    values = sorted(losses.values())
    assert min(np.diff(values)) > 1e-6, losses


def test_entropy_regularisation_adds_the_documented_aux_loss(entrank, tmp_path):
    _, _, plain = train(entrank, tmp_path / "plain", *SDPA)
    _, _, reg = train(entrank, tmp_path / "reg", *SDPA, "--set", "reg.entropy_coef=0.01")
    assert np.all(plain["aux_loss"] == 0)
    # -coef x mean of H_i / ln(i+1) in (0, 1]: the aux loss lies in [-0.01, 0).
    assert np.all(reg["aux_loss"] < 0) and np.all(reg["aux_loss"] >= -0.01)
    np.testing.assert_allclose(reg["loss"], reg["lm_loss"] + reg["aux_loss"], rtol=1e-12)
    # The first step's LM loss is the same model on the same data; the update then differs.
    assert reg["lm_loss"][0] == plain["lm_loss"][0]
    assert reg["lm_loss"][-1] != plain["lm_loss"][-1]


def _mix64(x):
    M = (1 << 64) - 1
    x = (x + 0x9E3779B97F4A7C15) & M
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M
    return x ^ (x >> 31)


def _uniform(seed, stream, counter):
    h = _mix64(_mix64(_mix64(seed) ^ stream) ^ counter)
    return ((h >> 11) + 0.5) / 9007199254740992.0


def test_layerdrop_skips_exactly_the_drawn_blocks(entrank, tmp_path):
    p, L, seed = 0.5, 6, 1337
    run = tmp_path / "ld"
    entrank("train", *FAST, *SDPA, "--set", "train.steps=1", "--set", "train.warmup_steps=0",
            "--set", "drop.mode=layerdrop", "--set", f"drop.p={p}", "--run-dir", run, check=0)
    skipped = [_uniform(seed, 0x4C61796572447270, l) < p for l in range(L)]   # step 0, layer l
    assert 0 < sum(skipped) < L, skipped          # the draw exercises both cases
    with h5py.File(run / "checkpoints" / "step_00000001.h5", "r") as f:
        m = f["adam_m/blocks.qkv_w"][...]
    for layer in range(L):
        assert (np.abs(m[layer]).max() == 0) == skipped[layer], (layer, skipped)


def test_head_pruning_masks_a_quarter_of_the_heads_and_changes_the_loss(entrank, tmp_path):
    run = tmp_path / "run"
    entrank("train", *FAST, *SDPA, "--run-dir", run, check=0)
    ckpt = run / "checkpoints" / "step_00000003.h5"
    out = entrank("eval", *FAST, *SDPA, "--checkpoint", ckpt, "--prune-heads", "0.25", check=0).stdout
    pruned = re.search(r"pruned (\d+) of (\d+) heads .*: (.*)", out)
    assert pruned.group(1) == "6" and pruned.group(2) == "24"    # 25% of 6 layers x 4 heads
    assert len(pruned.group(3).split()) == 6
    before = float(re.search(r"before pruning: val loss ([0-9.]+)", out).group(1))
    after = float(re.search(r"^val loss ([0-9.]+)", out, re.M).group(1))
    assert before != after
    plain = entrank("eval", *FAST, *SDPA, "--checkpoint", ckpt, check=0).stdout
    assert float(re.search(r"^val loss ([0-9.]+)", plain, re.M).group(1)) == before


def test_norm_and_init_baselines(entrank, tmp_path):
    post, _, _ = train(entrank, tmp_path / "post", *SDPA, *set_args("model.norm=post", "model.scaled_init=false"))
    pre, _, s = train(entrank, tmp_path / "pre", *SDPA, *set_args("model.norm=pre", "model.scaled_init=true"))
    assert np.all(np.isfinite(s["loss"]))
    assert "norm = \"pre\"" in (tmp_path / "pre" / "config.cfg").read_text()


@pytest.mark.parametrize("name", ["sga", "sdpa", "entropy-reg", "layerdrop", "head-pruning", "prenorm-scaled",
                                  "ablation-no-spectral", "ablation-fixed-filter", "ablation-no-blend", "ablation-gate16"])
def test_paper_configs_load_with_the_posts_recipe(entrank, name):
    out = entrank("info", "-c", f"configs/sga/{name}.cfg", check=0).stdout
    assert "48 layers, 12 heads" in out and "seq_len 512" in out
    assert "100000 steps x 256 sequences x 512 tokens" in out
    assert ("SGA:" in out) == name.startswith(("sga", "ablation"))


def test_info_reports_sga_overheads(entrank):
    out = entrank("info", "-c", "configs/tiny-sga.cfg", check=0).stdout
    m = re.search(r"SGA: (\d+) extra parameters per layer \((\d+) in all", out)
    T, De, Hg = 64, 32, 64
    per_layer = De + Hg * (De + 4) + Hg + T * Hg + T + 1
    assert int(m.group(1)) == per_layer and int(m.group(2)) == 12 * per_layer
    assert "extra FLOPs per token" in out
