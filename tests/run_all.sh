#!/usr/bin/env bash
# Runs the whole suite: every C test binary (cmocka, TAP output), the GPU test programs on the
# emulated CUDA build when EMU_BIN_DIR names it (tests/run_emu.sh), and every pytest file, then
# prints one closing line "N passed, N failed".
# Usage: tests/run_all.sh BUILD_TEST_DIR
set -u
bin_dir=${1:-build/tests}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
PYTHON=${PYTHON:-/usr/bin/python3}
log_dir=$(mktemp -d /tmp/entrank-tests.XXXXXX)
passed=0
failed=0
failures=()

for t in "$bin_dir"/test_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  out="$log_dir/$name.tap"
  t0=$SECONDS
  CMOCKA_MESSAGE_OUTPUT=TAP timeout 900 "$t" >"$out" 2>&1
  rc=$?
  ok=$(grep -cE '^ok ' "$out")
  bad=$(grep -cE '^not ok ' "$out")
  passed=$((passed + ok))
  failed=$((failed + bad))
  if [ "$bad" -gt 0 ] || [ "$rc" -ne 0 ] || [ "$ok" -eq 0 ]; then
    # A crash or a binary that ran no case counts as a failure of its own.
    if [ "$bad" -eq 0 ]; then failed=$((failed + 1)); fi
    failures+=("$name (exit $rc)")
    echo "---- $name (exit $rc)"; grep -vE '^ok ' "$out" | tail -n 40
  fi
  # The seconds each program took: the suite's budget is 30 minutes on two cores.
  printf '%-48s %3d passed, %d failed %5ds\n' "$name" "$ok" "$bad" $((SECONDS - t0))
done

# The GPU test programs on the emulated CUDA build (make emu), when it is there: see tests/run_emu.sh.
emu_dir=${EMU_BIN_DIR:-}
if [ -n "$emu_dir" ] && [ -d "$emu_dir/tests" ]; then
  bash tests/run_emu.sh "$emu_dir" | tee "$log_dir/emu.txt" | grep -v -E '^[0-9]+ passed, [0-9]+ failed$'
  summary=$(tail -n 1 "$log_dir/emu.txt")
  ep=$(echo "$summary" | grep -oE '^[0-9]+ passed' | grep -oE '[0-9]+' || echo 0)
  ef=$(echo "$summary" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+' || echo 1)
  passed=$((passed + ep)); failed=$((failed + ef))
  if [ "$ef" -gt 0 ]; then failures+=("emulated CUDA"); fi
fi

py_tests=$(ls tests/test_*.py 2>/dev/null)
if [ -n "$py_tests" ]; then
  out="$log_dir/pytest.txt"
  t0=$SECONDS
  # The pytest files that run C test programs find them where this run built them.
  ENTRANK_TEST_BIN_DIR="$bin_dir" timeout 1500 "$PYTHON" -m pytest -q -p no:cacheprovider --durations=10 $py_tests >"$out" 2>&1
  rc=$?
  summary=$(tail -n 1 "$out")
  pp=$(echo "$summary" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+' || true)
  pf=$(echo "$summary" | grep -oE '[0-9]+ (failed|errors?)' | awk '{s += $1} END {print s + 0}')
  pp=${pp:-0}; pf=${pf:-0}
  if [ "$rc" -ne 0 ] && [ "$pf" -eq 0 ]; then pf=1; fi
  passed=$((passed + pp)); failed=$((failed + pf))
  if [ "$pf" -gt 0 ]; then failures+=("pytest"); grep -E '^(FAILED|ERROR)|Error|assert' "$out" | head -n 60; tail -n 5 "$out"; fi
  printf '%-48s %3d passed, %d failed %5ds\n' "pytest" "$pp" "$pf" $((SECONDS - t0))
  sed -n '/slowest 10 durations/,/^$/p' "$out" | sed 's/^/  /'   # where the suite's time goes
fi

if [ ${#failures[@]} -gt 0 ]; then echo "failing: ${failures[*]} (logs in $log_dir)"; fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
