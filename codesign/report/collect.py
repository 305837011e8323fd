"""What a report is made of: a search's front, the exports made from it, the profile it searched on.

Everything is read from files the other commands wrote (``front.json``, ``manifest.json``, the
profile); nothing is recomputed but the latency model's per-kernel breakdown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codesign.errors import CodesignError
from codesign.fileio import read_json_file
from codesign.space import Genome


class ReportError(CodesignError):
    """An input of the report is missing or not what the command that writes it writes."""


@dataclass(frozen=True)
class ReportInputs:
    """The loaded inputs: the search summary and front, export manifests, the profile and its model."""

    search_dir: Path
    search: dict[str, Any]
    exports: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    profile: Any = None
    latency_model: Any = None

    @property
    def front(self) -> list[dict[str, Any]]:
        """The front's points, fastest first (``front.json``'s ``front``)."""
        return list(self.search["front"])

    @property
    def recommended(self) -> dict[str, Any]:
        """The recommended point of the front."""
        return self.front[int(self.search["recommended"])]


def _read_json(path: Path, what: str) -> dict[str, Any]:
    data = read_json_file(
        path, error=ReportError, missing=what + " not found: {path}", corrupt="{path}: not valid JSON ({exc})"
    )
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a JSON object")
    return data


def load_search(search_dir: Path) -> dict[str, Any]:
    """``front.json`` of a ``codesign search`` output directory, checked for what the report reads."""
    data = _read_json(search_dir / "front.json", "search result (front.json of `codesign search -o DIR`)")
    front = data.get("front")
    if not isinstance(front, list) or not front:
        raise ReportError(f"{search_dir / 'front.json'}: no front (was it written by `codesign search`?)")
    recommended = data.get("recommended")
    if not isinstance(recommended, int) or not 0 <= recommended < len(front):
        raise ReportError(f"{search_dir / 'front.json'}: 'recommended' is not an index into the front")
    for key in ("budget", "target"):
        if key not in data:
            raise ReportError(f"{search_dir / 'front.json'}: missing {key!r}")
    return data


def load_export(export_dir: Path) -> dict[str, Any]:
    """``manifest.json`` of a ``codesign export -o DIR`` artifact."""
    data = _read_json(export_dir / "manifest.json", "export manifest (manifest.json of `codesign export -o DIR`)")
    for key in ("genome", "metrics", "genome_short"):
        if key not in data:
            raise ReportError(f"{export_dir / 'manifest.json'}: missing {key!r}")
    return data


def collect_inputs(
    search_dir: str | Path,
    *,
    export_dirs: list[str | Path] | None = None,
    profile_path: str | Path | None = None,
) -> ReportInputs:
    """Load a search directory, any export directories, and the profile the search used (or ``profile_path``).

    A profile that is no longer where the search found it is not an error: the report then leaves
    out the per-kernel breakdown and the latency model's validation, and says so.
    """
    from codesign.latency.model import LatencyModel
    from codesign.profile.profile_file import load_profile

    directory = Path(search_dir)
    search = load_search(directory)
    exports = [(Path(d), load_export(Path(d))) for d in export_dirs or []]
    path = Path(profile_path) if profile_path else Path(str(search.get("profile", "")))
    profile = model = None
    if profile_path or path.is_file():
        profile = load_profile(path, allow_mismatch=True).profile
        model = LatencyModel.from_profile(profile)
        try:
            Genome.from_dict(search["front"][0]["genome"]).validate(model.space)
        except CodesignError as exc:
            raise ReportError(f"the profile {path} does not describe the search's space: {exc}") from None
    return ReportInputs(directory, search, exports, profile, model)
