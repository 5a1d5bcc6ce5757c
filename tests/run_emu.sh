#!/usr/bin/env bash
# The GPU test programs on the emulated CUDA build (make emu; tests/cuda_emu), then one closing
# line "N passed, N failed" (tests/run_all.sh adds it to the suite's count):
#   1. the emulator's self-test: correct kernels right, each deliberately broken one reported;
#   2. every tests/gpu_test_* program, unchanged, TAP output counted case by case;
#   3. determinism (fast build only): the op programs under EMU_SCHED=forward, reverse and
#      random:SEED with EMU_TRACE; every launch must hash identically (one case per program), and
#      together they must launch every __global__ kernel of cuda/ (one case);
#   4. NCCL over MPI under mpirun: tests/gpu_mpi_nccl on 2 and 4 ranks (TAP), then
#      tests/emu_nccl_cases.sh (1F1B per direction and on one communicator, the CTA rule, a 2x2
#      training run against the CPU backend's, which needs bin/entrank).
# Usage: tests/run_emu.sh BUILD_EMU_DIR (build-emu/fast or build-emu/asan; EMU_ASAN=1 for the latter)
set -u
dir=${1:-build-emu/fast}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
log_dir=$(mktemp -d /tmp/entrank-emu-tests.XXXXXX)
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Open MPI's own allocations are not leaks of ours; the fibers switch stacks (annotated for ASan).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:detect_stack_use_after_return=0} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
variant=$(basename "$dir")
passed=0
failed=0
failures=()

# count NAME OUTFILE RC: a TAP log's ok / not ok lines; a crash or no case counts as a failure.
count() {
  local name=$1 out=$2 rc=$3 secs=$4 ok bad
  ok=$(grep -cE '^ok ' "$out")
  bad=$(grep -cE '^not ok ' "$out")
  passed=$((passed + ok)); failed=$((failed + bad))
  if [ "$bad" -gt 0 ] || [ "$rc" -ne 0 ] || [ "$ok" -eq 0 ]; then
    if [ "$bad" -eq 0 ]; then failed=$((failed + 1)); fi
    failures+=("$name (exit $rc)")
    echo "---- $name (exit $rc)"; grep -vE '^ok ' "$out" | grep -E 'not ok|cuda-emu: ERROR|runtime error|AddressSanitizer|^#' | tail -n 30
  fi
  printf '%-48s %3d passed, %d failed %5ds\n' "[emu $variant] $name" "$ok" "$bad" "$secs"
}

t0=$SECONDS
"$dir/tests/emu_selftest" >"$log_dir/selftest.tap" 2>&1
count emu_selftest "$log_dir/selftest.tap" $? $((SECONDS - t0))

for t in "$dir"/tests/gpu_test_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  trace=()
  case $name in *_ops_match_cpu) [ "$variant" = fast ] && trace=(EMU_SCHED=forward "EMU_TRACE=$log_dir/$name.forward");; esac
  t0=$SECONDS
  env "${trace[@]}" CMOCKA_MESSAGE_OUTPUT=TAP timeout 2400 "$t" >"$log_dir/$name.tap" 2>&1
  count "$name" "$log_dir/$name.tap" $? $((SECONDS - t0))
done

if [ "$variant" = fast ]; then
  for t in "$dir"/tests/gpu_test_*_ops_match_cpu; do
    name=$(basename "$t")
    t0=$SECONDS
    out="$log_dir/$name.sched.tap"
    for s in reverse random:7; do
      EMU_SCHED=$s EMU_TRACE="$log_dir/$name.$s" timeout 1200 "$t" >/dev/null 2>&1
    done
    if [ -s "$log_dir/$name.forward" ] && cmp -s "$log_dir/$name.forward" "$log_dir/$name.reverse" &&
       cmp -s "$log_dir/$name.forward" "$log_dir/$name.random:7"; then
      echo "ok 1 - $(wc -l <"$log_dir/$name.forward") launches hash identically under forward, reverse, random:7" >"$out"
    else
      { echo "not ok 1 - kernel outputs differ between schedules (or a run failed):"
        diff "$log_dir/$name.forward" "$log_dir/$name.reverse" | head -n 5 | sed 's/^/# /'
        diff "$log_dir/$name.forward" "$log_dir/$name.random:7" | head -n 5 | sed 's/^/# /'; } >"$out"
    fi
    count "$name: determinism" "$out" 0 $((SECONDS - t0))
  done
  out="$log_dir/coverage.tap"
  # Both spellings of a file-local kernel: `static __global__ void k` and `__global__ static void k`.
  kernels=$(grep -hoE '__global__ +(static +)?void +[A-Za-z_][A-Za-z0-9_]*' cuda/*.cu | awk '{print $NF}' | sort -u)
  launched=$(cat "$log_dir"/*.forward 2>/dev/null | awk '{print $1}' | sort -u)
  missing=$(comm -23 <(echo "$kernels") <(echo "$launched"))
  if [ -z "$missing" ]; then echo "ok 1 - the op programs launch all $(echo "$kernels" | wc -l) kernels of cuda/" >"$out"
  else { echo "not ok 1 - kernels of cuda/ that no op program launches:"; echo "$missing" | sed 's/^/# /'; } >"$out"; fi
  count "kernel coverage" "$out" 0 0
fi

for np in 2 4; do
  t0=$SECONDS
  out="$log_dir/gpu_mpi_nccl.np$np.tap"
  timeout 600 mpirun -np $np --oversubscribe --bind-to none "$dir/tests/gpu_mpi_nccl" >"$out" 2>&1
  count "gpu_mpi_nccl (mpirun -np $np)" "$out" $? $((SECONDS - t0))
done
t0=$SECONDS
bash tests/emu_nccl_cases.sh "$dir" "$log_dir" >"$log_dir/nccl_cases.tap" 2>&1
count "emulated NCCL: deadlock, CTAs, 2x2 training" "$log_dir/nccl_cases.tap" $? $((SECONDS - t0))

if [ ${#failures[@]} -gt 0 ]; then echo "failing (emulated CUDA): ${failures[*]} (logs in $log_dir)"; fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
