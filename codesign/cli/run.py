"""``codesign run``: classify images with an exported artifact (TVM library, or ONNX if none)."""

from __future__ import annotations

import argparse
from typing import Any

from codesign.cli.base import Command


class RunCommand(Command):
    name = "run"
    summary = "classify images with an exported artifact (TVM runtime, or onnxruntime)"
    description = (
        "Load an artifact directory written by `codesign export` and classify images with it: the\n"
        "TVM-compiled library when the artifact has one (only TVM's runtime is used), else the ONNX\n"
        "model with onnxruntime. --input is a .npy file: raw uint8 images (N, H, W) or (N, C, H, W),\n"
        "resized and normalized as the manifest says, or float32 arrays already in the model's input\n"
        "shape. Prints one line per image: index, predicted class and its logit. --check compares the\n"
        "artifact's reference inputs with the onnxruntime logits saved at export (exit 1 beyond the\n"
        "tolerance); --time measures its latency on this device next to the manifest's prediction."
    )
    examples = (
        "codesign run out/best_tvm --input images.npy",
        "codesign run out/best_h100 --check --time      # on the GPU machine, after export --target cuda",
        "python -c \"import numpy as np; np.save('x.npy', np.zeros((2, 28, 28), np.uint8))\" && "
        "codesign run out/best_tvm --input x.npy",
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("artifact", metavar="ARTIFACT", help="directory written by codesign export")
        parser.add_argument("--input", metavar="FILE.npy", help="images to classify")
        parser.add_argument(
            "--check",
            action="store_true",
            help="run the artifact's reference inputs and compare with the onnxruntime logits it ships "
            "(the on-device parity check of a cuda export)",
        )
        parser.add_argument("--time", action="store_true", help="measure latency (batch 1) next to the prediction")
        parser.add_argument(
            "--device", choices=("cpu", "cuda"), default=None, help="default: the device the artifact targets"
        )
        parser.add_argument(
            "--threads",
            type=int,
            default=None,
            metavar="N",
            help="CPU threads (default: TVM_NUM_THREADS if set, else the count export measured fastest on "
            "this device, else the cores the artifact's target was profiled with, its num-cores)",
        )

    def run(self, args: argparse.Namespace) -> int:
        from pathlib import Path

        from codesign.errors import CodesignError
        from codesign.runtime import RuntimeUnavailable, load_artifact

        root = Path(args.artifact)
        if not (root / "manifest.json").is_file():
            raise CodesignError(
                f"{root} is not an artifact directory (no manifest.json); make one with codesign export"
            )
        if not (args.input or args.check or args.time):
            raise CodesignError("nothing to do: give --input FILE.npy, --check or --time")
        try:
            if args.threads is not None and args.threads < 1:
                raise CodesignError(f"--threads must be at least 1, got {args.threads}")
            predict, manifest = load_artifact(root, device=args.device, threads=args.threads)
        except RuntimeUnavailable as exc:
            raise CodesignError(str(exc)) from None
        status = 0
        if args.check:
            status = _check(root, manifest, predict)
        if args.time:
            _time(root, manifest, predict)
        if args.input:
            _classify(args.input, manifest, predict)
        return status


def _check(root: Any, manifest: dict[str, Any], predict: Any) -> int:
    """Compare the artifact's outputs on its reference inputs with the onnxruntime logits saved at export."""
    import numpy as np

    from codesign.errors import CodesignError

    spec = manifest.get("tvm", {}).get("device_check")
    if spec is None:
        raise CodesignError(f"{root} carries no reference outputs (export it again with --format tvm)")
    x = np.load(root / spec["inputs"], allow_pickle=False)
    want = np.load(root / spec["onnxruntime_logits"], allow_pickle=False)
    got = np.concatenate([predict(x[i : i + 1]) for i in range(len(x))])
    err = float(np.max(np.abs(got - want)))
    ok = bool(np.isfinite(got).all()) and err <= spec["tolerance"]
    print(
        f"check: max |artifact - onnxruntime| = {err:.3g} over {len(x)} images (tolerance {spec['tolerance']:g}): "
        + ("ok" if ok else "FAILED")
    )
    return 0 if ok else 1


def _time(root: Any, manifest: dict[str, Any], predict: Any) -> None:
    """Latency of the compiled library on this device, next to the latency model's prediction."""
    import statistics

    import numpy as np

    from codesign.errors import CodesignError

    if not hasattr(predict, "time"):
        raise CodesignError(f"{root} has no compiled TVM library to time")
    x = np.random.default_rng(0).standard_normal(manifest["input"]["shape"]).astype(np.float32)
    samples = predict.time(x, repeat=30)
    median = statistics.median(samples)
    spread = (np.percentile(samples, 90) - np.percentile(samples, 10)) / 2
    latency = manifest.get("tvm", {}).get("latency", {})
    # a re-tuned artifact's prediction uses the kernel times measured while re-tuning
    predicted = latency.get("predicted_retuned_ms", latency.get("predicted_ms"))
    threads = getattr(predict, "threads", None)
    on = f", {threads} thread{'s' if threads != 1 else ''}" if threads and predict.device == "cpu" else ""
    line = f"latency: median {median:.4f} ms (+-{spread:.4f}, p10-p90 half-width, 30 repeats{on})"
    if predicted:
        which = "predicted after re-tuning" if "predicted_retuned_ms" in latency else "predicted"
        line += f"; {which} {predicted:.4f} ms ({(predicted - median) / median:+.1%})"
    print(line)


def _classify(path: str, manifest: dict[str, Any], predict: Any) -> None:
    import numpy as np

    from codesign.errors import CodesignError
    from codesign.runtime import preprocess

    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CodesignError(f"cannot read {path} as a .npy array: {exc}") from None
    shape = manifest["input"]["shape"]
    x = data.astype(np.float32) if data.dtype == np.float32 and list(data.shape[1:]) == shape[1:] else None
    if x is None:
        if data.dtype != np.uint8:
            raise CodesignError(f"--input must hold uint8 images or float32 arrays of shape (N, {shape[1:]})")
        x = preprocess(data, manifest)
    classes = manifest["output"]["classes"]
    for i in range(len(x)):
        logits = predict(x[i : i + 1])[0]
        k = int(np.argmax(logits))
        print(f"{i}\t{classes[k] if k < len(classes) else k}\t{float(logits[k]):.4f}")
