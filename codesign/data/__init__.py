"""Real image data, read from disk (never downloaded): Fashion-MNIST (IDX), CIFAR-10, ImageFolder."""

from codesign.data.dataset import DataSplits, ImageDataset, channel_stats, normalize, split_train_val
from codesign.data.registry import DATASETS, load_splits

__all__ = ["DATASETS", "DataSplits", "ImageDataset", "channel_stats", "load_splits", "normalize", "split_train_val"]
