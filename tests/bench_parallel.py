#!/usr/bin/env python3
"""make bench, part 2: step time of the d=512 model on 1x1, 2x1 and 1x2 ranks (one thread per
rank, so every topology uses one core per rank), the measured pipeline bubble against
(p-1)/(m+p-1), and checkpoint write/read bandwidth next to dd on the same disk."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "bin" / "entrank"
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
D512 = ["-c", "configs/tiny.cfg", "--set", "model.n_layer=6", "--set", "model.n_head=8", "--set", "model.d_model=512",
        "--set", "model.seq_len=256", "--set", "model.vocab_size=32000", "--set", "train.batch_size=8",
        "--set", "train.micro_batch_size=2", "--set", "train.warmup_steps=1", "--set", "eval.batches=1",
        "--set", "train.log_every=1"]
MICRO_BATCHES = 4   # per replica at dp 1 (batch 8 / micro 2)


def mpirun(n, *args):
    cmd = ["mpirun", "-np", str(n), "--bind-to", "none", str(BIN), *map(str, args)]
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench failed: {' '.join(cmd)}\n{proc.stderr}")
    return proc.stdout


def step_ms(run_dir, skip=2):
    with h5py.File(run_dir / "metrics.h5", "r") as f:
        return float(np.median(f["steps/step_ms"][skip:]))


def main():
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    work = Path(tempfile.mkdtemp(prefix="entrank-bench-", dir=ROOT / "build"))
    try:
        times = {}
        for dp, pp in [(1, 1), (2, 1), (1, 2)]:
            run = work / f"{dp}x{pp}"
            out = mpirun(dp * pp, "train", *D512, "--set", f"train.steps={steps}", "--set", f"parallel.pp={pp}",
                         "--set", "checkpoint.every=1000000", "--run-dir", run)
            times[(dp, pp)] = step_ms(run)
            write_s = float(re.search(r"checkpoint .* written in ([0-9.]+) s", out).group(1))
            if (dp, pp) == (1, 1):
                ckpt = next((run / "checkpoints").glob("step_*.h5"))
                size = ckpt.stat().st_size
                write_1x1 = write_s
        t1 = times[(1, 1)]
        print("d512 model (6 layers, d=512, T=256, vocab 32000), global batch 8 x 256 tokens, 1 thread per rank, "
              f"median step of {steps - 2}")
        for (dp, pp), t in times.items():
            tok = 8 * 256 / (t / 1e3)
            print(f"  {dp}x{pp} (dp x pp): {t:8.1f} ms/step  {tok:7.0f} tok/s  speed-up over 1x1 {t1 / t:4.2f}")
        # Bubble: the share of a stage's step not spent on its half of the work (compute of 1x1 / pp).
        p = 2
        measured = 1 - t1 / (p * times[(1, 2)])
        formula = (p - 1) / (MICRO_BATCHES + p - 1)
        print(f"  pipeline bubble at pp=2, m={MICRO_BATCHES}: measured {measured:.3f} "
              f"(1 - t_1x1 / (2 t_1x2), includes stage imbalance: the LM head sits on the last stage) "
              f"vs formula (p-1)/(m+p-1) = {formula:.3f}")

        # Checkpoint bandwidth: write (from the run above) and read (resume), next to dd.
        resume = work / "resume"
        (resume / "checkpoints").mkdir(parents=True)
        shutil.copy(ckpt, resume / "checkpoints")
        out = mpirun(1, "train", *D512, "--set", f"train.steps={steps + 1}", "--set", "checkpoint.every=1000000",
                     "--run-dir", resume, "--resume", resume / "checkpoints" / ckpt.name)
        read_s = float(re.search(r"loaded .* in ([0-9.]+) s", out).group(1))
        mib = size / 2**20
        dd_file = work / "dd.bin"
        dd_w = subprocess.run(["dd", "if=/dev/zero", f"of={dd_file}", "bs=1M", f"count={int(mib)}", "conv=fdatasync"],
                              capture_output=True, text=True).stderr.strip().splitlines()[-1]
        dd_r = subprocess.run(["dd", f"if={dd_file}", "of=/dev/null", "bs=1M"], capture_output=True, text=True).stderr.strip().splitlines()[-1]
        print(f"checkpoint of the d512 model: {mib:.0f} MiB (params + AdamW m, v; fp32), 1 rank")
        print(f"  write {mib / write_1x1:7.0f} MiB/s ({write_1x1:.2f} s, fsync included)   dd write: {dd_w}")
        print(f"  read  {mib / read_s:7.0f} MiB/s ({read_s:.2f} s)                     dd read:  {dd_r}")
        print("  (reads come from the page cache when the file was just written, for dd and for entrank alike)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
