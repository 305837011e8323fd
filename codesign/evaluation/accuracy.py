"""Accuracy of subnets with inherited weights (torch reference evaluator)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from codesign.data import DataSplits, ImageDataset
from codesign.evaluation.batchnorm import recalibrate_bn
from codesign.evaluation.preprocess import prepare_images
from codesign.space import Genome
from codesign.supernet.static import StaticSubnet
from codesign.supernet.supernet import ElasticSupernet


@torch.no_grad()
def predict_logits(module: nn.Module, images: torch.Tensor, *, batch_size: int = 500) -> torch.Tensor:
    """Logits of ``module`` in eval mode for prepared images."""
    was_training = module.training
    module.eval()
    try:
        return torch.cat([module(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
    finally:
        module.train(was_training)


def accuracy_of(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of correct top-1 predictions."""
    return float((logits.argmax(dim=1) == labels).float().mean().item())


@dataclass(frozen=True)
class SubnetScore:
    """The measured accuracy of one subnet on one split."""

    genome: Genome
    accuracy: float
    split: str
    images: int


class TorchSubnetEvaluator:
    """Evaluate subnets of a supernet: extract, recalibrate BN on training images, score a split.

    Prepared tensors are cached per resolution, so scoring a population costs one preprocessing
    pass per resolution.
    """

    def __init__(
        self,
        supernet: ElasticSupernet,
        splits: DataSplits,
        *,
        calibration_images: int = 2000,
        calibration_batch_size: int = 250,
        split: str = "val",
        max_images: int | None = None,
    ) -> None:
        self.supernet = supernet
        self.splits = splits
        self.split = split
        self.calibration_images = calibration_images
        self.calibration_batch_size = calibration_batch_size
        target: ImageDataset = getattr(splits, split)
        self._target = target.head(max_images) if max_images else target
        self._calibration = splits.train.head(calibration_images)
        self._cache: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def _prepared(self, which: str, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = (which, resolution)
        if key not in self._cache:
            ds = self._calibration if which == "calibration" else self._target
            self._cache[key] = prepare_images(ds, self.splits.mean, self.splits.std, resolution)
        return self._cache[key]

    def subnet(self, genome: Genome) -> StaticSubnet:
        """The extracted, BN-recalibrated static subnet of ``genome``."""
        module = self.supernet.extract(genome)
        calib, _ = self._prepared("calibration", genome.resolution)
        recalibrate_bn(
            module,
            calib,
            batch_size=self.calibration_batch_size,
            num_batches=max(1, self.calibration_images // self.calibration_batch_size),
        )
        return module.eval()

    def evaluate(self, genome: Genome) -> SubnetScore:
        """Accuracy of one subnet on the evaluator's split."""
        images, labels = self._prepared("target", genome.resolution)
        acc = accuracy_of(predict_logits(self.subnet(genome), images), labels)
        return SubnetScore(genome, acc, self.split, len(labels))

    @property
    def image_count(self) -> int:
        """How many images each accuracy is measured on (the size of the scored split)."""
        return len(self._target)

    def evaluate_many(self, genomes: list[Genome]) -> np.ndarray:
        """Accuracies of a population, in order."""
        return np.asarray([self.evaluate(g).accuracy for g in genomes], dtype=np.float64)
