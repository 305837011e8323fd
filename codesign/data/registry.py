"""Dataset factory: ``load_splits(name, root)`` returns train / validation / test splits."""

from __future__ import annotations

from pathlib import Path

from codesign.data.dataset import DataSplits, channel_stats, split_train_val
from codesign.data.formats import (
    DEFAULT_FASHION_MNIST_ROOT,
    FASHION_MNIST_CLASSES,
    load_cifar10_split,
    load_idx_pair,
    load_image_folder,
)
from codesign.errors import DatasetError

DATASETS = ("fashion-mnist", "cifar10", "imagefolder")


def load_splits(
    name: str = "fashion-mnist",
    root: str | Path | None = None,
    *,
    val_size: int = 5000,
    seed: int = 0,
    image_size: int = 32,
    channels: int = 3,
) -> DataSplits:
    """Load a dataset and hold out ``val_size`` training images as the validation split.

    ``fashion-mnist``: IDX files in ``root`` (default ``/usr/share/datasets/fashion-mnist``).
    ``cifar10``: the ``cifar-10-batches-py`` folder. ``imagefolder``: ``root/train/<class>/*`` and
    ``root/test/<class>/*`` (resized to ``image_size`` with ``channels`` channels).
    Normalisation statistics come from the training split only.
    """
    if name == "fashion-mnist":
        base = Path(root) if root is not None else DEFAULT_FASHION_MNIST_ROOT
        if not base.is_dir():
            raise DatasetError(
                f"Fashion-MNIST directory {base} does not exist (install Debian's dataset-fashion-mnist "
                "or pass --data-root DIR holding train-images-idx3-ubyte.gz and friends)"
            )
        full_train = load_idx_pair(base, "train", FASHION_MNIST_CLASSES, "fashion-mnist")
        test = load_idx_pair(base, "t10k", FASHION_MNIST_CLASSES, "fashion-mnist/test")
    elif name == "cifar10":
        if root is None:
            raise DatasetError("cifar10 needs --data-root pointing at the 'cifar-10-batches-py' folder")
        full_train, test = load_cifar10_split(Path(root), True), load_cifar10_split(Path(root), False)
    elif name == "imagefolder":
        if root is None:
            raise DatasetError("imagefolder needs --data-root with train/ and test/ class folders")
        full_train = load_image_folder(Path(root) / "train", image_size, channels)
        test = load_image_folder(Path(root) / "test", image_size, channels)
        if test.classes != full_train.classes:
            raise DatasetError(f"{root}: train and test class folders differ")
    else:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    train, val = split_train_val(full_train, val_size, seed)
    mean, std = channel_stats(train)
    return DataSplits(train=train, val=val, test=test, mean=mean, std=std)
