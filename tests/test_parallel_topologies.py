"""Data- and pipeline-parallel ranks give the same training on every topology (docs/design.md section 7)."""
import os
import signal
import time

import numpy as np
import pytest
from conftest import child_pids, entrank_error, read_losses, read_params, set_args, small_model, wait_for

TOPOLOGIES = [(1, 1), (2, 1), (4, 1), (1, 2), (1, 4), (2, 2)]   # (dp, pp)


def train(mpirun, run_dir, dp, pp, layers, zero=0):
    args = small_model(layers, extra=["--set", f"parallel.pp={pp}", "--set", f"parallel.zero={zero}"])
    mpirun(dp * pp, "train", *args, "--run-dir", run_dir, check=0)
    steps, loss = read_losses(run_dir)
    return loss, read_params(run_dir / "checkpoints" / "step_00000020.h5")


def assert_same_training(a, b, what):
    loss_a, params_a = a
    loss_b, params_b = b
    assert len(loss_a) == len(loss_b) == 20
    np.testing.assert_allclose(loss_b, loss_a, rtol=1e-5, atol=0, err_msg=what)
    assert params_a.keys() == params_b.keys()
    for k in params_a:
        # Within 1e-5 absolute, element by element. (Not relative: biases start at 0, and Adam's
        # normalised update turns the fp32 noise of another reduction order into relative
        # differences of ~1e-5 on values of ~1e-2 after 20 steps.)
        diff = np.abs(params_b[k] - params_a[k])
        assert diff.max() <= 1e-5, f"{what}: {k} differs by {diff.max()}"


# 8 layers divide by every pp here; 5 layers do not (pp 2: 2+3, pp 4: 1+1+1+2).
@pytest.mark.parametrize("layers", [8, 5])
def test_every_topology_matches_one_rank(mpirun, tmp_path, layers):
    reference = train(mpirun, tmp_path / "1x1", 1, 1, layers)
    for dp, pp in TOPOLOGIES[1:]:
        assert_same_training(reference, train(mpirun, tmp_path / f"{dp}x{pp}", dp, pp, layers), f"{dp}x{pp}, {layers} layers")


def test_zero1_matches_plain_data_parallel(mpirun, tmp_path):
    for dp, pp in [(2, 1), (2, 2)]:
        plain = train(mpirun, tmp_path / f"plain{dp}x{pp}", dp, pp, 5)
        sharded = train(mpirun, tmp_path / f"zero{dp}x{pp}", dp, pp, 5, zero=1)
        assert_same_training(plain, sharded, f"ZeRO-1 {dp}x{pp}")


def test_same_topology_twice_is_bitwise_identical(mpirun, tmp_path):
    a = train(mpirun, tmp_path / "a", 2, 2, 5)
    b = train(mpirun, tmp_path / "b", 2, 2, 5)
    assert a[0].tobytes() == b[0].tobytes()
    for k in a[1]:
        assert a[1][k].tobytes() == b[1][k].tobytes(), k


@pytest.mark.parametrize("ranks,sets,message", [
    (3, ["parallel.pp=2"], "parallel.pp: 3 ranks cannot be split into pipelines of 2"),
    (2, ["parallel.pp=2", "train.batch_size=2", "train.micro_batch_size=2"], "fewer than the 2 pipeline stages"),
    (4, ["parallel.pp=4", "model.n_layer=3"], "parallel.pp: 4 stages for 3 layers"),
    (2, ["train.batch_size=4", "train.micro_batch_size=4"], "train.batch_size: 4 sequences cannot be cut"),
])
def test_invalid_topology_is_rejected_before_any_work(mpirun, tmp_path, ranks, sets, message):
    proc = mpirun(ranks, "train", *small_model(extra=set_args(*sets)), "--run-dir", tmp_path / "run", timeout=60)
    assert message in entrank_error(proc), proc.stderr
    assert not (tmp_path / "run" / "metrics.h5").exists()


def test_a_killed_rank_ends_the_whole_job(mpirun, tmp_path):
    proc = mpirun(4, "train", *small_model(steps=100000, extra=["--set", "parallel.pp=2"]), "--run-dir", tmp_path / "run",
                  popen=True)
    metrics = tmp_path / "run" / "metrics.h5"
    wait_for(metrics.exists, 60, 0.2)
    time.sleep(1.0)
    # The ranks are the entrank processes whose parent is this mpirun.
    ranks = child_pids(proc.pid, "entrank")
    assert len(ranks) == 4, ranks
    os.kill(ranks[2], signal.SIGKILL)
    start = time.time()
    try:
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert time.time() - start < 60
