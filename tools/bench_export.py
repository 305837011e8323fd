"""codesign's exported TVM artifact vs onnxruntime vs torch eager, side by side on this CPU (batch 1).

Models: the default recommended subnet (the README's main job: ``codesign search --latency-ms
0.35`` on the shipped supernet and profile; or ``--recommended FILE``), and the largest and smallest
subnets at each kernel's fastest profiled schedule. Each is exported with ``codesign export
--format tvm`` (checked against onnxruntime), then timed in interleaved rounds, all three engines
through the same kind of Python loop (one call per image, inputs already in place, 2 threads each):

- TVM: the artifact through ``codesign.runtime`` (TVM runtime only); TVM's own time evaluator
  (no Python in the loop) is printed beside it,
- onnxruntime on the same ONNX file (``intra_op_num_threads`` = threads, all graph optimizations),
- torch eager on the same physically pruned subnet (``inference_mode``).

The manifest's predicted latency is compared with the TVM artifact's measured one. Run it on an
otherwise idle machine. Last line:
``RESULT export tvm_over_ort=<geomean> tvm_over_torch=<geomean> pred_vs_measured_within10=<share>``.

    python tools/bench_export.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _loop_ms(call: Any, *, inner: int, repeat: int) -> list[float]:
    for _ in range(5):
        call()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(inner):
            call()
        samples.append((time.perf_counter() - start) * 1e3 / inner)
    return samples


def _engines(artifact: Path, threads: int) -> dict[str, Any]:
    import onnxruntime as ort
    import safetensors.torch
    import torch

    from codesign.runtime import CompiledModel
    from codesign.supernet.static import StaticSubnet

    manifest = json.loads((artifact / "manifest.json").read_text())
    shape = manifest["input"]["shape"]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)

    tvm_model = CompiledModel(artifact / "model_tvm.so")
    x_tvm = tvm_model.to_device(x)

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(artifact / "model.onnx"), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    torch.set_num_threads(threads)
    subnet = StaticSubnet(json.loads((artifact / "subnet_config.json").read_text())).eval()
    subnet.load_state_dict(safetensors.torch.load_file(str(artifact / "subnet.safetensors")))
    x_torch = torch.from_numpy(x)

    def run_torch() -> None:
        with torch.inference_mode():
            subnet(x_torch)

    reference = session.run(None, {name: x})[0]
    np.testing.assert_allclose(tvm_model(x), reference, atol=1e-4, rtol=1e-4)
    return {
        "manifest": manifest,
        "x": x,
        "tvm": lambda: tvm_model.main(x_tvm),
        "tvm_evaluator": lambda repeat: tvm_model.time(x, repeat=repeat, min_repeat_ms=50),
        "onnxruntime": lambda: session.run(None, {name: x}),
        "torch": run_torch,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--recommended", default=None, help="a search's recommended.json (default: run the search)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per model")
    parser.add_argument("--out", default=None, help="write every measurement as JSON here")
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)

    from codesign.data import load_splits
    from codesign.export.pipeline import export_subnet
    from codesign.latency.model import LatencyModel
    from codesign.profile.shipped import resolve_profile
    from codesign.profile.tvm_backend import host_llvm_target
    from codesign.space import Genome
    from codesign.supernet import load_supernet

    work = Path(tempfile.mkdtemp(prefix="bench_export_"))
    recommended = Path(args.recommended) if args.recommended else None
    if recommended is None:
        recommended = work / "search" / "recommended.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "codesign",
                "search",
                "--latency-ms",
                "0.35",
                "--allow-mismatch",
                "-o",
                str(work / "search"),
                "--threads",
                str(args.threads),
            ],
            check=True,
        )
    loaded = load_supernet()
    space = loaded.supernet.space
    profile = resolve_profile(host_llvm_target(), None, allow_mismatch=True).profile
    model = LatencyModel.from_profile(profile)
    data = json.loads(recommended.read_text())
    genomes = {
        "recommended": Genome.from_dict(data.get("genome", data)),
        "largest": model.fastest_schedules(Genome.largest(space)),
        "smallest": model.fastest_schedules(Genome.smallest(space)),
    }
    splits = load_splits("fashion-mnist", None, val_size=5000, seed=0, channels=space.in_channels)
    rows = []
    for label, genome in genomes.items():
        artifact = work / label
        export_subnet(
            loaded=loaded,
            genome=genome,
            splits=splits,
            out_dir=artifact,
            parity_images=64,
            evaluate_test=False,
            profile=profile,
            measure_latency=False,
        )
        engines = _engines(artifact, args.threads)
        samples: dict[str, list[float]] = {"tvm": [], "onnxruntime": [], "torch": [], "tvm_evaluator": []}
        for _ in range(args.rounds):
            for engine in ("tvm", "onnxruntime", "torch"):
                samples[engine] += _loop_ms(engines[engine], inner=50, repeat=6)
            samples["tvm_evaluator"] += engines["tvm_evaluator"](6)
        medians = {k: statistics.median(v) for k, v in samples.items()}
        predicted = engines["manifest"]["tvm"]["latency"]["predicted_ms"]
        rows.append(
            {
                "model": label,
                "genome": genome.to_dict(),
                "predicted_ms": predicted,
                "median_ms": medians,
                "p10_p90_ms": {
                    k: [float(np.percentile(v, 10)), float(np.percentile(v, 90))] for k, v in samples.items()
                },
            }
        )
    print(
        f"\n{'model':<12} {'TVM loop':>9} {'TVM eval':>9} {'ORT':>9} {'torch':>9} {'TVM/ORT':>8} "
        f"{'TVM/torch':>9} {'predicted':>9} {'pred err':>8}   (ms, batch 1, {args.threads} threads)"
    )
    for r in rows:
        m = r["median_ms"]
        err = (r["predicted_ms"] - m["tvm_evaluator"]) / m["tvm_evaluator"]
        r["pred_error"] = err
        print(
            f"{r['model']:<12} {m['tvm']:9.4f} {m['tvm_evaluator']:9.4f} {m['onnxruntime']:9.4f} {m['torch']:9.4f} "
            f"{m['tvm'] / m['onnxruntime']:8.3f} {m['tvm'] / m['torch']:9.3f} {r['predicted_ms']:9.4f} {err:+8.1%}"
        )
    over_ort = float(np.exp(np.mean([np.log(r["median_ms"]["tvm"] / r["median_ms"]["onnxruntime"]) for r in rows])))
    over_torch = float(np.exp(np.mean([np.log(r["median_ms"]["tvm"] / r["median_ms"]["torch"]) for r in rows])))
    within = float(np.mean([abs(r["pred_error"]) <= 0.10 for r in rows]))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    print(
        f"RESULT export tvm_over_ort={over_ort:.3f} tvm_over_torch={over_torch:.3f} "
        f"pred_vs_measured_within10={within:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
