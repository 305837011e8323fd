"""Parsing a genome given on the command line or in a file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from codesign.errors import GenomeError
from codesign.space.genome import Genome
from codesign.space.space import SearchSpace


def parse_genome_spec(spec: str, space: SearchSpace) -> Genome:
    """Parse ``largest``, ``smallest``, ``random:SEED``, the short form ``r24 | w0 k7e6p25 ... | ...``
    (as search prints it), inline JSON or a JSON file (genome or ``{"genome": ...}``)."""
    text = spec.strip()
    if text == "largest":
        return Genome.largest(space)
    if text == "smallest":
        return Genome.smallest(space)
    if text.startswith("random:"):
        try:
            seed = int(text.split(":", 1)[1])
        except ValueError:
            raise GenomeError(f"bad genome spec {spec!r}: use random:<integer seed>") from None
        return Genome.random(space, np.random.default_rng(seed))
    if text.startswith("r") and "|" in text:
        return Genome.from_short(space, text)
    if text.startswith("{"):
        data = _loads(text, "inline genome")
    else:
        path = Path(text)
        if not path.is_file():
            raise GenomeError(
                f"genome {spec!r} is neither largest/smallest/random:SEED, a short form"
                " (r24 | w0 k3e4p0 | ...), inline JSON, nor an existing file"
            )
        data = _loads(path.read_text(encoding="utf-8"), str(path))
    if isinstance(data, dict) and "genome" in data and isinstance(data["genome"], dict):
        data = data["genome"]
    return Genome.from_dict(data).validate(space)


def _loads(text: str, what: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise GenomeError(f"{what} is not valid JSON: {exc}") from None
