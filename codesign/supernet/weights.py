"""Saving and loading supernet weights as safetensors (never pickle), with validated metadata.

A supernet file carries its space description and the input normalisation in its metadata, so
one file is enough to rebuild and use it. The shipped default lives in ``codesign/pretrained/``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from codesign.errors import CheckpointError
from codesign.fileio import atomic_path
from codesign.space import SearchSpace
from codesign.supernet.supernet import ElasticSupernet

SUPERNET_FORMAT = "codesign-supernet"
SUPERNET_SCHEMA_VERSION = 1
SUPERNET_FILENAME = "supernet.safetensors"
DEFAULT_SUPERNET = "fmnist_mbv3"


@dataclass(frozen=True)
class LoadedSupernet:
    """A supernet with the preprocessing it was trained with."""

    supernet: ElasticSupernet
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dataset: str
    info: dict[str, Any]
    path: Path


def save_supernet(
    path: str | Path,
    supernet: ElasticSupernet,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    dataset: str,
    info: dict[str, Any] | None = None,
) -> Path:
    """Write weights + metadata atomically to ``path`` (a file, or a directory to hold ``supernet.safetensors``)."""
    from safetensors.torch import save_file

    target = Path(path)
    if target.suffix != ".safetensors":
        target = target / SUPERNET_FILENAME
    metadata = {
        "format": SUPERNET_FORMAT,
        "schema_version": str(SUPERNET_SCHEMA_VERSION),
        "space": json.dumps(supernet.space.to_dict()),
        "normalization": json.dumps({"mean": list(mean), "std": list(std)}),
        "dataset": dataset,
        "info": json.dumps(info or {}),
    }
    tensors = {k: v.detach().contiguous().clone() for k, v in supernet.state_dict().items()}
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return target


def resolve_supernet_path(path: str | Path | None) -> Path:
    """The weights file for ``path``: a file, a directory holding one, or (None) the shipped default."""
    if path is None:
        return Path(str(resources.files("codesign.pretrained") / DEFAULT_SUPERNET / SUPERNET_FILENAME))
    p = Path(path)
    return p / SUPERNET_FILENAME if p.is_dir() else p


def load_supernet(path: str | Path | None = None) -> LoadedSupernet:
    """Load and validate a supernet file; ``None`` loads the shipped Fashion-MNIST default."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = resolve_supernet_path(path)
    if not file.is_file():
        hint = " (the package was installed without its pretrained data)" if path is None else ""
        raise CheckpointError(f"supernet weights not found: {file}{hint}")
    try:
        from safetensors import safe_open

        with safe_open(str(file), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{file}: not a readable safetensors file ({exc})") from None
    if metadata.get("format") != SUPERNET_FORMAT:
        raise CheckpointError(f"{file}: not a codesign supernet (format={metadata.get('format')!r})")
    version = int(metadata.get("schema_version", "0"))
    if version > SUPERNET_SCHEMA_VERSION:
        raise CheckpointError(
            f"{file}: supernet schema {version} is newer than this codesign ({SUPERNET_SCHEMA_VERSION})"
        )
    try:
        space = SearchSpace.from_dict(json.loads(metadata["space"]))
        norm = json.loads(metadata["normalization"])
        info = json.loads(metadata.get("info", "{}"))
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{file}: corrupt supernet metadata ({exc})") from None
    supernet = ElasticSupernet(space)
    try:
        supernet.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{file}: weights do not match the space {space.name!r}: {str(exc).splitlines()[0]}"
        ) from None
    supernet.eval()
    return LoadedSupernet(supernet, tuple(norm["mean"]), tuple(norm["std"]), metadata.get("dataset", ""), info, file)


def state_dict_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Whether two state dicts hold exactly the same tensors."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
