"""End-to-end training runs of the binary: outputs, determinism, learning."""
import h5py
import numpy as np


STEP_KEYS = ["step", "tokens", "loss", "lm_loss", "aux_loss", "lr", "grad_norm", "step_ms", "tokens_per_s", "mfu"]


def test_run_directory_holds_config_log_and_metrics(entrank, tmp_path, tiny_fast):
    run = tmp_path / "run"
    proc = entrank("train", "-c", "configs/tiny.cfg", *tiny_fast, "--run-dir", run, check=0)
    step_lines = [l for l in proc.stdout.splitlines() if l.startswith("step ")]
    assert len(step_lines) == 6
    for field in ("loss", "lr", "norm", "ms", "tok/s", "MFU", "ETA"):
        assert field in step_lines[-1]
    assert "val loss" in proc.stdout and "depth 2 acc" in proc.stdout
    assert "n_layer = 2" in (run / "config.cfg").read_text()
    assert (run / "log.txt").read_text().count("step ") >= 6
    with h5py.File(run / "metrics.h5", "r") as f:
        for k in STEP_KEYS:
            d = f["steps"][k]
            assert d.shape == (6,), k
            assert d.attrs["description"] and d.attrs["units"] is not None
        assert list(f["steps/step"][:]) == list(range(6))
        assert np.allclose(f["steps/tokens"][:], (np.arange(6) + 1) * 8 * 64)
        assert f.attrs["dp"] == 1 and f.attrs["pp"] == 1
        assert "n_layer = 2" in f.attrs["config"]
        assert f["eval/val_loss"].shape == (1,) and np.isfinite(f["eval/val_loss"][0])
        assert np.isclose(f["eval/val_ppl"][0], np.exp(f["eval/val_loss"][0]))
    # The resolved config reproduces the run's settings.
    again = entrank("info", "-c", run / "config.cfg", check=0).stdout
    assert "2 layers" in again


def test_two_identical_runs_have_bitwise_identical_losses(entrank, tmp_path, tiny_fast):
    losses = []
    for name in ("a", "b"):
        entrank("train", "-c", "configs/tiny.cfg", *tiny_fast, "--run-dir", tmp_path / name, check=0)
        with h5py.File(tmp_path / name / "metrics.h5", "r") as f:
            losses.append(f["steps/loss"][:].tobytes())
            val = f["eval/val_loss"][:].tobytes()
    assert losses[0] == losses[1]
    # and a different seed gives a different run
    entrank("train", "-c", "configs/tiny.cfg", *tiny_fast, "--set", "train.seed=7", "--run-dir", tmp_path / "c", check=0)
    with h5py.File(tmp_path / "c" / "metrics.h5", "r") as f:
        assert f["steps/loss"][:].tobytes() != losses[0]


def test_micro_batching_does_not_change_the_step(entrank, tmp_path, tiny_fast):
    runs = {}
    for mbs in (8, 4, 2):
        entrank("train", "-c", "configs/tiny.cfg", *tiny_fast, "--set", f"train.micro_batch_size={mbs}",
                "--run-dir", tmp_path / str(mbs), check=0)
        with h5py.File(tmp_path / str(mbs) / "metrics.h5", "r") as f:
            runs[mbs] = f["steps/loss"][:]
    for mbs in (4, 2):
        assert np.allclose(runs[mbs], runs[8], rtol=1e-5, atol=0), (mbs, runs[mbs], runs[8])


def test_tiny_model_overfits_one_batch(entrank, tmp_path):
    # A text file exactly one window long: every sequence of every batch is the same one.
    rng = np.random.default_rng(0)
    text = tmp_path / "one.txt"
    text.write_bytes(bytes(rng.integers(97, 123, size=65, dtype=np.uint8)))
    args = ["--set", "data.kind=text", "--set", f'data.train="{text}"', "--set", f'data.val="{text}"',
            "--set", "model.vocab_size=256", "--set", "model.seq_len=64", "--set", "train.batch_size=4",
            "--set", "train.micro_batch_size=4", "--set", "train.steps=150", "--set", "train.lr=3e-3",
            "--set", "train.min_lr=3e-3", "--set", "train.warmup_steps=10", "--set", "train.log_every=50"]
    entrank("train", "-c", "configs/tiny.cfg", *args, "--run-dir", tmp_path / "run", check=0)
    with h5py.File(tmp_path / "run" / "metrics.h5", "r") as f:
        loss = f["steps/loss"][:]
        val = f["eval/val_loss"][-1]
    assert loss[0] > 4.0             # starts near ln 256 = 5.5
    assert loss[-1] < 0.05, loss[-10:]
    assert val < 0.05
