"""Supernet training: full-network warm-up, then the sandwich rule with in-place distillation.

Every step of the sandwich phase trains the largest subnet on the labels, then the smallest and
``num_random_subnets`` random subnets on the labels plus the largest one's soft predictions
(in-place distillation), each at its own input resolution. Channels are ranked by importance
and physically reordered once, when the sandwich phase starts.

Everything random is derived from ``(seed, step)``, so a run resumed from a checkpoint follows
the same trajectory as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from codesign.data import DataSplits, normalize
from codesign.errors import CheckpointError
from codesign.evaluation import TorchSubnetEvaluator
from codesign.fileio import write_json_atomic
from codesign.space import Genome
from codesign.supernet import ElasticSupernet, reorganize_channels, resize_to, save_supernet
from codesign.training.checkpoint import CHECKPOINT_FILENAME, load_checkpoint, save_checkpoint


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of a supernet training run (all of them recorded with the result)."""

    epochs_full: int = 3
    epochs_sandwich: int = 12
    num_random_subnets: int = 1
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-5
    warmup_steps: int = 200
    kd_ratio: float = 1.0
    label_smoothing: float = 0.1
    augment: bool = True
    seed: int = 0
    checkpoint_every_steps: int = 200
    max_train_images: int | None = None
    eval_images: int = 2000
    reorganize_channels: bool = True
    init_from: str | None = None

    def __post_init__(self) -> None:
        if self.epochs_full < 0 or self.epochs_sandwich < 0 or self.epochs_full + self.epochs_sandwich == 0:
            raise ValueError("train for at least one epoch")
        if self.batch_size < 2 or self.lr <= 0 or self.num_random_subnets < 0:
            raise ValueError("batch_size must be >= 2, lr > 0, num_random_subnets >= 0")


def _augment(x: torch.Tensor, generator: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random crop with ``pad`` pixels of zero padding and random horizontal flips (images in [0, 1])."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).view(n, 1, h, 1).expand(n, x.shape[1], h, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
    out = out.gather(3, cols)
    flip = torch.rand(n, generator=generator) < 0.5
    return torch.where(flip.view(n, 1, 1, 1), out.flip(3), out)


class SupernetTrainer:
    """Train an :class:`ElasticSupernet` on a dataset's training split, resumably, into ``out_dir``."""

    def __init__(
        self,
        supernet: ElasticSupernet,
        splits: DataSplits,
        config: TrainConfig,
        out_dir: str | Path,
        *,
        progress: bool = True,
    ) -> None:
        self.supernet, self.splits, self.config = supernet, splits, config
        self.out_dir = Path(out_dir)
        self.progress = progress
        space = supernet.space
        if splits.train.channels != space.in_channels:
            raise ValueError(
                f"dataset has {splits.train.channels} channels, space {space.name!r} expects {space.in_channels}"
            )
        if len(splits.train.classes) != space.num_classes:
            raise ValueError(
                f"dataset has {len(splits.train.classes)} classes, space {space.name!r} expects {space.num_classes}"
            )
        train = splits.train.head(config.max_train_images) if config.max_train_images else splits.train
        self.images, self.labels = train.tensors()
        # channels-last is 1.5-3x faster for depthwise convolutions on CPU; it does not change results' meaning.
        self.supernet.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # stubs lack memory_format
        self.steps_per_epoch = len(self.images) // config.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(self.images)} training images are fewer than one batch of {config.batch_size}")
        self.total_steps = self.steps_per_epoch * (config.epochs_full + config.epochs_sandwich)
        self.sandwich_start = self.steps_per_epoch * config.epochs_full
        self.optimizer = torch.optim.AdamW(supernet.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.largest, self.smallest = Genome.largest(space), Genome.smallest(space)

    @property
    def checkpoint_path(self) -> Path:
        """Where the resumable state is written."""
        return self.out_dir / CHECKPOINT_FILENAME

    def _lr_at(self, step: int) -> float:
        c = self.config
        if step < c.warmup_steps:
            return c.lr * (step + 1) / c.warmup_steps
        progress = (step - c.warmup_steps) / max(1, self.total_steps - c.warmup_steps)
        return c.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    def _batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        epoch, index = divmod(step, self.steps_per_epoch)
        order = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(c.seed * 1_000_003 + epoch))
        idx = order[index * c.batch_size : (index + 1) * c.batch_size]
        x = self.images[idx]
        if c.augment:
            x = _augment(x, torch.Generator().manual_seed(c.seed * 7_919 + step))
        x = normalize(x, self.splits.mean, self.splits.std).contiguous(memory_format=torch.channels_last)
        return x, self.labels[idx]

    def _subnets_for_step(self, step: int) -> list[Genome]:
        if step < self.sandwich_start:
            return [self.largest]
        rng = np.random.default_rng([self.config.seed, step])
        return [self.largest, self.smallest] + [
            Genome.random(self.supernet.space, rng) for _ in range(self.config.num_random_subnets)
        ]

    def _train_step(self, step: int) -> float:
        c = self.config
        torch.manual_seed(c.seed * 104_729 + step)
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr_at(step)
        x, y = self._batch(step)
        self.supernet.train()
        self.optimizer.zero_grad(set_to_none=True)
        teacher: torch.Tensor | None = None
        total = 0.0
        for i, genome in enumerate(self._subnets_for_step(step)):
            self.supernet.set_active_subnet(genome)
            logits = self.supernet(resize_to(x, genome.resolution).contiguous(memory_format=torch.channels_last))
            loss = F.cross_entropy(logits, y, label_smoothing=c.label_smoothing)
            if i == 0:
                teacher = logits.detach()
            elif c.kd_ratio > 0 and teacher is not None:
                loss = loss + c.kd_ratio * F.kl_div(
                    F.log_softmax(logits, 1), F.softmax(teacher, 1), reduction="batchmean"
                )
            loss.backward()
            total += float(loss.item())
        torch.nn.utils.clip_grad_norm_(self.supernet.parameters(), 5.0)
        self.optimizer.step()
        return total

    def evaluate(self) -> dict[str, float]:
        """Validation accuracy of the largest and smallest subnets after BN recalibration."""
        evaluator = TorchSubnetEvaluator(
            self.supernet, self.splits, split="val", max_images=self.config.eval_images, calibration_images=1000
        )
        return {
            "val_largest": evaluator.evaluate(self.largest).accuracy,
            "val_smallest": evaluator.evaluate(self.smallest).accuracy,
        }

    def _state(
        self, next_step: int, reorganized: bool, history: list[dict[str, Any]], elapsed: float
    ) -> dict[str, Any]:
        return {
            "next_step": next_step,
            "reorganized": reorganized,
            "history": history,
            "elapsed_s": elapsed,
            "config": asdict(self.config),
            "space": self.supernet.space.to_dict(),
            "dataset": self.splits.train.name,
            "train_images": len(self.images),
        }

    def run(self, *, resume: bool = True, stop_after_steps: int | None = None) -> dict[str, Any]:
        """Train to the end (or for ``stop_after_steps`` more steps); returns the summary.

        With ``resume`` an existing checkpoint in ``out_dir`` is continued; its configuration
        must equal this one. The final supernet is written to ``out_dir/supernet.safetensors``.
        """
        from tqdm import tqdm

        self.out_dir.mkdir(parents=True, exist_ok=True)
        step, reorganized, history, elapsed = 0, False, [], 0.0
        if resume and self.checkpoint_path.exists():
            saved = load_checkpoint(self.checkpoint_path, self.supernet, self.optimizer)
            expected = self._state(0, False, [], 0.0)
            for key in ("config", "space", "dataset", "train_images"):
                if saved.get(key) != expected[key]:
                    raise CheckpointError(
                        f"{self.checkpoint_path} was made with a different {key}; "
                        "use another output directory or the same options"
                    )
            step, reorganized, history, elapsed = (
                saved["next_step"],
                saved["reorganized"],
                saved["history"],
                saved["elapsed_s"],
            )
        end = self.total_steps if stop_after_steps is None else min(self.total_steps, step + stop_after_steps)
        started = time.perf_counter() - elapsed
        bar = tqdm(total=self.total_steps, initial=step, disable=not self.progress, unit="step", dynamic_ncols=True)
        try:
            while step < end:
                if step == self.sandwich_start and not reorganized:
                    if self.config.reorganize_channels:
                        reorganize_channels(self.supernet, self.optimizer)
                    reorganized = True
                loss = self._train_step(step)
                step += 1
                bar.update(1)
                bar.set_postfix(epoch=step // self.steps_per_epoch, loss=f"{loss:.3f}")
                epoch_done = step % self.steps_per_epoch == 0
                if epoch_done:
                    record = {
                        "epoch": step // self.steps_per_epoch,
                        "step": step,
                        **self.evaluate(),
                        "elapsed_s": round(time.perf_counter() - started, 1),
                    }
                    history.append(record)
                    bar.write(json.dumps(record))
                if epoch_done or step % self.config.checkpoint_every_steps == 0 or step == end:
                    save_checkpoint(
                        self.checkpoint_path,
                        self.supernet,
                        self.optimizer,
                        self._state(step, reorganized, history, time.perf_counter() - started),
                    )
        finally:
            bar.close()
        summary = {
            "finished": step >= self.total_steps,
            "steps": step,
            "total_steps": self.total_steps,
            "history": history,
            "config": asdict(self.config),
            "elapsed_s": round(time.perf_counter() - started, 1),
        }
        if step >= self.total_steps:
            save_supernet(
                self.out_dir,
                self.supernet,
                mean=self.splits.mean,
                std=self.splits.std,
                dataset=self.splits.train.name.split("/")[0],
                info={"train_config": asdict(self.config), "history": history},
            )
            write_json_atomic(self.out_dir / "train_summary.json", summary)
        return summary
