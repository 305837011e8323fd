#!/usr/bin/env bash
# Compile the C++ kernels (evaluator, importance, pybind11 bindings) for aarch64 with the Debian
# cross compiler, warnings as errors, to keep the portable build portable: the x86-only paths must
# stay behind their #if guards. Compiles only (no aarch64 machine here to run the result).
#
#     tools/cross_compile_check.sh    # honours PYTHON=/path/to/python (for the pybind11 headers),
#                                     # CXX_AARCH64 (default aarch64-linux-gnu-g++: apt g++-aarch64-linux-gnu)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
CXX_AARCH64="${CXX_AARCH64:-aarch64-linux-gnu-g++}"
command -v "$CXX_AARCH64" >/dev/null || { echo "cross compile check: $CXX_AARCH64 not found (apt install g++-aarch64-linux-gnu)"; exit 1; }
WORK="$(mktemp -d -t codesign-cross.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
# pyconfig.h is the host's; the bindings use no size-dependent Python config beyond what aarch64 shares
INCLUDES=("-I$ROOT/cpp_kernels" $("$PYTHON" -m pybind11 --includes))
for src in evaluator importance bindings; do
  "$CXX_AARCH64" -std=c++17 -O3 -fPIC -Wall -Wextra -Werror -Wno-psabi "${INCLUDES[@]}" \
    -c "$ROOT/cpp_kernels/$src.cpp" -o "$WORK/$src.o"
done
echo "cross compile check: OK (evaluator, importance, bindings compiled for aarch64)"
