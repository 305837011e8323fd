"""The measured profiles shipped with codesign (``hw_profiles/``) and picking one for a target."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from codesign.profile.profile_file import ProfileError, target_mismatch

PORTABLE_FALLBACK = "llvm-znver3-2c.json"  # AVX2 code: runs on any x86-64 CPU since 2015 (AVX-512 ones do not)


def shipped_profiles_dir() -> Path:
    """``codesign/hw_profiles`` in an installed package, else the source tree's ``hw_profiles/``."""
    installed = Path(str(resources.files("codesign"))) / "hw_profiles"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "hw_profiles"


def shipped_profiles() -> list[Path]:
    """Every shipped profile file."""
    folder = shipped_profiles_dir()
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def _target_of(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    target = data.get("target") if isinstance(data, dict) else None
    return target if isinstance(target, dict) else None


def find_shipped_profile(target: dict[str, Any], *, allow_mismatch: bool = False) -> Path:
    """The shipped profile measured for ``target``; a clear error naming how to measure one otherwise."""
    same_kind = []
    for path in shipped_profiles():
        recorded = _target_of(path)
        if recorded is None:
            continue
        if target_mismatch(recorded, target) is None:
            return path
        if recorded.get("kind") == target.get("kind"):
            same_kind.append(path)
    if allow_mismatch and same_kind:
        # the portable profile first: kernels built for another CPU may use instructions this one lacks
        return min(same_kind, key=lambda path: (path.name != PORTABLE_FALLBACK, path.name))
    shipped = ", ".join(p.name for p in shipped_profiles()) or "none"
    if target.get("kind") == "cuda":
        which = f"this GPU ({target['arch']})" if target.get("arch") else "a cuda GPU"
        raise ProfileError(
            f"no shipped profile was measured for {which} (shipped: {shipped}); measure yours: "
            "`codesign profile --target cuda --build-only -o gpu_bundle` here, `python3 gpu_bundle/measure.py` on the "
            "GPU machine, `codesign profile --merge gpu_bundle -o my_gpu.json`, then pass --profile my_gpu.json"
        )
    raise ProfileError(
        f"no shipped profile was measured for target {json.dumps(target, sort_keys=True)} (shipped: {shipped}); "
        f"measure this device with `codesign profile --target {target.get('kind')} -o my_device.json` and pass "
        "--profile my_device.json (or --allow-mismatch to use the nearest shipped one)"
    )


def resolve_profile(target: dict[str, Any], path: str | Path | None, *, allow_mismatch: bool = False) -> Any:
    """The profile at ``path`` (default: the shipped one for ``target``), validated for ``target``.

    Mismatches let through by ``allow_mismatch`` are printed as warnings. Returns a
    :class:`~codesign.profile.profile_file.LoadedProfile`.
    """
    from codesign.profile.profile_file import load_profile

    chosen = Path(path) if path else find_shipped_profile(target, allow_mismatch=allow_mismatch)
    loaded = load_profile(chosen, target=target, allow_mismatch=allow_mismatch)
    for warning in loaded.warnings:
        print(f"warning: profile {chosen.name}: {warning}")
    return loaded
