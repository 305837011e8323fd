"""Named search spaces shipped as package data (``codesign/space/descriptions/*.json``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from codesign.errors import SpaceError
from codesign.space.space import SearchSpace

DEFAULT_SPACE = "fmnist_mbv3"


def available_spaces() -> list[str]:
    """Names of the shipped space descriptions."""
    root = resources.files("codesign.space") / "descriptions"
    return sorted(p.name[: -len(".json")] for p in root.iterdir() if p.name.endswith(".json"))


def get_space(name_or_path: str | Path = DEFAULT_SPACE) -> SearchSpace:
    """A shipped space by name, or a space description file by path."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".json" or candidate.exists():
        return SearchSpace.from_json_file(candidate)
    name = str(name_or_path)
    if name not in available_spaces():
        raise SpaceError(
            f"unknown search space {name!r}; shipped spaces: {', '.join(available_spaces())} "
            "(or pass the path of a .json description)"
        )
    text = (resources.files("codesign.space") / "descriptions" / f"{name}.json").read_text(encoding="utf-8")
    import json

    return SearchSpace.from_dict(json.loads(text))
