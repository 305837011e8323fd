"""Hardware profile files: measured facts about one device, as validated, versioned JSON.

A profile records what was measured (kernels under schedule candidates, whole models), on what
(device and software provenance, the exact TVM target), how (the command line), and what was
fitted from it. Loading refuses files that cannot be trusted for the requested target: corrupt
or truncated JSON, a schema from the future, another TVM release line, or another device;
``allow_mismatch=True`` turns the last two into warnings returned with the profile.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from codesign import __version__
from codesign.errors import CodesignError
from codesign.fileio import read_json_file, write_json_atomic

PROFILE_FORMAT = "codesign-hw-profile"
PROFILE_SCHEMA_VERSION = 1


class ProfileError(CodesignError):
    """A profile file is unreadable, from the future, or made for something else."""


@dataclass(frozen=True)
class DeviceInfo:
    """What was measured: ``kind`` is ``cpu`` or ``gpu``; clocks are as read at profiling time (0 if unreadable)."""

    kind: str
    name: str
    cores: int
    arch: str
    max_clock_mhz: float = 0.0
    host: str = ""


@dataclass(frozen=True)
class SoftwareInfo:
    """The software stack that compiled and ran the measurements."""

    tvm: str
    tvm_ffi: str = ""
    llvm: str = ""
    cuda: str = ""
    codesign: str = __version__
    python: str = field(default_factory=lambda: platform.python_version())


@dataclass(frozen=True)
class HardwareProfile:
    """The content of one profile file (see the module docstring)."""

    target: dict[str, Any]
    device: DeviceInfo
    software: SoftwareInfo
    space: dict[str, Any]
    command: list[str]
    created: str
    measurements: list[dict[str, Any]] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)
    tuning_records: dict[str, Any] = field(default_factory=dict)
    predictor: dict[str, Any] | None = None
    validation: dict[str, Any] = field(default_factory=dict)
    transposes: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form with format and schema version."""
        return {"format": PROFILE_FORMAT, "schema_version": PROFILE_SCHEMA_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "profile") -> HardwareProfile:
        """Validate and build; raises :class:`ProfileError` naming what is wrong."""
        if not isinstance(data, dict) or data.get("format") != PROFILE_FORMAT:
            raise ProfileError(f"{source}: not a codesign hardware profile")
        version = data.get("schema_version")
        if not isinstance(version, int):
            raise ProfileError(f"{source}: no integer schema_version")
        if version > PROFILE_SCHEMA_VERSION:
            raise ProfileError(
                f"{source}: profile schema {version} is newer than this codesign supports "
                f"({PROFILE_SCHEMA_VERSION}); upgrade codesign"
            )
        try:
            return cls(
                target=dict(data["target"]),
                device=DeviceInfo(**data["device"]),
                software=SoftwareInfo(**data["software"]),
                space=dict(data["space"]),
                command=[str(c) for c in data["command"]],
                created=str(data["created"]),
                measurements=list(data.get("measurements", [])),
                models=list(data.get("models", [])),
                tuning_records=dict(data.get("tuning_records", {})),
                predictor=data.get("predictor"),
                validation=dict(data.get("validation", {})),
                transposes=list(data.get("transposes", [])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileError(f"{source}: missing or malformed field ({exc})") from None


def save_profile(path: str | Path, profile: HardwareProfile) -> Path:
    """Write ``profile`` atomically (compact JSON: profiles hold thousands of measurements)."""
    write_json_atomic(path, profile.to_dict(), compact=True)
    return Path(path)


def tvm_release_line(version: str) -> str:
    """``0.27.0.post1`` -> ``0.27``: schedules and kernels are comparable within one release line."""
    parts = version.split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 else version


def target_mismatch(recorded: dict[str, Any], requested: dict[str, Any]) -> str | None:
    """Why a profile measured for ``recorded`` does not describe ``requested`` (None when it does)."""
    if recorded.get("kind") != requested.get("kind"):
        return f"it was measured for target kind {recorded.get('kind')!r}, not {requested.get('kind')!r}"
    for key in ("mcpu", "arch", "num-cores"):
        if key in requested and key in recorded and recorded[key] != requested[key]:
            return f"it was measured with {key}={recorded[key]!r}, the requested target has {requested[key]!r}"
    return None


@dataclass(frozen=True)
class LoadedProfile:
    """A validated profile and the mismatches that ``allow_mismatch`` let through."""

    profile: HardwareProfile
    path: Path
    warnings: tuple[str, ...]


def load_profile(
    path: str | Path,
    *,
    target: dict[str, Any] | None = None,
    tvm_version: str | None = None,
    allow_mismatch: bool = False,
) -> LoadedProfile:
    """Read and validate a profile for ``target`` (and the running ``tvm_version``, when given)."""
    p = Path(path)
    data = read_json_file(
        p,
        error=ProfileError,
        missing="profile not found: {path} (measure one with `codesign profile`)",
        corrupt="{path}: corrupt or truncated profile ({exc}); re-run `codesign profile`",
    )
    profile = HardwareProfile.from_dict(data, source=str(p))
    problems = []
    if tvm_version is not None and tvm_release_line(profile.software.tvm) != tvm_release_line(tvm_version):
        problems.append(f"it was made with TVM {profile.software.tvm}, this is TVM {tvm_version}")
    if target is not None:
        reason = target_mismatch(profile.target, target)
        if reason:
            problems.append(reason)
    if problems and not allow_mismatch:
        raise ProfileError(f"{p} does not fit: {'; '.join(problems)} (pass --allow-mismatch to use it anyway)")
    return LoadedProfile(profile, p, tuple(problems))


def describe_host_cpu(mcpu: str = "") -> DeviceInfo:
    """This machine's CPU as read from /proc and sysfs (Linux; other systems give what platform knows)."""
    name, max_mhz = platform.processor() or platform.machine(), 0.0
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    freq = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if freq.is_file():
        try:
            max_mhz = int(freq.read_text().strip()) / 1000.0
        except ValueError:
            pass
    return DeviceInfo(
        kind="cpu",
        name=name,
        cores=os.cpu_count() or 1,
        arch=mcpu or platform.machine(),
        max_clock_mhz=max_mhz,
        host=platform.node(),
    )


def now_utc() -> str:
    """ISO-8601 UTC timestamp."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def current_command() -> list[str]:
    """The command line of this process (recorded as provenance)."""
    program = Path(sys.argv[0]).name
    return ["codesign" if program == "__main__.py" else program, *sys.argv[1:]]
