"""Static subnet -> ONNX, checked with ``onnx.checker`` and against onnxruntime."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from codesign.errors import ExportError
from codesign.supernet.static import StaticSubnet

DEFAULT_OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAME = "logits"


def export_onnx(module: StaticSubnet, path: str | Path, *, batch_size: int = 1, opset: int = DEFAULT_OPSET) -> Path:
    """Write ``module`` (in eval mode) as a static-shape ONNX model and run ``onnx.checker`` on it."""
    import onnx

    path = Path(path)
    module = module.eval()
    channels = module.config["in_channels"]
    example = torch.zeros(batch_size, channels, module.resolution, module.resolution)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    try:
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{path}: exported ONNX fails onnx.checker: {exc}") from None
    return path


def onnxruntime_logits(path: str | Path, images: np.ndarray, *, threads: int = 1) -> np.ndarray:
    """Run an exported model with onnxruntime over ``images`` (N, C, r, r), in batches of its static size."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    batch = session.get_inputs()[0].shape[0]
    outputs = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        if len(chunk) < batch:  # pad the last batch to the static batch size
            chunk = np.concatenate([chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]), chunk.dtype)])
        outputs.append(session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(chunk, dtype=np.float32)})[0])
    return np.concatenate(outputs)[: len(images)]


def check_onnx_parity(
    module: StaticSubnet, path: str | Path, images: torch.Tensor, *, tolerance: float = 1e-4
) -> float:
    """Max |torch - onnxruntime| over ``images``; raises :class:`ExportError` above ``tolerance``."""
    module = module.eval()
    with torch.no_grad():
        expected = module(images).numpy()
    got = onnxruntime_logits(path, images.numpy())
    err = float(np.max(np.abs(expected - got))) if len(expected) else 0.0
    if not err <= tolerance:
        raise ExportError(
            f"{path}: onnxruntime output differs from torch by {err:.3g} (> {tolerance:g}) over {len(images)} images"
        )
    return err
