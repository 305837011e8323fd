#!/usr/bin/env bash
# Microbenchmark of the evaluator's kernels (tools/bench_kernels.cpp), one thread.
#   bash tools/bench_kernels.sh            # this checkout's AVX2 kernels
#   bash tools/bench_kernels.sh REV        # and, side by side, those of git revision REV
#   ISAS=avx2,avx512 RUNS=6 bash tools/bench_kernels.sh
#       # this checkout's kernels under each instruction set, RUNS interleaved runs each, best per row
# Needs g++ and a CPU with the instruction sets asked for. Builds into a temporary directory.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
build() {  # $1: folder holding evaluator.cpp, evaluator.h and evaluator_kernels.inc, $2: binary, $3: ISA
  g++ -O3 -std=c++17 -Wno-psabi -Wno-subobject-linkage -DBENCH_ISA="isa_${3:-avx2}" -DEVALUATOR="\"$1/evaluator.cpp\"" \
    "$root/tools/bench_kernels.cpp" -o "$2"
}
if [ -n "${ISAS:-}" ]; then
  IFS=, read -r -a isas <<<"$ISAS"
  for isa in "${isas[@]}"; do build "$root/cpp_kernels" "$work/$isa" "$isa"; done
  for run in $(seq "${RUNS:-6}"); do
    for isa in "${isas[@]}"; do "$work/$isa" >"$work/$isa.$run.txt"; done
  done
  python3 - "$work" "${isas[@]}" <<'PY'
import re, sys
from pathlib import Path
work, isas = Path(sys.argv[1]), sys.argv[2:]
best: dict[str, dict[str, float]] = {}
for isa in isas:
    for f in work.glob(f"{isa}.*.txt"):
        for line in f.read_text().splitlines():
            m = re.match(r"((?:pointwise|depthwise) .*?)\s+([0-9.]+) us", line)
            if m and "total" not in line:
                row = best.setdefault(m.group(1).strip(), {})
                row[isa] = min(row.get(isa, float("inf")), float(m.group(2)))
first = isas[0]
print(f"best of the interleaved runs, us per call; ratio = {first} time / each other set's")
totals = {isa: {"pointwise": 0.0, "depthwise": 0.0} for isa in isas}
for name, row in best.items():
    for isa in isas:
        totals[isa][name.split()[0]] += row[isa]
    ratios = "  ".join(f"{isa} {row[isa]:7.1f} ({row[first] / row[isa]:.2f}x)" for isa in isas[1:])
    print(f"{name:36s} {first} {row[first]:7.1f}  {ratios}")
for kind in ("pointwise", "depthwise"):
    ratios = "  ".join(f"{isa} {totals[first][kind] / totals[isa][kind]:.3f}x" for isa in isas[1:])
    print(f"{kind} total: {ratios}")
PY
  exit 0
fi
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
