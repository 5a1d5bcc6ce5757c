#!/usr/bin/env bash
# make bench: every benchmark binary in turn; results on stdout (and in build/bench.txt).
set -eu
bin_dir=${1:-build/tests}
cd "$(dirname "$0")/.."
for b in "$bin_dir"/bench_*; do
  [ -x "$b" ] || continue
  echo "== $(basename "$b")"
  "$b"
done | tee build/bench.txt
