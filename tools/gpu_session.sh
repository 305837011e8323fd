#!/usr/bin/env bash
# The one prepared command for a lent GPU machine (see hw_profiles/README.md, "Measuring a GPU").
# Run from the repository root there; everything it needs was built on the CPU machine and carried:
#   BUNDLE   codesign profile --target cuda --build-only --runtime-wheels W -o .device/h100_bundle
#   ARTIFACT codesign export --genome R --format tvm --target cuda -o .device/best_h100   (optional)
# It checks and times the bundle's whole subnets (torch eager beside them), the artifact and the
# kernels, writing results.json and a log under $OUT. A device call that ran out of time resumes:
# copy the results.json it returned to BUNDLE/results.json before the next call.
#   bash tools/gpu_session.sh .device/h100_bundle .device/best_h100
set -uo pipefail
bundle=${1:?usage: $0 BUNDLE [ARTIFACT ...]}
shift
out=${OUT:-$bundle}
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$(pwd)
if [ "$out" != "$bundle" ] && [ -f "$bundle/results.json" ] && [ ! -f "$out/results.json" ]; then
  cp "$bundle/results.json" "$out/results.json"  # resume what an earlier call measured
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv | tee "$out/gpu.txt"
artifacts=()
for a in "$@"; do artifacts+=(--artifact "$a"); done
python3 "$bundle/measure.py" --out "$out/results.json" --max-minutes "${MAX_MINUTES:-7}" --repeat 9 --min-repeat-ms 2 \
  "${artifacts[@]}" \
  2>&1 | tee "$out/measure.log" | grep -v "^kernels/" | tail -60
