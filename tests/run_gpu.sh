#!/usr/bin/env bash
# make test-gpu: every GPU test program (TAP output), then one closing line "N passed, N failed".
#   gpu_test_*  one process on device 0: each CUDA op and the whole model against the CPU
#   gpu_mpi_*   NCCL against MPI under mpirun -np <GPU count>, one rank per GPU; needs two or more
# A program that exits 77 is skipped (no device, or a single GPU for the NCCL tests) and counts
# neither way; a crash, a timeout or a program that ran no case counts as a failure.
# Usage: tests/run_gpu.sh BUILD_TEST_DIR
set -u
bin_dir=${1:-build/tests}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
log_dir=$(mktemp -d /tmp/entrank-gpu-tests.XXXXXX)
passed=0
failed=0
skipped=0
failures=()

gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
gpus=${gpus:-0}
echo "# $gpus GPU(s) visible to nvidia-smi"
# The driver's version next to the runtime this build links: a driver too old for it fails the
# GPU programs loudly (they exit 1 naming both versions) instead of skipping them.
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/# GPU, driver: /'
echo "# CUDA toolkit of this build: $(${NVCC:-/usr/local/cuda/bin/nvcc} --version 2>/dev/null | grep -o 'release [0-9.]*' || echo unknown)"

# run NAME COMMAND...: one program, its TAP output counted.
run() {
  local name=$1; shift
  local out="$log_dir/$name.tap"
  CMOCKA_MESSAGE_OUTPUT=TAP timeout 1800 "$@" >"$out" 2>&1
  local rc=$?
  if [ "$rc" -eq 77 ]; then
    skipped=$((skipped + 1))
    printf '%-48s skipped: %s\n' "$name" "$(grep -m1 -E 'SKIP' "$out" | sed -E 's/^# *(SKIP:)? *//')"
    return
  fi
  local ok bad
  ok=$(grep -cE '^ok ' "$out")
  bad=$(grep -cE '^not ok ' "$out")
  passed=$((passed + ok))
  failed=$((failed + bad))
  if [ "$bad" -gt 0 ] || [ "$rc" -ne 0 ] || [ "$ok" -eq 0 ]; then
    if [ "$bad" -eq 0 ]; then failed=$((failed + 1)); fi
    failures+=("$name (exit $rc)")
    echo "---- $name (exit $rc)"; grep -vE '^ok ' "$out" | tail -n 40
  fi
  printf '%-48s %3d passed, %d failed\n' "$name" "$ok" "$bad"
}

for t in "$bin_dir"/gpu_test_*; do
  [ -x "$t" ] || continue
  run "$(basename "$t")" "$t"
done

for t in "$bin_dir"/gpu_mpi_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  if [ "$gpus" -lt 2 ]; then
    skipped=$((skipped + 1))
    printf '%-48s skipped: needs two or more GPUs (%d visible)\n' "$name" "$gpus"
    continue
  fi
  run "$name" env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
    mpirun -np "$gpus" --bind-to none "$t"
done

if [ ${#failures[@]} -gt 0 ]; then echo "failing: ${failures[*]} (logs in $log_dir)"; fi
echo "# $skipped program(s) skipped"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] || exit 1
# Nothing ran (no GPU here): not a pass. 77 is the skip code, as for the programs themselves.
if [ "$passed" -eq 0 ]; then echo "entrank: no GPU test ran: every program was skipped"; exit 77; fi
