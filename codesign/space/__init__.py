"""Search-space descriptions and genomes: the leaf every other part of codesign speaks."""

from codesign.space.genome import GENOME_SCHEMA_VERSION, Genome
from codesign.space.parse import parse_genome_spec
from codesign.space.registry import DEFAULT_SPACE, available_spaces, get_space
from codesign.space.space import SPACE_SCHEMA_VERSION, HeadSpec, SearchSpace, StageSpec, StemSpec

__all__ = [
    "DEFAULT_SPACE",
    "GENOME_SCHEMA_VERSION",
    "SPACE_SCHEMA_VERSION",
    "Genome",
    "HeadSpec",
    "SearchSpace",
    "StageSpec",
    "StemSpec",
    "available_spaces",
    "get_space",
    "parse_genome_spec",
]
