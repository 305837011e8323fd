"""Running an exported artifact: the TVM-compiled library with the TVM runtime, or the ONNX model.

This module imports no part of codesign's training or search stack: an artifact directory
(``manifest.json`` + ``model_tvm.so`` and/or ``model.onnx``) runs with ``load_artifact``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def load_artifact_library(path: str | Path, *, device: str = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    """A function mapping a (1, C, H, W) float32 array to logits, backed by a compiled TVM library."""
    import tvm
    from tvm import relax

    dev = tvm.cuda(0) if device == "cuda" else tvm.cpu(0)
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(path)), dev)

    def run(images: np.ndarray) -> np.ndarray:
        out = vm["main"](tvm.runtime.tensor(np.ascontiguousarray(images, dtype=np.float32), dev))
        if isinstance(out, (list, tuple)) or type(out).__name__ == "Array":
            out = out[0]
        return out.numpy()

    return run


def load_artifact(directory: str | Path) -> tuple[Callable[[np.ndarray], np.ndarray], dict[str, Any]]:
    """The artifact's predict function (TVM library if present, else onnxruntime) and its manifest."""
    root = Path(directory)
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    library = root / manifest.get("tvm", {}).get("library", "model_tvm.so")
    if library.is_file():
        return load_artifact_library(library), manifest
    from codesign.export.onnx_export import onnxruntime_logits

    def run(images: np.ndarray) -> np.ndarray:
        return onnxruntime_logits(root / "model.onnx", images)

    return run, manifest


def preprocess(images_uint8: np.ndarray, manifest: dict[str, Any]) -> np.ndarray:
    """Raw images (N, H, W) or (N, C, H, W) uint8 -> the normalized float32 input the artifact expects."""
    import torch

    spec = manifest["input"]
    _, channels, height, width = spec["shape"]
    x = torch.from_numpy(np.asarray(images_uint8, dtype=np.float32) / 255.0)
    if x.ndim == 3:
        x = x[:, None]
    if x.shape[1] != channels:
        x = x.mean(dim=1, keepdim=True).expand(-1, channels, -1, -1)
    if tuple(x.shape[-2:]) != (height, width):
        x = torch.nn.functional.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    mean = torch.tensor(spec["normalization"]["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(spec["normalization"]["std"], dtype=torch.float32).view(1, -1, 1, 1)
    return ((x - mean) / std).numpy().astype(np.float32)
