"""Turning a dataset split into the normalised, resized tensors a subnet consumes."""

from __future__ import annotations

import torch

from codesign.data import ImageDataset, normalize
from codesign.supernet.supernet import resize_to


def prepare_images(
    dataset: ImageDataset, mean: tuple[float, ...], std: tuple[float, ...], resolution: int, *, chunk: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised float images ``(N, C, r, r)`` at ``resolution`` and their labels."""
    images, labels = dataset.tensors()
    out = [resize_to(normalize(images[i : i + chunk], mean, std), resolution) for i in range(0, len(images), chunk)]
    return (torch.cat(out) if out else images), labels
