#!/usr/bin/env bash
# make bench: the CPU benchmarks named on the command line (the Makefile's BENCH_BIN; the GPU
# benchmark is `make bench-gpu`), then tests/bench_*.py; results on stdout and in build/bench.txt.
#   tests/run_bench.sh build/tests/bench_throughput ...
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-/usr/bin/python3}
{
  for b in "$@"; do
    echo "== $(basename "$b")"
    "$b"
  done
  for p in tests/bench_*.py; do
    echo "== $(basename "$p")"
    "$PYTHON" "$p"
  done
} | tee build/bench.txt
