#!/usr/bin/env bash
# Microbenchmark of the evaluator's AVX2 kernels (tools/bench_kernels.cpp), one thread.
#   bash tools/bench_kernels.sh            # this checkout's kernels
#   bash tools/bench_kernels.sh REV        # and, side by side, those of git revision REV
# Needs g++ and an AVX2/FMA CPU. Builds into a temporary directory; the tree stays clean.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
build() {  # $1: folder holding evaluator.cpp, evaluator.h and evaluator_kernels.inc, $2: binary
  g++ -O3 -std=c++17 -Wno-psabi -DEVALUATOR="\"$1/evaluator.cpp\"" "$root/tools/bench_kernels.cpp" -o "$2"
}
build "$root/cpp_kernels" "$work/current"
if [ $# -ge 1 ]; then
  mkdir "$work/old_src"
  for f in evaluator.cpp evaluator.h evaluator_kernels.inc; do
    git -C "$root" show "$1:cpp_kernels/$f" > "$work/old_src/$f"
  done
  build "$work/old_src" "$work/old"
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
