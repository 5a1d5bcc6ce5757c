#!/usr/bin/env bash
# make bench: every benchmark in turn; results on stdout and in build/bench.txt.
set -eu
bin_dir=${1:-build/tests}
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-/usr/bin/python3}
{
  for b in "$bin_dir"/bench_*; do
    [ -x "$b" ] || continue
    echo "== $(basename "$b")"
    "$b"
  done
  for p in tests/bench_*.py; do
    echo "== $(basename "$p")"
    "$PYTHON" "$p"
  done
} | tee build/bench.txt
