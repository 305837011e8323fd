"""The declarative search-space description shared by training, profiling, search and export.

A space is data (JSON with a schema version). It describes a MobileNetV2/V3-style network:
a fixed stem, a list of stages of elastic inverted-residual blocks, and a fixed head. Every
elastic knob is declared next to the part of the network it controls.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from codesign.errors import SpaceError
from codesign.fileio import read_json_file

SPACE_SCHEMA_VERSION = 1
ACTIVATIONS = ("relu", "relu6", "hswish")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise SpaceError(message)


def _int_choices(values: Any, what: str, *, minimum: int = 1) -> tuple[int, ...]:
    _require(isinstance(values, (list, tuple)) and len(values) > 0, f"{what} must be a non-empty list")
    _require(
        all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in values),
        f"{what} must hold integers >= {minimum}, got {list(values)}",
    )
    _require(len(set(values)) == len(values), f"{what} has duplicates: {list(values)}")
    return tuple(sorted(values))


def _ratio_choices(values: Any, what: str) -> tuple[float, ...]:
    _require(isinstance(values, (list, tuple)) and len(values) > 0, f"{what} must be a non-empty list")
    _require(
        all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v < 1.0 for v in values),
        f"{what} must hold ratios in [0, 1), got {list(values)}",
    )
    _require(len(set(values)) == len(values), f"{what} has duplicates: {list(values)}")
    return tuple(sorted(float(v) for v in values))


@dataclass(frozen=True)
class StemSpec:
    """The fixed first convolution (conv + BN + activation)."""

    out_channels: int
    kernel_size: int = 3
    stride: int = 1
    activation: str = "relu"


@dataclass(frozen=True)
class StageSpec:
    """One stage of elastic inverted-residual blocks sharing an output width.

    The first block of a stage applies ``stride``; the others keep the resolution and add a
    residual, so every block of a stage shares the output width: one dependency group, pruned
    as one by the stage's pruning ratio.
    """

    out_channels: int
    stride: int
    depths: tuple[int, ...]
    kernel_sizes: tuple[int, ...]
    expand_ratios: tuple[int, ...]
    block_prune_ratios: tuple[float, ...]
    width_prune_ratios: tuple[float, ...]
    activation: str = "relu"

    @property
    def max_depth(self) -> int:
        """The number of block slots of this stage."""
        return max(self.depths)


@dataclass(frozen=True)
class HeadSpec:
    """The fixed 1x1 conv, global pooling, dropout and classifier."""

    out_channels: int
    activation: str = "relu"
    dropout: float = 0.0


@dataclass(frozen=True)
class SearchSpace:
    """A complete, validated space description. Build one with :meth:`from_dict` or :func:`load_space`."""

    name: str
    in_channels: int
    num_classes: int
    resolutions: tuple[int, ...]
    channel_divisor: int
    stem: StemSpec
    stages: tuple[StageSpec, ...]
    head: HeadSpec
    description: str = ""

    @property
    def num_stages(self) -> int:
        """Number of stages."""
        return len(self.stages)

    @property
    def max_blocks(self) -> int:
        """Total number of block slots (sum of every stage's largest depth)."""
        return sum(s.max_depth for s in self.stages)

    def block_slots(self) -> list[tuple[int, int]]:
        """``(stage_index, index_in_stage)`` for every block slot, in network order."""
        return [(si, bi) for si, s in enumerate(self.stages) for bi in range(s.max_depth)]

    def stage_input_channels(self, stage_index: int) -> int:
        """Unpruned input width of a stage's first block."""
        return self.stem.out_channels if stage_index == 0 else self.stages[stage_index - 1].out_channels

    def block_full_input_channels(self, stage_index: int, block_index: int) -> int:
        """Unpruned input width of a block; expanded widths are relative to it."""
        if block_index == 0:
            return self.stage_input_channels(stage_index)
        return self.stages[stage_index].out_channels

    def max_mid_channels(self, stage_index: int, block_index: int) -> int:
        """Largest expanded width a block slot can have."""
        stage = self.stages[stage_index]
        return self.block_full_input_channels(stage_index, block_index) * max(stage.expand_ratios)

    def kept_channels(self, full: int, prune_ratio: float) -> int:
        """Channels left after pruning ``full`` by ``prune_ratio``, rounded to the channel divisor."""
        d = self.channel_divisor
        kept = int(math.floor(full * (1.0 - prune_ratio) / d + 0.5)) * d
        return max(d, min(full, kept))

    def resolution_after(self, resolution: int, stride: int) -> int:
        """Spatial size after a 'same'-padded convolution with ``stride``."""
        return (resolution + stride - 1) // stride

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready description, including the schema version."""
        out: dict[str, Any] = {"schema_version": SPACE_SCHEMA_VERSION}
        out.update(asdict(self))
        return json.loads(json.dumps(out))

    @classmethod
    def from_dict(cls, data: Any) -> SearchSpace:
        """Validate a description (as loaded from JSON) and build the space; raises :class:`SpaceError`."""
        _require(isinstance(data, dict), "a space description must be a JSON object")
        version = data.get("schema_version")
        _require(isinstance(version, int), "space description has no integer 'schema_version'")
        _require(
            version <= SPACE_SCHEMA_VERSION,
            f"space schema_version {version} is newer than this codesign supports ({SPACE_SCHEMA_VERSION})",
        )
        try:
            stem_d = dict(data["stem"])
            head_d = dict(data["head"])
            stages_d = list(data["stages"])
            name = str(data["name"])
            in_channels = int(data["in_channels"])
            num_classes = int(data["num_classes"])
        except (KeyError, TypeError, ValueError) as exc:
            raise SpaceError(f"space description is missing or has a bad field: {exc}") from None
        _require(in_channels >= 1 and num_classes >= 2, "in_channels must be >= 1 and num_classes >= 2")
        resolutions = _int_choices(data.get("resolutions"), "resolutions", minimum=4)
        divisor = int(data.get("channel_divisor", 1))
        _require(divisor >= 1, "channel_divisor must be >= 1")
        try:
            stem = StemSpec(**stem_d)
            head = HeadSpec(**head_d)
        except TypeError as exc:
            raise SpaceError(f"bad stem/head description: {exc}") from None
        _require(
            stem.activation in ACTIVATIONS and head.activation in ACTIVATIONS,
            f"activations must be one of {ACTIVATIONS}",
        )
        _require(stem.kernel_size % 2 == 1 and stem.stride >= 1 and stem.out_channels >= 1, "bad stem geometry")
        _require(0.0 <= head.dropout < 1.0 and head.out_channels >= 1, "bad head description")
        _require(len(stages_d) >= 1, "a space needs at least one stage")
        stages = []
        for i, sd in enumerate(stages_d):
            where = f"stage {i}"
            _require(isinstance(sd, dict), f"{where} must be an object")
            unknown = set(sd) - {
                "out_channels",
                "stride",
                "depths",
                "kernel_sizes",
                "expand_ratios",
                "block_prune_ratios",
                "width_prune_ratios",
                "activation",
            }
            _require(not unknown, f"{where} has unknown fields {sorted(unknown)}")
            try:
                stage = StageSpec(
                    out_channels=int(sd["out_channels"]),
                    stride=int(sd["stride"]),
                    depths=_int_choices(sd["depths"], f"{where} depths"),
                    kernel_sizes=_int_choices(sd["kernel_sizes"], f"{where} kernel_sizes"),
                    expand_ratios=_int_choices(sd["expand_ratios"], f"{where} expand_ratios"),
                    block_prune_ratios=_ratio_choices(
                        sd.get("block_prune_ratios", [0.0]), f"{where} block_prune_ratios"
                    ),
                    width_prune_ratios=_ratio_choices(
                        sd.get("width_prune_ratios", [0.0]), f"{where} width_prune_ratios"
                    ),
                    activation=str(sd.get("activation", "relu")),
                )
            except KeyError as exc:
                raise SpaceError(f"{where} is missing field {exc}") from None
            _require(all(k % 2 == 1 for k in stage.kernel_sizes), f"{where} kernel sizes must be odd")
            _require(stage.stride in (1, 2), f"{where} stride must be 1 or 2")
            _require(stage.activation in ACTIVATIONS, f"{where} activation must be one of {ACTIVATIONS}")
            _require(stage.out_channels >= 1, f"{where} out_channels must be >= 1")
            stages.append(stage)
        return cls(
            name=name,
            in_channels=in_channels,
            num_classes=num_classes,
            resolutions=resolutions,
            channel_divisor=divisor,
            stem=stem,
            stages=tuple(stages),
            head=head,
            description=str(data.get("description", "")),
        )

    @classmethod
    def from_json_file(cls, path: str | Path) -> SearchSpace:
        """Load and validate a space description file."""
        data = read_json_file(
            path,
            error=SpaceError,
            missing="space description not found: {path}",
            corrupt="space description {path} is not valid JSON: {exc}",
        )
        return cls.from_dict(data)
