#!/usr/bin/env bash
# make gpu-check: the first run on a lent GPU machine, as one prepared command (no interactive
# debugging on the device: every log comes back for study on the CPU machine).
#   1. the machine: nvidia-smi, driver and toolkit versions (a driver older than the runtime is named)
#   2. the build with every core
#   3. make test-gpu: every op and the whole model against the CPU backend, fp32 and bf16; the NCCL
#      test under mpirun when two or more GPUs are visible
#   4. a short bench-gpu: baseline at the gpt-24l-2048 shape (T = 2048), SGA against SDPA at the
#      gpt-48l-768 shape (T = 512), R3SI against the baseline; tokens/s, MFU, overheads
# Budget: under 8 minutes on an H100/H200 machine with 16 cores (build ~2-3 min, tests ~2 min,
# benchmark ~2 min), so that a 15-minute lease leaves time for a second run after a fix.
# Results: OUT_DIR (default bench/results; the device tool's $OUT when set) gets
# gpu-check-<date>-<gpu>.log with everything, and bench_gpu's gpu-<date>-<gpu>.txt.
# Usage: tests/gpu_check.sh  (make gpu-check)
set -u -o pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out_dir=${OUT_DIR:-${OUT:-bench/results}}
mkdir -p "$out_dir"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1 | tr ' /' '__')
log="$out_dir/gpu-check-$(date +%Y-%m-%d)-${gpu:-no-gpu}.log"
status=0
step() { echo; echo "==== $* ($(date +%T))"; }
{
  step "machine"
  nvidia-smi || echo "nvidia-smi failed: no usable GPU driver"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null
  "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" --version | tail -n 2
  nproc

  step "build (make -j$(nproc))"
  t0=$SECONDS
  make -j"$(nproc)" all build/tests/bench_gpu $(ls tests/gpu_test_*.c tests/gpu_mpi_*.c | sed 's#tests/#build/tests/#;s#\.c$##') \
    || { echo "BUILD FAILED"; exit 1; }
  echo "build took $((SECONDS - t0)) s"

  step "make test-gpu"
  t0=$SECONDS
  timeout 420 bash tests/run_gpu.sh build/tests || status=1
  echo "test-gpu took $((SECONDS - t0)) s"

  step "bench-gpu (short)"
  t0=$SECONDS
  timeout 240 build/tests/bench_gpu --out "$out_dir" --steps 4 || status=1
  echo "bench-gpu took $((SECONDS - t0)) s"

  step "done: exit $status"
  exit $status
} 2>&1 | tee "$log"
rc=$?
echo "gpu-check log: $log"
exit $rc
