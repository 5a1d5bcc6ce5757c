"""`entrank info`'s per-rank memory is the memory training allocates: a short run's backend
high-water mark (the CPU backend counts every alloc and free; the trainer logs the peak after its
first step) is within 5% of the estimate `info` prints for the same config and topology, for
tiny, tiny-sga and tiny-r3si under every train.recompute mode, for a two-stage pipeline, and for
train.activations = "bf16" (its bf16 copies are 2-byte allocations on every backend)."""
import os
import re
import subprocess

import pytest
from conftest import ROOT, set_args

CONFIGS = ["tiny", "tiny-sga", "tiny-r3si"]
MODES = ["none", "attention", "block"]
# One step (the peak is reached inside it: every buffer lives from initialisation on), one
# validation batch at the end. Traces (a traced step takes one small temporary more) cost far more
# time than the rest of such a step: they are on in the pipeline case only.
SHORT = ["train.steps=1", "train.warmup_steps=0", "eval.every=0", "eval.batches=1"]
UNTRACED = SHORT + ["trace.every=0"]
UNITS = {"KiB": 2 ** 10, "MiB": 2 ** 20, "GiB": 2 ** 30}


def info_stage_bytes(text, stage):
    m = re.search(rf"^  stage {stage} \(layers .*= ([0-9.]+) (KiB|MiB|GiB) per rank \((?:fp32|bf16 activations), recompute (\w+)(?:, attention fused)?\)$",
                  text, re.M)
    assert m, text
    return float(m.group(1)) * UNITS[m.group(2)], m.group(3)


def measured_peak(log_text):
    m = re.search(r"^memory: backend allocation peak ([0-9.]+) MiB after the first step", log_text, re.M)
    assert m, log_text
    return float(m.group(1)) * UNITS["MiB"]


def check(config, mode, need, got):
    ratio = got / need
    print(f"{config:10s} recompute {mode:9s}: info {need / 2 ** 20:9.2f} MiB, measured peak {got / 2 ** 20:9.2f} MiB ({100 * (ratio - 1):+.2f}%)")
    assert 0.95 <= ratio <= 1.05, f"{config} recompute {mode}: measured {got} bytes, info {need} bytes"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("config", CONFIGS)
def test_info_matches_the_measured_peak(entrank, tmp_path, config, mode):
    sets = set_args(*UNTRACED, f"train.recompute={mode}")
    proc = entrank("info", "-c", f"configs/{config}.cfg", *sets, check=0)
    need, shown = info_stage_bytes(proc.stdout, 0)
    assert shown == mode   # the line names the mode it is for
    entrank("train", "-c", f"configs/{config}.cfg", *sets, "--run-dir", tmp_path / "run", check=0)
    check(config, mode, need, measured_peak((tmp_path / "run" / "log.txt").read_text()))


def test_pipeline_stage_zero_matches(entrank, mpirun, tmp_path):
    """pp 2: stage 0 holds half the layers and the embeddings, and 2 micro-batches in flight; the
    step is traced (trace.every's step 0), so the trace's temporary is in the peak."""
    sets = set_args(*SHORT, "train.micro_batch_size=32", "parallel.pp=2", "train.recompute=attention")
    proc = entrank("info", "-c", "configs/tiny.cfg", *sets, "--pp", "2", check=0)
    need, _ = info_stage_bytes(proc.stdout, 0)
    assert "(2 in flight)" in proc.stdout.split("  stage 1")[0]
    mpirun(2, "train", "-c", "configs/tiny.cfg", *sets, "--run-dir", tmp_path / "run", check=0)
    check("tiny pp 2", "attention", need, measured_peak((tmp_path / "run" / "log.txt").read_text()))


@pytest.mark.parametrize("config", ["tiny", "tiny-sga"])
def test_fused_attention_with_traces_matches(entrank, tmp_path, config):
    """attention.fused (SDPA's fused form, SGA's tiled form) with a traced step: the forms keep no
    (B, heads, T, T) tensor but the traces' one-layer weights buffer, which they allocate with the
    slot so that the estimate counts it."""
    sets = set_args(*SHORT, "attention.fused=true")
    out = entrank("info", "-c", f"configs/{config}.cfg", *sets, check=0).stdout
    need, _ = info_stage_bytes(out, 0)
    assert "recompute none, attention fused)" in out
    entrank("train", "-c", f"configs/{config}.cfg", *sets, "--run-dir", tmp_path / "run", check=0)
    check(f"{config} fused", "none", need, measured_peak((tmp_path / "run" / "log.txt").read_text()))


def test_info_names_recompute_and_precision(entrank):
    out = entrank("info", "-c", "configs/tiny-sga.cfg", "--set", "train.recompute=block", check=0).stdout
    assert re.search(r"per rank \(fp32, recompute block\)", out)
    assert re.search(r"^GPU need per rank: [0-9.]+ (MiB|GiB) \(stage 0: .*CUDA workspace allowance.*recompute block\)$", out, re.M)
    out = entrank("info", "-c", "configs/tiny-sga.cfg", "--set", "train.activations=bf16", check=0).stdout
    assert re.search(r"per rank \(bf16 activations, recompute none\)", out)
    assert re.search(r"^GPU need per rank: .*; bf16 activations, recompute none\)$", out, re.M)


@pytest.mark.parametrize("mode", ["none", "attention"])
def test_bf16_activations_estimate_matches(entrank, tmp_path, mode):
    """train.activations = "bf16": less than fp32 in info, and info is the measured peak."""
    sets = set_args(*UNTRACED, f"train.recompute={mode}")
    fp32, _ = info_stage_bytes(entrank("info", "-c", "configs/tiny.cfg", *sets, check=0).stdout, 0)
    sets += set_args("train.activations=bf16")
    need, _ = info_stage_bytes(entrank("info", "-c", "configs/tiny.cfg", *sets, check=0).stdout, 0)
    print(f"tiny recompute {mode}: info fp32 {fp32 / 2 ** 20:.2f} MiB, bf16 activations {need / 2 ** 20:.2f} MiB")
    assert need < 0.95 * fp32
    entrank("train", "-c", "configs/tiny.cfg", *sets, "--run-dir", tmp_path / "run", check=0)
    check("tiny bf16 act", mode, need, measured_peak((tmp_path / "run" / "log.txt").read_text()))


EMU = ROOT / os.environ.get("EMU_BIN_DIR", "build-emu/fast") / "entrank"


@pytest.mark.skipif(not EMU.exists(), reason="no emulated CUDA build (make emu)")
@pytest.mark.parametrize("mode,activations", [(m, "fp32") for m in MODES] + [("attention", "bf16")])
def test_emulated_cuda_allocation_table_matches(entrank, tmp_path, mode, activations):
    """The CUDA backend's allocation table (pointer -> bytes) on the emulated build: its peak after
    a step of tiny (a smaller batch: the emulator is slow) is `info`'s estimate; with bf16
    activations too (alloc_bf16 counts 2 bytes an element there)."""
    sets = set_args(*UNTRACED, "train.batch_size=32", "train.micro_batch_size=32", f"train.recompute={mode}",
                    f"train.activations={activations}")
    need, _ = info_stage_bytes(entrank("info", "-c", "configs/tiny.cfg", *sets, check=0).stdout, 0)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([str(EMU), "train", "-c", "configs/tiny.cfg", *sets, "--set", "train.device=cuda",
                           "--run-dir", str(tmp_path / "run")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "device cuda" in log, log
    check("tiny (emulated CUDA)", mode, need, measured_peak(log))
