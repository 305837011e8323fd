#!/usr/bin/env bash
# Build codesign._kernels with AddressSanitizer + UBSan (CMake option CODESIGN_SANITIZE=ON) into a
# temporary directory and run a small evaluation with it: C++ evaluator (recalibration, several
# thread layouts, error paths) checked against torch, plus the importance kernels.
# Exits non-zero on any sanitizer report or mismatch.
#
#     tools/asan_check.sh    # honours PYTHON=/path/to/python, JOBS=N, ASAN_BUILD_DIR=/kept/build/dir
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
JOBS="${JOBS:-1}"
WORK="$(mktemp -d -t codesign-asan.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
BUILD="${ASAN_BUILD_DIR:-$WORK/build}"  # set ASAN_BUILD_DIR to keep (and reuse) the sanitized build

cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCODESIGN_SANITIZE=ON \
  -Dpybind11_DIR="$("$PYTHON" -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$PYTHON" >"$WORK/cmake.log" 2>&1 ||
  { cat "$WORK/cmake.log"; exit 1; }
cmake --build "$BUILD" -j"$JOBS" >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; exit 1; }

# A copy of the package whose extension is the sanitized build.
mkdir -p "$WORK/pkg"
cp -r "$ROOT/codesign" "$WORK/pkg/codesign"
rm -f "$WORK"/pkg/codesign/_kernels*.so
cp "$BUILD"/_kernels*.so "$WORK/pkg/codesign/"

# The sanitizer runtimes must come first when the host (python) is not instrumented.
CXX="${CXX:-c++}"
PRELOAD="$("$CXX" -print-file-name=libasan.so) $("$CXX" -print-file-name=libubsan.so)"

cat >"$WORK/check.py" <<'PY'
import numpy as np
import torch

torch.set_num_threads(1)
import codesign._kernels as ext
from codesign import kernels
from codesign.evaluation import predict_logits, recalibrate_bn
from codesign.evaluation.cpp_evaluator import supernet_config
from codesign.space import get_space
from codesign.supernet import ElasticSupernet
from codesign.testing import random_genomes, randomize_batchnorm

worst = 0.0
for name, count in (("tiny", 4), ("fmnist_mbv3", 3)):
    space = get_space(name)
    torch.manual_seed(0)
    net = ElasticSupernet(space)
    randomize_batchnorm(net, 0)
    net.eval()
    weights = {k: v.numpy() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    ev = ext.SubnetEvaluator(supernet_config(net), weights)
    genomes = random_genomes(space, count, seed=1)
    plans, images, calib, want = [], {}, {}, []
    g = torch.Generator().manual_seed(0)
    for genome in genomes:
        r = genome.resolution
        if r not in images:
            images[r] = torch.randn(11, 1, r, r, generator=g)
            calib[r] = torch.randn(37, 1, r, r, generator=g) + 0.2
        cfg = net.subnet_config(genome)
        plans.append((r, [(b["slot"], b["mid_channels"], b["out_channels"], b["kernel_size"]) for b in cfg["blocks"]]))
        sub = net.extract(genome)
        recalibrate_bn(sub, calib[r], batch_size=10, num_batches=4)
        want.append(predict_logits(sub, images[r]))
    # a repeated subnet: the run shares its stem and every block (prefixes computed once, then freed)
    plans.append(plans[0])
    want.append(want[0])
    labels = np.arange(11) % space.num_classes
    for threads in (1, 2, 3, 16):
        hits, logits = ev.run(
            plans, {r: x.numpy() for r, x in images.items()}, labels=labels,
            calibration={r: x.numpy() for r, x in calib.items()}, calibration_batch_size=10,
            num_threads=threads, return_logits=True,
        )
        for got, ref in zip(logits, want):
            worst = max(worst, float((torch.from_numpy(got) - ref).abs().max() / ref.abs().max()))
        # one request at a time: the threads share each calibration batch
        _, single = ev.run([plans[0]], {plans[0][0]: images[plans[0][0]].numpy()},
                            calibration={plans[0][0]: calib[plans[0][0]].numpy()}, calibration_batch_size=10,
                            num_threads=threads, return_logits=True)
        worst = max(worst, float((torch.from_numpy(single[0]) - want[0]).abs().max() / want[0].abs().max()))
    r0 = plans[0][0]
    prepared = ev.prepare(plans[0], calib[r0].numpy(), 10)
    for threads in (1, 2):
        got = torch.from_numpy(prepared.logits(images[r0].numpy(), num_threads=threads))
        worst = max(worst, float((got - want[0]).abs().max() / want[0].abs().max()))
    for bad in [(plans[0][0], [(999, 8, 8, 3)]), (plans[0][0], [(0, 10**6, 8, 3)]), "x"]:
        try:
            ev.run([bad], {plans[0][0]: images[plans[0][0]].numpy()})
        except ValueError:
            pass
        else:
            raise SystemExit(f"bad plan {bad!r} was accepted")
rng = np.random.default_rng(0)
scores = kernels.group_l1_importance([rng.standard_normal((64, 300)).astype(np.float32)] * 2, num_threads=2)
assert scores.shape == (64,) and kernels.rank_channels(scores).shape == (64,)
print(f"asan check: evaluator max relative error {worst:.2e}")
if worst > 1e-4:
    raise SystemExit("asan check: evaluator does not match torch")
PY

cd "$WORK"
PYTHONPATH="$WORK/pkg" LD_PRELOAD="$PRELOAD" \
  ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=99" \
  UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
  "$PYTHON" "$WORK/check.py"
echo "asan check: OK (no sanitizer reports)"
