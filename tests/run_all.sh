#!/usr/bin/env bash
# Runs the whole suite: every C test binary (cmocka, TAP output) and every pytest file,
# then prints one closing line "N passed, N failed".
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
  printf '%-48s %3d passed, %d failed\n' "$name" "$ok" "$bad"
done

py_tests=$(ls tests/test_*.py 2>/dev/null)
if [ -n "$py_tests" ]; then
  out="$log_dir/pytest.txt"
  timeout 1500 "$PYTHON" -m pytest -q -p no:cacheprovider $py_tests >"$out" 2>&1
  rc=$?
  summary=$(tail -n 1 "$out")
  pp=$(echo "$summary" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+' || true)
  pf=$(echo "$summary" | grep -oE '[0-9]+ (failed|errors?)' | awk '{s += $1} END {print s + 0}')
  pp=${pp:-0}; pf=${pf:-0}
  if [ "$rc" -ne 0 ] && [ "$pf" -eq 0 ]; then pf=1; fi
  passed=$((passed + pp)); failed=$((failed + pf))
  if [ "$pf" -gt 0 ]; then failures+=("pytest"); grep -E '^(FAILED|ERROR)|Error|assert' "$out" | head -n 60; tail -n 5 "$out"; fi
  printf '%-48s %3d passed, %d failed\n' "pytest" "$pp" "$pf"
fi

if [ ${#failures[@]} -gt 0 ]; then echo "failing: ${failures[*]} (logs in $log_dir)"; fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
