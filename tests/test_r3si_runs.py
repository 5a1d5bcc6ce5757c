"""R3SI, its ablations, the R3SI post's baselines and the temperature schedule on
configs/tiny-r3si.cfg: each trains a few steps and does what it should (docs/design.md sections 4, 5)."""
import os
import re
import subprocess

import h5py
import numpy as np
import pytest
from conftest import MPI_ENV, ROOT, mpirun_cmd, read_losses

FAST = ["-c", "configs/tiny-r3si.cfg", "--set", "train.steps=6", "--set", "train.warmup_steps=1",
        "--set", "train.batch_size=8", "--set", "train.micro_batch_size=4", "--set", "eval.batches=1",
        "--set", "r3si.monitor_every=2", "--set", "model.n_layer=8", "--set", "r3si.layers=[3, 4, 5, 6]",
        "--set", "train.log_every=1"]
TAU0 = 0.4 * 64


def run(entrank, path, *extra):
    entrank("train", *FAST, *extra, "--run-dir", path, check=0)
    with h5py.File(path / "metrics.h5", "r") as f:
        steps = {k: f["steps"][k][...] for k in f["steps"]}
        r3si = {k: f["r3si"][k][...] for k in f["r3si"]} if "r3si" in f else {}
        if r3si:
            r3si["layers"] = list(f["r3si/rank"].attrs["axis1_layer"])
    with h5py.File(path / "checkpoints" / "step_00000006.h5", "r") as f:
        params = set(f["params"].keys())
    return steps, r3si, params


def test_r3si_monitors_injects_and_adds_lsd(entrank, tmp_path):
    steps, r3, params = run(entrank, tmp_path / "run")
    assert list(r3["step"]) == [0, 2, 4] and r3["layers"] == [3, 4, 5, 6]
    assert r3["tau"][0] == pytest.approx(TAU0)                # first monitor: rho = rho_ref
    # alpha = max(0, tau - rank) / tau, from the logged tau and rank
    np.testing.assert_allclose(r3["alpha"], np.maximum(0, r3["tau"][:, None] - r3["rank"]) / r3["tau"][:, None], rtol=1e-12)
    assert np.all(r3["rank"] > 0) and np.all(r3["rank"] <= 64)
    assert np.all(r3["inject_ratio"][0] == 0)                 # alpha is 0 before the first monitor step
    assert np.all(r3["inject_ratio"][1:] > 0)
    assert np.all(steps["lsd"] > 0) and np.allclose(steps["aux_loss"], steps["lsd"])
    assert "blocks.r3si_ws" in params


def test_sim_only_keeps_tau_fixed_and_has_no_lsd(entrank, tmp_path):
    steps, r3, params = run(entrank, tmp_path / "run", "--set", "r3si.adaptive=false", "--set", "r3si.lsd_lambda=0")
    assert np.all(r3["tau"] == TAU0)
    assert np.all(steps["lsd"] == 0) and np.all(steps["aux_loss"] == 0)
    assert np.all(r3["inject_ratio"][1:] > 0)


def test_lsd_only_never_injects(entrank, tmp_path):
    steps, r3, params = run(entrank, tmp_path / "run", "--set", "r3si.inject=false")
    assert "blocks.r3si_ws" not in params
    assert np.all(r3["inject_ratio"] == 0)
    assert np.all(steps["lsd"] > 0)


def test_monitor_and_adaptive_only_moves_tau_without_touching_the_model(entrank, tmp_path):
    steps, r3, params = run(entrank, tmp_path / "run", "--set", "r3si.inject=false", "--set", "r3si.lsd_lambda=0")
    plain, _, _ = run(entrank, tmp_path / "plain", "--set", "r3si.enabled=false")
    assert "blocks.r3si_ws" not in params and np.all(steps["lsd"] == 0)
    assert len(set(r3["tau"])) > 1                            # the threshold follows gradient diversity
    assert steps["loss"].tobytes() == plain["loss"].tobytes()   # monitoring changes nothing


def test_early_placement_monitors_the_early_blocks(entrank, tmp_path):
    _, r3, _ = run(entrank, tmp_path / "run", "--set", "r3si.layers=[1, 2, 3, 4]")
    assert r3["layers"] == [1, 2, 3, 4]


def test_adr_adds_the_mean_head_map_cosine(entrank, tmp_path):
    steps, _, _ = run(entrank, tmp_path / "run", "--set", "r3si.enabled=false", "--set", "reg.adr_coef=0.01")
    # coef x mean cosine of non-negative attention maps: in (0, 0.01]
    assert np.all(steps["aux_loss"] > 0) and np.all(steps["aux_loss"] <= 0.01)
    np.testing.assert_allclose(steps["loss"], steps["lm_loss"] + steps["aux_loss"], rtol=1e-12)


def test_stochastic_depth_trains_and_changes_the_run(entrank, tmp_path):
    sd, _, _ = run(entrank, tmp_path / "sd", "--set", "r3si.enabled=false", "--set", "drop.mode=stochastic_depth",
                   "--set", "drop.p=0.1")
    plain, _, _ = run(entrank, tmp_path / "plain", "--set", "r3si.enabled=false")
    assert np.all(np.isfinite(sd["loss"]))
    assert sd["loss"][0] != plain["loss"][0]


@pytest.mark.parametrize("scale", ["32l", "1.3b"])
def test_wide_mlp_is_parameter_matched(entrank, scale):
    def count(name):
        out = entrank("info", "-c", f"configs/r3si/{scale}/{name}.cfg", check=0).stdout
        return int(re.search(r"parameters: (\d+)", out).group(1))
    r3si, wide = count("r3si"), count("wide-mlp")
    assert abs(wide - r3si) / r3si < 0.02, (wide, r3si)


@pytest.mark.parametrize("scale", ["32l", "1.3b"])
@pytest.mark.parametrize("name", ["r3si", "baseline", "adr", "stochastic-depth", "wide-mlp", "ablation-sim-only",
                                  "ablation-lsd-only", "ablation-monitor-adaptive", "early-placement"])
def test_paper_configs_load_with_the_posts_recipe(entrank, scale, name):
    out = entrank("info", "-c", f"configs/r3si/{scale}/{name}.cfg", check=0).stdout
    assert "d_model 2048" in out and "1e+11 tokens" in out
    assert ("R3SI:" in out) == (name in ("r3si", "early-placement") or name.startswith("ablation"))


def test_temperature_loss_mode_divides_the_loss(entrank, tmp_path):
    t = ["--set", "r3si.enabled=false", "--set", "temperature.base=2.0", "--set", "temperature.beta=0.5",
         "--set", "temperature.gamma=0.5", "--set", "temperature.t_switch=2"]
    steps, _, _ = run(entrank, tmp_path / "loss", *t, "--set", "temperature.mode=loss")
    temp = 2.0 * (1 + 0.5 * np.tanh(0.5 * (np.arange(6) - 2)))
    np.testing.assert_allclose(steps["loss"], (steps["lm_loss"] + steps["aux_loss"]) / temp, rtol=1e-12)
    plain, _, _ = run(entrank, tmp_path / "plain", "--set", "r3si.enabled=false")
    assert steps["lm_loss"][0] == plain["lm_loss"][0]          # same model at step 0, then the update differs
    att, _, _ = run(entrank, tmp_path / "att", *t, "--set", "temperature.mode=attention")
    assert att["lm_loss"][0] != plain["lm_loss"][0]            # logits divided already at step 0


def test_dp_replicas_hold_identical_r3si_buffers():
    exe = ROOT / "build" / "tests" / "mpi_r3si_replicas"
    assert exe.exists(), "build it with make test"
    proc = subprocess.run(mpirun_cmd(2, exe), cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, **MPI_ENV))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("identical: 2 replicas") and "V norm^2 32.0000 (expected 32)" in proc.stdout


@pytest.mark.parametrize("ranks,pp", [(2, 1), (2, 2)])
def test_r3si_checkpoint_resumes_on_another_topology(mpirun, tmp_path, ranks, pp):
    src = tmp_path / "src"
    mpirun(1, "train", *FAST, "--set", "checkpoint.every=3", "--set", "checkpoint.keep=5", "--run-dir", src, check=0)
    dst = tmp_path / "dst"
    mpirun(ranks, "train", *FAST, "--set", f"parallel.pp={pp}", "--run-dir", dst,
           "--resume", src / "checkpoints" / "step_00000003.h5", check=0)
    _, a = read_losses(src)
    _, b = read_losses(dst)
    np.testing.assert_allclose(b, a[3:], rtol=1e-5, atol=0)
