"""Training data order of issue 20: each window once per epoch in a seeded stateless permutation,
the same batch on every topology and after a resume mid-epoch, blends, `info --data`,
`info --dump-order`, and checkpoints that refuse a silent switch of data.sampling."""
import os

import h5py
import numpy as np
import pytest
from conftest import ROOT, entrank_error, read_group, set_args, small_model, write_llmc_shard

T = 32
WINDOWS = 61          # training windows per epoch of the corpus below (after the 5% held out)
STEPS = 10            # batch 16: 160 samples = 2.6 epochs, so the runs cross two epoch boundaries


@pytest.fixture
def corpus(tmp_path):
    """Two llm.c shards of token ids < 64 (the small model's vocabulary)."""
    rng = np.random.default_rng(5)
    d = tmp_path / "corpus"
    d.mkdir()
    write_llmc_shard(d / "c_000.bin", rng.integers(0, 64, 40 * T + 1))
    write_llmc_shard(d / "c_001.bin", rng.integers(0, 64, 25 * T + 7))
    return d


def file_args(corpus, steps=STEPS, extra=()):
    return small_model(4, steps=steps, extra=set_args("data.kind=llmc", f"data.train={corpus}/c_*.bin", "model.vocab_size=64",
                                                      "checkpoint.keep=50", *extra))


def read_steps(run_dir):
    g = read_group(run_dir / "metrics.h5", "steps")
    return g["loss"], g["epoch"], g["position"]


def dump_order(entrank, corpus, first, last, extra=()):
    out = entrank("info", *file_args(corpus, extra=extra), "--dump-order", f"{first}:{last}", check=0).stdout
    rows = [l.split() for l in out.splitlines() if not l.startswith("#")]
    return rows


def test_info_counts_the_windows_and_every_window_is_read_once_per_epoch(entrank, corpus):
    out = entrank("info", *file_args(corpus), "--data", check=0).stdout
    assert f"{WINDOWS} windows per epoch" in out
    assert "160 samples = 2.6230 epochs: every window read 2 or one more time(s)" in out
    rows = dump_order(entrank, corpus, 0, 2 * WINDOWS // 16 + 1)
    windows = [(int(r[4]), int(r[6])) for r in rows]   # (epoch, window)
    for epoch in (0, 1):
        seen = sorted(w for e, w in windows if e == epoch)
        assert seen == list(range(WINDOWS)), f"epoch {epoch}"
    first = [w for e, w in windows if e == 0]
    second = [w for e, w in windows if e == 1]
    assert first != second
    # Positions count samples within the epoch; the global sample is step * batch + index.
    for r in rows:
        step, index, sample, epoch, position = int(r[0]), int(r[1]), int(r[2]), int(r[4]), int(r[5])
        assert sample == step * 16 + index and epoch * WINDOWS + position == sample


@pytest.mark.parametrize("seed", [1, 2])
def test_seed_changes_the_order(entrank, corpus, seed):
    a = dump_order(entrank, corpus, 0, 0, extra=[f"train.seed={seed}"])
    b = dump_order(entrank, corpus, 0, 0, extra=[f"train.seed={seed + 10}"])
    assert [r[6] for r in a] != [r[6] for r in b]


def test_batch_is_identical_on_every_topology_and_after_a_resume_mid_epoch(mpirun, entrank, corpus, tmp_path):
    runs = {}
    for dp, pp in [(1, 1), (2, 1), (1, 2), (2, 2)]:
        run = tmp_path / f"{dp}x{pp}"
        mpirun(dp * pp, "train", *file_args(corpus, extra=[f"parallel.pp={pp}"]), "--run-dir", run, check=0)
        runs[(dp, pp)] = read_steps(run)
    loss, epoch, position = runs[(1, 1)]
    assert len(loss) == STEPS
    # The step's first sample, as the dump lists it, is what /steps records.
    rows = dump_order(entrank, corpus, 0, STEPS - 1)
    assert [int(r[4]) for r in rows if r[1] == "0"] == list(epoch.astype(int))
    assert [int(r[5]) for r in rows if r[1] == "0"] == list(position.astype(int))
    for key, (l, e, p) in runs.items():
        assert e.tobytes() == epoch.tobytes() and p.tobytes() == position.tobytes(), key
        # The same sequences in every step: the same losses up to the reduction order.
        np.testing.assert_allclose(l, loss, rtol=1e-5, atol=0, err_msg=str(key))

    # Resume at step 3 (position 48 of epoch 0) on 2x2: bitwise the same as 2x2 straight through.
    split = tmp_path / "split"
    mpirun(4, "train", *file_args(corpus, extra=["parallel.pp=2", "checkpoint.every=3"]), "--run-dir", split, check=0)
    for f in (split / "checkpoints").glob("step_*.h5"):
        if f.name != "step_00000003.h5":
            os.remove(f)
    (split / "checkpoints" / "latest").write_text("step_00000003.h5\n")
    proc = mpirun(4, "train", *file_args(corpus, extra=["parallel.pp=2"]), "--run-dir", split, "--resume", "auto", check=0)
    assert "resuming at step 3" in proc.stdout
    assert "epoch 0 pos 48" in proc.stdout or "epoch 0 pos 48" in (split / "log.txt").read_text()
    l, e, p = read_steps(split)
    assert l.tobytes() == runs[(2, 2)][0].tobytes()
    assert e.tobytes() == epoch.tobytes() and p.tobytes() == position.tobytes()


def test_checkpoint_refuses_a_silent_switch_of_sampler(mpirun, corpus, tmp_path):
    run = tmp_path / "run"
    mpirun(1, "train", *file_args(corpus, steps=4, extra=["data.sampling=random"]), "--run-dir", run, check=0)
    ckpt = run / "checkpoints" / "step_00000004.h5"
    with h5py.File(ckpt, "r") as f:
        assert f.attrs["data.sampling"] in ("random", b"random")
    # Continuing under the (new) default would change the data order: refused, nothing written.
    before = (run / "metrics.h5").stat().st_mtime_ns
    proc = mpirun(1, "train", *file_args(corpus, steps=6), "--run-dir", run, "--resume", "auto", timeout=120)
    msg = entrank_error(proc)
    assert 'data.sampling = "random" but the config has "epoch"' in msg and "set data.sampling" in msg, msg
    assert (run / "metrics.h5").stat().st_mtime_ns == before
    mpirun(1, "train", *file_args(corpus, steps=6, extra=["data.sampling=random"]), "--run-dir", run, "--resume", "auto", check=0)

    # A checkpoint from before the attribute existed was written by the random sampler.
    old = tmp_path / "old"
    mpirun(1, "train", *file_args(corpus, steps=4, extra=["data.sampling=random"]), "--run-dir", old, check=0)
    with h5py.File(old / "checkpoints" / "step_00000004.h5", "a") as f:
        del f.attrs["data.sampling"]
    proc = mpirun(1, "train", *file_args(corpus, steps=6), "--run-dir", old, "--resume", "auto", timeout=120)
    assert 'data.sampling = "random"' in entrank_error(proc)
    mpirun(1, "train", *file_args(corpus, steps=6, extra=["data.sampling=random"]), "--run-dir", old, "--resume", "auto", check=0)


def test_blend_takes_each_source_in_proportion_and_in_its_own_epochs(entrank, corpus, tmp_path):
    rng = np.random.default_rng(9)
    write_llmc_shard(tmp_path / "b.bin", rng.integers(0, 64, 40 * T + 1))
    blend = f'data.blend=((0.75, "{corpus}/c_*.bin", "llmc"), (0.25, "{tmp_path}/b.bin", "llmc"))'
    args = small_model(4, steps=STEPS, extra=set_args("data.kind=llmc", blend, "model.vocab_size=64"))
    out = entrank("info", *args, "--data", check=0).stdout
    assert "120 samples" in out and "40 samples" in out, out
    rows = [l.split() for l in entrank("info", *args, "--dump-order", f"0:{STEPS - 1}", check=0).stdout.splitlines()[1:]]
    count = [0, 0]
    for r in rows:
        s = int(r[3])
        count[s] += 1
        assert abs(count[s] - (0.75, 0.25)[s] * (int(r[2]) + 1)) <= 1
        assert r[8].endswith("b.bin") == (s == 1)
    b_windows = [(int(r[4]), int(r[6])) for r in rows if r[3] == "1"]
    assert sorted(w for e, w in b_windows if e == 0) == list(range(38))   # 1281 - 64 held-out tokens: 38 windows


@pytest.mark.parametrize("sets,message", [
    (['data.blend=((1.0, "x.bin", "llmc"))', "data.train=y.bin", "data.kind=llmc"], "data.blend: is set together with data.train"),
    (['data.blend=((0.0, "x.bin", "llmc"))', "data.kind=llmc"], "data.blend[0]: weight 0 must be > 0"),
    (['data.blend=((1.0, "x.bin", "parquet"))', "data.kind=llmc"], 'data.blend[0]: "parquet" is not one of'),
    (['data.blend=((1.0, "x.bin"))', "data.kind=llmc"], 'data.blend[0]: expected (weight, "path", "kind")'),
    (['data.blend=((1.0, "x.bin", "llmc"))'], "data.blend: needs data.kind llmc, megatron or text"),
    (['data.blend=((1.0, "x.bin", "llmc"))', "data.kind=llmc", "data.sampling=random"], 'data.blend: needs data.sampling = "epoch"'),
    (["data.sampling=shuffled"], 'data.sampling: "shuffled" is not one of "epoch", "random"'),
])
def test_bad_blend_or_sampling_is_one_line_and_exit_2(entrank, tmp_path, sets, message):
    proc = entrank("info", "-c", "configs/tiny.cfg", *set_args(*sets))
    assert message in entrank_error(proc)


def test_dump_order_and_data_refuse_what_they_cannot_show(entrank, corpus, tmp_path):
    assert "--dump-order: expected FIRST or FIRST:LAST" in entrank_error(entrank("info", *file_args(corpus), "--dump-order", "5:2"))
    proc = entrank("info", "-c", "configs/tiny.cfg", "--dump-order", "0")
    assert 'data.kind "logic" generates its examples' in entrank_error(proc)
    # --data reads the headers: a missing file is one line and nothing on stdout.
    proc = entrank("info", *small_model(extra=set_args("data.kind=llmc", f"data.train={tmp_path}/none_*.bin")), "--data")
    assert "data.train: no file matches" in entrank_error(proc) and proc.stdout == ""


@pytest.mark.parametrize("name", ["baseline-blend", "r3si-blend"])
def test_r3si_blend_presets_see_each_token_at_most_once(entrank, tmp_path, name):
    """The presets blend RedPajama and a second corpus by weight; with files of the placeholders'
    stated sizes (scaled down 1e6-fold with the run) no token is read twice."""
    cfg = f"configs/r3si/32l/{name}.cfg"
    out = entrank("info", "-c", cfg, check=0).stdout
    assert "training:" in out
    # Scaled run: 100e9 tokens -> 1e5 tokens (batch 512 x 2048 -> 8 x 64 tokens per step);
    # sources of 120e9 and 30e9 tokens -> 1.2e5 and 3e4 (llm.c shards of uint16).
    rng = np.random.default_rng(1)
    write_llmc_shard(tmp_path / "rp.bin", rng.integers(0, 50000, 120000))
    write_llmc_shard(tmp_path / "second.bin", rng.integers(0, 50000, 30000))
    with open(ROOT / "configs/base/r3si-recipe-blend.cfg") as f:
        weights = [float(l.split("(")[-1].split(",")[0]) for l in f if l.strip().startswith("(") and "llmc" in l]
    assert len(weights) == 2, weights
    blend = f'data.blend=(({weights[0]}, "{tmp_path}/rp.bin", "llmc"), ({weights[1]}, "{tmp_path}/second.bin", "llmc"))'
    out = entrank("info", "-c", cfg, *set_args(blend, 'data.val=""', "data.val_fraction=0.01", "train.batch_size=8",
                                                "train.micro_batch_size=4", "model.seq_len=64", "train.tokens=100000"),
                  "--data", check=0).stdout
    assert out.count("no token seen twice") == 2, out
