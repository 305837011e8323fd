#!/usr/bin/env bash
# Download the apache-tvm-ffi wheels a measurement bundle ships for devices whose Python differs
# from this one (the bundle always carries tvm_ffi for the Python that built it).
#   tools/fetch_runtime_wheels.sh DIR [PYTHON_VERSION ...]     # default: 3.10 3.11 3.12 3.13
#   codesign profile --target cuda --build-only --runtime-wheels DIR -o BUNDLE
set -euo pipefail
dir=${1:?usage: $0 DIR [PYTHON_VERSION ...]}
shift
versions=("${@:-3.10 3.11 3.12 3.13}")
mkdir -p "$dir"
for v in ${versions[@]}; do
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$v" \
    --platform manylinux_2_28_x86_64 -d "$dir" apache-tvm-ffi==0.1.14.post0
done
ls -l "$dir"
