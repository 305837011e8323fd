"""Subnet evaluation in C++: the same results as :class:`TorchSubnetEvaluator`, several times faster.

:class:`CppSubnetEvaluator` packs the supernet's weights (its ``state_dict``) into the C++ object
``codesign._kernels.SubnetEvaluator`` once; every subnet is then sliced, BN-recalibrated and scored
in C++ (threads, no GIL). The weights are a snapshot: build a new evaluator after changing the
supernet. :class:`TorchSubnetEvaluator` stays the reference and the fallback. The kernels are built
for several instruction sets (portable baseline, AVX2+FMA, AVX-512 with 512-bit vectors) and the
fastest one this CPU runs is picked at run time; ``CODESIGN_EVAL_ISA=base|avx2|avx512`` caps it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from codesign.data import DataSplits, ImageDataset
from codesign.errors import CodesignError, GenomeError
from codesign.evaluation.accuracy import SubnetScore
from codesign.evaluation.preprocess import prepare_images
from codesign.space import Genome
from codesign.supernet.supernet import ElasticSupernet

try:
    from codesign import _kernels as _ext  # type: ignore[attr-defined]  # compiled extension, no stub
except ImportError:  # pragma: no cover - exercised only on an unbuilt checkout
    _ext = None

Plan = tuple[int, list[tuple[int, int, int, int]]]


NOT_BUILT_MESSAGE = "codesign._kernels was not compiled with the subnet evaluator: pip install . builds it"


class InvalidGenomeError(GenomeError, ValueError):
    """A genome that does not fit the evaluator's space (both a :class:`GenomeError` and a ``ValueError``)."""


def have_cpp_evaluator() -> bool:
    """Whether the compiled C++ subnet evaluator is importable."""
    return _ext is not None and hasattr(_ext, "SubnetEvaluator")


def evaluator_isas() -> list[str]:
    """Instruction sets the C++ evaluator's kernels run with on this CPU, slowest first (none without it)."""
    return list(_ext.evaluator_isas()) if have_cpp_evaluator() else []


def active_evaluator_isa() -> str | None:
    """The instruction set the C++ evaluator runs with: the fastest, or at most ``CODESIGN_EVAL_ISA``'s."""
    return str(_ext.evaluator_isa()) if have_cpp_evaluator() else None


def check_evaluator_isa() -> str | None:
    """:func:`active_evaluator_isa`, with a bad ``CODESIGN_EVAL_ISA`` reported as a one-line :class:`CodesignError`."""
    try:
        return active_evaluator_isa()
    except ValueError as exc:
        raise CodesignError(str(exc)) from None


@contextlib.contextmanager
def evaluator_isa(isa: str) -> Iterator[None]:
    """Run the C++ evaluator with ``isa`` (one of :func:`evaluator_isas`) inside the block, to compare paths."""
    if not have_cpp_evaluator():
        raise RuntimeError(NOT_BUILT_MESSAGE)
    previous = _ext.evaluator_isa()
    _ext.set_evaluator_isa(isa)
    try:
        yield
    finally:
        _ext.set_evaluator_isa(previous)


def supernet_config(supernet: ElasticSupernet) -> dict[str, Any]:
    """The structure description the C++ evaluator needs (widths, kernels, strides, activations)."""
    space = supernet.space
    eps = {float(m.eps) for m in supernet.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    if len(eps) != 1:
        raise ValueError(f"the C++ evaluator needs one BatchNorm eps for the whole supernet, got {sorted(eps)}")
    slots = []
    for si, bi in space.block_slots():
        stage = space.stages[si]
        slots.append(
            {
                "max_in": space.block_full_input_channels(si, bi),
                "max_mid": space.max_mid_channels(si, bi),
                "max_out": stage.out_channels,
                "max_kernel": max(stage.kernel_sizes),
                "stride": stage.stride if bi == 0 else 1,
                "activation": stage.activation,
                "residual": bi > 0,
            }
        )
    return {
        "in_channels": space.in_channels,
        "num_classes": space.num_classes,
        "bn_eps": eps.pop(),
        "stem": {
            "out_channels": space.stem.out_channels,
            "kernel_size": space.stem.kernel_size,
            "stride": space.stem.stride,
            "activation": space.stem.activation,
        },
        "slots": slots,
        "head": {
            "in_channels": space.stages[-1].out_channels,
            "out_channels": space.head.out_channels,
            "activation": space.head.activation,
        },
    }


def _as_images(images: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    return np.ascontiguousarray(images, dtype=np.float32)


class CppSubnetEvaluator:
    """Evaluate subnets of a supernet in C++: slice, recalibrate BN on training images, score a split.

    Same constructor options and results as :class:`TorchSubnetEvaluator`, plus ``num_threads``
    (threads of the C++ evaluator), ``recalibrate`` (False keeps the supernet's BN statistics) and
    ``share_prefixes``: subnets scored together at the same resolution compute their stem and
    identical leading blocks once (False computes every subnet from the images, for comparison),
    keeping at most ``share_memory_mb`` MiB of those activations (shallowest prefixes first; the
    rest is computed per subnet). Sharing is what makes a population run fast; it costs memory
    in proportion to the images scored (about 0.4 GiB for 64 subnets on 2,000 + 2,000 images).
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
        num_threads: int = 1,
        recalibrate: bool = True,
        share_prefixes: bool = True,
        share_memory_mb: float = 1024.0,
    ) -> None:
        if not have_cpp_evaluator():
            raise RuntimeError(NOT_BUILT_MESSAGE)
        check_evaluator_isa()
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        if calibration_batch_size < 1:
            raise ValueError(f"calibration_batch_size must be >= 1, got {calibration_batch_size}")
        if not share_memory_mb >= 0:
            raise ValueError(f"share_memory_mb must be >= 0, got {share_memory_mb}")
        self.supernet = supernet
        self.space = supernet.space
        self.splits = splits
        self.split = split
        self.calibration_images = calibration_images
        self.calibration_batch_size = calibration_batch_size
        self.num_threads = num_threads
        self.recalibrate = recalibrate
        self.share_prefixes = share_prefixes
        self.share_memory_mb = share_memory_mb
        target: ImageDataset = getattr(splits, split)
        self._target = target.head(max_images) if max_images else target
        self._calibration = splits.train.head(calibration_images)
        self._cache: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
        weights = {
            k: np.ascontiguousarray(v.detach().cpu().float().numpy())
            for k, v in supernet.state_dict().items()
            if not k.endswith("num_batches_tracked")
        }
        self._ext = _ext.SubnetEvaluator(supernet_config(supernet), weights)

    # ------------------------------------------------------------------ data
    def _prepared(self, which: str, resolution: int) -> tuple[np.ndarray, np.ndarray]:
        key = (which, resolution)
        if key not in self._cache:
            ds = self._calibration if which == "calibration" else self._target
            images, labels = prepare_images(ds, self.splits.mean, self.splits.std, resolution)
            if which == "calibration":
                bs = self.calibration_batch_size
                used = min(len(images), bs * max(1, self.calibration_images // bs))
                images = images[:used]
            self._cache[key] = (_as_images(images), labels.numpy().astype(np.int64))
        return self._cache[key]

    def _calibration_for(self, resolutions: set[int], recalibrate: bool) -> dict[int, np.ndarray] | None:
        if not recalibrate:
            return None
        return {r: self._prepared("calibration", r)[0] for r in resolutions}

    # ------------------------------------------------------------------ API
    def plan(self, genome: Genome) -> Plan:
        """The C++ description of ``genome``'s subnet; raises :class:`InvalidGenomeError` if it does not fit."""
        try:
            cfg = self.supernet.subnet_config(genome)
        except GenomeError as exc:
            raise InvalidGenomeError(str(exc)) from None
        except (TypeError, IndexError, AttributeError) as exc:
            raise InvalidGenomeError(f"malformed genome: {exc}") from None
        blocks = [(b["slot"], b["mid_channels"], b["out_channels"], b["kernel_size"]) for b in cfg["blocks"]]
        return int(genome.resolution), blocks

    def _run(self, genomes: list[Genome], return_logits: bool) -> tuple[np.ndarray, list[np.ndarray] | None]:
        plans = [self.plan(g) for g in genomes]
        resolutions = {p[0] for p in plans}
        images = {r: self._prepared("target", r)[0] for r in resolutions}
        labels = self._prepared("target", next(iter(resolutions)))[1]
        counts, logits = self._ext.run(
            plans,
            images,
            labels=labels,
            calibration=self._calibration_for(resolutions, self.recalibrate),
            calibration_batch_size=self.calibration_batch_size,
            num_threads=self.num_threads,
            return_logits=return_logits,
            share_prefixes=self.share_prefixes,
            share_memory_mb=self.share_memory_mb,
        )
        return np.asarray(counts, dtype=np.int64), logits

    def correct_counts(self, genomes: list[Genome]) -> np.ndarray:
        """Top-1 hits of every genome on the evaluator's split (one C++ call, subnets in parallel)."""
        if not genomes:
            return np.zeros(0, dtype=np.int64)
        return self._run(list(genomes), False)[0]

    def _accuracy(self, correct: int) -> float:
        # The same float32 mean as accuracy_of, so both evaluators report identical numbers.
        return float(np.float32(correct) / np.float32(len(self._target)))

    def evaluate(self, genome: Genome) -> SubnetScore:
        """Accuracy of one subnet on the evaluator's split."""
        correct = int(self.correct_counts([genome])[0])
        return SubnetScore(genome, self._accuracy(correct), self.split, len(self._target))

    @property
    def image_count(self) -> int:
        """How many images each accuracy is measured on (the size of the scored split)."""
        return len(self._target)

    def evaluate_many(
        self, genomes: list[Genome], *, return_logits: bool = False
    ) -> np.ndarray | tuple[np.ndarray, list[np.ndarray]]:
        """Accuracies of a population, in order; with ``return_logits`` also each subnet's ``(N, classes)`` logits."""
        if not genomes:
            empty = np.zeros(0, dtype=np.float64)
            return (empty, []) if return_logits else empty
        counts, logits = self._run(list(genomes), return_logits)
        accuracies = np.asarray([self._accuracy(int(c)) for c in counts], dtype=np.float64)
        if not return_logits:
            return accuracies
        assert logits is not None  # the extension returns logits whenever return_logits is set
        return accuracies, list(logits)

    def prepare(self, genome: Genome, *, recalibrate: bool | None = None) -> Any:
        """``genome``'s subnet sliced, BN-recalibrated (unless ``recalibrate`` is False) and folded, ready for
        repeated inference: a ``codesign._kernels.PreparedSubnet`` whose ``logits(images, num_threads=1)`` takes
        prepared ``(N, C, r, r)`` float32 arrays and returns ``(N, classes)`` logits.
        """
        plan = self.plan(genome)
        recal = self.recalibrate if recalibrate is None else recalibrate
        calib = self._prepared("calibration", genome.resolution)[0] if recal else None
        return self._ext.prepare(plan, calib, self.calibration_batch_size)

    def logits(
        self, genome: Genome, images: torch.Tensor | np.ndarray, *, recalibrate: bool | None = None
    ) -> torch.Tensor:
        """Logits of ``genome``'s subnet for prepared images ``(N, C, r, r)`` at its resolution.

        BN is recalibrated on the evaluator's calibration images unless ``recalibrate`` (default:
        the evaluator's setting) is False. Raises ``ValueError`` on a bad genome or image shape.
        """
        plan = self.plan(genome)
        x = _as_images(images)
        if x.ndim != 4 or x.shape[1:] != (self.space.in_channels, genome.resolution, genome.resolution):
            raise ValueError(
                f"images must have shape (N, {self.space.in_channels}, {genome.resolution}, {genome.resolution}) "
                f"for this genome, got {tuple(x.shape)}"
            )
        recal = self.recalibrate if recalibrate is None else recalibrate
        _, out = self._ext.run(
            [plan],
            {genome.resolution: x},
            calibration=self._calibration_for({genome.resolution}, recal),
            calibration_batch_size=self.calibration_batch_size,
            num_threads=self.num_threads,
            return_logits=True,
        )
        return torch.from_numpy(out[0])
