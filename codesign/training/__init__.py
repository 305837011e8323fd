"""Supernet training (sandwich rule + in-place distillation) with resumable checkpoints."""

from codesign.training.trainer import SupernetTrainer, TrainConfig

__all__ = ["SupernetTrainer", "TrainConfig"]
