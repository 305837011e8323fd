#!/usr/bin/env bash
# Microbenchmark of the evaluator's AVX2 kernels (tools/bench_kernels.cpp), one thread.
#   bash tools/bench_kernels.sh            # this checkout's kernels
#   bash tools/bench_kernels.sh REV        # and, side by side, those of git revision REV
# Needs g++ and an AVX2/FMA CPU. Builds into a temporary directory; the tree stays clean.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
build() {  # $1: kernels file, $2: binary
  g++ -O3 -std=c++17 -Wno-psabi -DKERNELS="\"$1\"" "$root/tools/bench_kernels.cpp" -o "$2"
}
build "$root/cpp_kernels/evaluator_kernels.inc" "$work/current"
if [ $# -ge 1 ]; then
  git -C "$root" show "$1:cpp_kernels/evaluator_kernels.inc" > "$work/old_kernels.inc"
  build "$work/old_kernels.inc" "$work/old"
  echo "== kernels of $1"
  "$work/old" | tee "$work/old.txt"
fi
echo "== kernels of this checkout"
"$work/current" | tee "$work/current.txt"
if [ $# -ge 1 ]; then
  old=$(awk '/depthwise total/ {print $3}' "$work/old.txt")
  new=$(awk '/depthwise total/ {print $3}' "$work/current.txt")
  awk -v o="$old" -v n="$new" 'BEGIN {printf "depthwise speedup over the earlier kernels: %.2fx\n", o / n}'
fi
