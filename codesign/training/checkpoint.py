"""Resumable training checkpoints: model, optimizer and progress in one safetensors file, written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from codesign.errors import CheckpointError
from codesign.fileio import atomic_path

CHECKPOINT_FORMAT = "codesign-train-checkpoint"
CHECKPOINT_SCHEMA_VERSION = 1
CHECKPOINT_FILENAME = "train_state.safetensors"


def save_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Write model weights, optimizer state and the JSON ``state`` atomically to ``path``."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in opt["state"].items():
        for name, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{name}"] = value.detach().contiguous().clone()
            else:
                scalars.setdefault(str(pid), {})[name] = value
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "schema_version": str(CHECKPOINT_SCHEMA_VERSION),
        "state": json.dumps(state),
        "param_groups": json.dumps(opt["param_groups"]),
        "optim_scalars": json.dumps(scalars),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model and optimizer from ``path`` and return the saved JSON state."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({exc}); delete it to start over") from None
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a codesign training checkpoint")
    if int(metadata.get("schema_version", "0")) > CHECKPOINT_SCHEMA_VERSION:
        raise CheckpointError(f"{path}: checkpoint schema is newer than this codesign")
    try:
        state = json.loads(metadata["state"])
        param_groups = json.loads(metadata["param_groups"])
        scalars = json.loads(metadata["optim_scalars"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata ({exc})") from None
    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match this supernet: {str(exc).splitlines()[0]}") from None
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            opt_state.setdefault(int(pid), {})[name] = value
    for pid, values in scalars.items():
        opt_state.setdefault(int(pid), {}).update(values)
    try:
        optimizer.load_state_dict({"state": opt_state, "param_groups": param_groups})
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: optimizer state does not match ({exc})") from None
    return state
