"""Defaults that tie the search's inputs together: where the shipped accuracy predictor lives."""

from __future__ import annotations

from pathlib import Path

from codesign.supernet.weights import resolve_supernet_path

PREDICTOR_FILENAME = "accuracy_predictor.json"


def default_predictor_path(supernet: str | Path | None) -> Path:
    """The predictor stored next to the supernet weights (the shipped one for the shipped supernet)."""
    return resolve_supernet_path(supernet).with_name(PREDICTOR_FILENAME)
