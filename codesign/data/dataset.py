"""In-memory image datasets and the train / validation / test splits every accuracy uses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from codesign.errors import DatasetError


@dataclass(frozen=True)
class ImageDataset:
    """Images as ``uint8`` array ``(N, H, W, C)`` with integer labels ``(N,)``."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    name: str

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise DatasetError(
                f"{self.name}: images must be uint8 (N, H, W, C), got {self.images.dtype} {self.images.shape}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise DatasetError(f"{self.name}: {self.labels.shape[0]} labels for {self.images.shape[0]} images")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise DatasetError(f"{self.name}: labels outside 0..{len(self.classes) - 1}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def channels(self) -> int:
        """Colour channels (1 for grayscale)."""
        return int(self.images.shape[3])

    @property
    def image_size(self) -> int:
        """Height of the images (they are square in every supported set)."""
        return int(self.images.shape[1])

    def subset(self, indices: np.ndarray, name: str | None = None) -> ImageDataset:
        """The images at ``indices``."""
        return ImageDataset(self.images[indices], self.labels[indices], self.classes, name or self.name)

    def head(self, count: int) -> ImageDataset:
        """The first ``count`` images (all when ``count`` is larger)."""
        return self.subset(np.arange(min(count, len(self))))

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Images as float ``(N, C, H, W)`` in [0, 1] and labels as int64."""
        x = torch.from_numpy(np.ascontiguousarray(self.images.transpose(0, 3, 1, 2))).float().div_(255.0)
        return x, torch.from_numpy(self.labels.astype(np.int64))


@dataclass(frozen=True)
class DataSplits:
    """Splits: ``train`` for weights, ``val`` (held out of train) inside search, ``test`` for final numbers only."""

    train: ImageDataset
    val: ImageDataset
    test: ImageDataset
    mean: tuple[float, ...]
    std: tuple[float, ...]


def split_train_val(train: ImageDataset, val_size: int, seed: int) -> tuple[ImageDataset, ImageDataset]:
    """Hold ``val_size`` images out of ``train`` with a seeded, class-balanced-in-expectation shuffle."""
    if not 0 < val_size < len(train):
        raise DatasetError(f"{train.name}: cannot hold out {val_size} of {len(train)} training images")
    order = np.random.default_rng(seed).permutation(len(train))
    return train.subset(np.sort(order[val_size:]), f"{train.name}/train"), train.subset(
        np.sort(order[:val_size]), f"{train.name}/val"
    )


def channel_stats(dataset: ImageDataset) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of the images in [0, 1]."""
    x = dataset.images.reshape(-1, dataset.channels).astype(np.float64) / 255.0
    return tuple(float(v) for v in x.mean(axis=0)), tuple(float(v) for v in x.std(axis=0))


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """``(x - mean) / std`` per channel for a float batch in [0, 1]."""
    m = torch.tensor(mean, dtype=images.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
    return (images - m) / s
