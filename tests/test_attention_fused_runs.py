"""attention.fused = true trains SDPA without (B, heads, T, T) tensors and is the same model: a short
run gives the losses, traces and parameters of the materialised form to fp32 tolerance, and its
checkpoints load into the materialised form (and back): the name and parameters are SDPA's."""
import numpy as np
from conftest import read_group, read_losses, read_params, set_args, small_model

STEPS = 8
TRACE = ["trace.every=2", "trace.snapshot_layers=[1]", "checkpoint.every=4"]


def train(entrank, run_dir, fused, extra=(), steps=STEPS):
    args = small_model(4, steps=steps, extra=set_args(*TRACE, f"attention.fused={'true' if fused else 'false'}"))
    return entrank("train", *args, *extra, "--run-dir", run_dir, check=0)


def test_fused_trains_like_materialised(entrank, tmp_path):
    train(entrank, tmp_path / "plain", False)
    train(entrank, tmp_path / "fused", True)
    _, ref = read_losses(tmp_path / "plain")
    _, got = read_losses(tmp_path / "fused")
    assert len(ref) == STEPS and np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=0)
    # The traces: entropies from the fused pass's own row entropies, maps materialised on demand.
    tr_ref, tr_got = read_group(tmp_path / "plain" / "metrics.h5", "trace"), read_group(tmp_path / "fused" / "metrics.h5", "trace")
    assert tr_ref.keys() == tr_got.keys() and "attn_entropy" in tr_got
    for k in tr_ref:
        np.testing.assert_allclose(tr_got[k], tr_ref[k], rtol=1e-4, atol=1e-5, err_msg=k)
    snap_ref = read_group(tmp_path / "plain" / "metrics.h5", "snapshot")["attn"]
    snap_got = read_group(tmp_path / "fused" / "metrics.h5", "snapshot")["attn"]
    np.testing.assert_allclose(snap_got, snap_ref, rtol=0, atol=1e-5)
    p_ref = read_params(tmp_path / "plain" / "checkpoints" / f"step_{STEPS:08d}.h5")
    p_got = read_params(tmp_path / "fused" / "checkpoints" / f"step_{STEPS:08d}.h5")
    assert p_ref.keys() == p_got.keys()
    for k in p_ref:
        assert np.abs(p_got[k] - p_ref[k]).max() <= 1e-4, k


def test_checkpoints_move_between_the_forms(entrank, tmp_path):
    # Fused to materialised: resuming at step 4 continues the fused run's losses.
    train(entrank, tmp_path / "fused", True)
    ckpt = tmp_path / "fused" / "checkpoints" / "step_00000004.h5"
    proc = train(entrank, tmp_path / "plain", False, extra=["--resume", ckpt])
    assert proc.returncode == 0, proc.stderr
    _, fused = read_losses(tmp_path / "fused")
    _, plain = read_losses(tmp_path / "plain")
    np.testing.assert_allclose(plain, fused[4:], rtol=1e-5, atol=0)
    # And either form evaluates either's checkpoint to the same loss.
    final = tmp_path / "fused" / "checkpoints" / f"step_{STEPS:08d}.h5"
    losses = []
    for fused_form in ["true", "false"]:
        proc = entrank("eval", *small_model(4, steps=STEPS, extra=set_args(f"attention.fused={fused_form}")), "--checkpoint", final,
                       check=0)
        line = [l for l in proc.stdout.splitlines() if l.startswith("val loss")]
        assert len(line) == 1, proc.stdout
        losses.append(float(line[0].split()[2]))
    assert abs(losses[0] - losses[1]) <= 1e-5 * abs(losses[1])


def test_fused_is_refused_with_the_weight_regularisers(entrank, tmp_path):
    proc = entrank("train", *small_model(4, steps=4, extra=set_args("attention.fused=true", "reg.entropy_coef=0.1")),
                   "--run-dir", tmp_path / "r")
    assert proc.returncode == 2
    assert "attention.fused" in proc.stderr and "reg.entropy_coef" in proc.stderr
