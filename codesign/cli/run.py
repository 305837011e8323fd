"""``codesign run``: classify images with an exported artifact (TVM library, or ONNX if none)."""

from __future__ import annotations

import argparse

from codesign.cli.base import Command


class RunCommand(Command):
    name = "run"
    summary = "classify images with an exported artifact (TVM runtime, or onnxruntime)"
    description = (
        "Load an artifact directory written by `codesign export` and classify images with it: the\n"
        "TVM-compiled library when the artifact has one (only TVM's runtime is used), else the ONNX\n"
        "model with onnxruntime. --input is a .npy file: raw uint8 images (N, H, W) or (N, C, H, W),\n"
        "resized and normalized as the manifest says, or float32 arrays already in the model's input\n"
        "shape. Prints one line per image: index, predicted class and its logit."
    )
    examples = (
        "codesign run out/best_tvm --input images.npy",
        "python -c \"import numpy as np; np.save('x.npy', np.zeros((2, 28, 28), np.uint8))\" && "
        "codesign run out/best_tvm --input x.npy",
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("artifact", metavar="ARTIFACT", help="directory written by codesign export")
        parser.add_argument("--input", required=True, metavar="FILE.npy", help="images to classify")

    def run(self, args: argparse.Namespace) -> int:
        from pathlib import Path

        import numpy as np

        from codesign.errors import CodesignError
        from codesign.runtime import load_artifact, preprocess

        root = Path(args.artifact)
        if not (root / "manifest.json").is_file():
            raise CodesignError(
                f"{root} is not an artifact directory (no manifest.json); make one with codesign export"
            )
        try:
            data = np.load(args.input, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CodesignError(f"cannot read {args.input} as a .npy array: {exc}") from None
        predict, manifest = load_artifact(root)
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
        return 0
