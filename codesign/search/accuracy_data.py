"""Evaluated subnets: the accuracy predictor's training data, measured with inherited weights.

Subnets are evaluated (BN recalibrated, validation split) by the C++ evaluator when it is built,
else by torch; each result is appended to a journal as it finishes, so a killed run resumes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from codesign.errors import CodesignError
from codesign.profile.journal import Journal
from codesign.space import Genome, SearchSpace

EvaluatorKind = Literal["auto", "cpp", "torch"]


def make_evaluator(
    supernet: Any, splits: Any, *, kind: EvaluatorKind = "auto", threads: int = 1, split: str = "val", **options: Any
) -> Any:
    """The C++ evaluator when built (``auto``), or the one named; same interface either way."""
    from codesign.evaluation import CppSubnetEvaluator, TorchSubnetEvaluator

    if resolve_evaluator_kind(kind) == "cpp":
        return CppSubnetEvaluator(supernet, splits, split=split, num_threads=max(1, threads), **options)
    return TorchSubnetEvaluator(supernet, splits, split=split, **options)


def resolve_evaluator_kind(kind: EvaluatorKind) -> Literal["cpp", "torch"]:
    """The evaluator ``kind`` stands for here, checked before any work: ``auto`` is ``cpp`` when it is built.

    A C++ evaluator that was asked for but is not built, or a bad ``CODESIGN_EVAL_ISA``, is a
    :class:`CodesignError`.
    """
    from codesign.evaluation.cpp_evaluator import check_evaluator_isa, have_cpp_evaluator

    if kind not in ("auto", "cpp", "torch"):
        raise CodesignError(f"unknown evaluator {kind!r}; use auto, cpp or torch")
    if kind == "torch" or (kind == "auto" and not have_cpp_evaluator()):
        return "torch"
    if not have_cpp_evaluator():
        raise CodesignError("the C++ evaluator is not built: reinstall codesign (pip install .)")
    check_evaluator_isa()
    return "cpp"


def sample_genomes(space: SearchSpace, count: int, seed: int) -> list[Genome]:
    """The largest and smallest subnets, then distinct uniform random ones (canonical), ``count`` in all."""
    rng = np.random.default_rng(seed)
    out = [Genome.largest(space), Genome.smallest(space)]
    seen = {g.canonical(space) for g in out}
    while len(out) < count:
        g = Genome.random(space, rng).canonical(space)
        if g not in seen:
            seen.add(g)
            out.append(g)
    return out[:count]


def evaluate_subnets(
    evaluator: Any,
    genomes: list[Genome],
    journal_path: str | Path,
    *,
    batch: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Accuracy of every genome, resuming from (and appending to) the journal at ``journal_path``."""
    journal = Journal(journal_path)
    done = {r["key"]: r for r in journal if r.get("type") == "subnet"}
    keys = [hashlib.sha1(g.to_json().encode()).hexdigest()[:16] for g in genomes]
    todo = [i for i, k in enumerate(keys) if k not in done]
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        accuracies = evaluator.evaluate_many([genomes[i] for i in chunk])
        for i, acc in zip(chunk, accuracies, strict=True):
            record = {"type": "subnet", "key": keys[i], "genome": genomes[i].to_dict(), "accuracy": float(acc)}
            journal.append(record)
            done[keys[i]] = record
        if progress is not None:
            progress(len(genomes) - len(todo) + start + len(chunk), len(genomes))
    return [done[k] for k in keys]


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (ties a predictor to the supernet weights it was trained on)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
