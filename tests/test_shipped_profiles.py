"""The measured profiles shipped in ``hw_profiles/``: each loads, validates and is the one picked for its target."""

from __future__ import annotations

import numpy as np
import pytest

from codesign.latency.model import LatencyModel
from codesign.profile.profile_file import ProfileError, load_profile
from codesign.profile.shipped import find_shipped_profile, shipped_profiles
from codesign.space import Genome

PROFILES = shipped_profiles()


def test_profiles_are_shipped():
    assert any(p.name.startswith("llvm-") for p in PROFILES)


@pytest.mark.parametrize("path", PROFILES, ids=[p.stem for p in PROFILES])
def test_a_shipped_profile_loads_and_is_picked_for_its_target(path):
    loaded = load_profile(path)
    target = loaded.profile.target
    assert not load_profile(path, target=target).warnings
    assert find_shipped_profile(target) == path  # no two shipped profiles claim one target
    ok = [m for m in loaded.profile.models if m.get("status") == "ok"]
    assert ok, "a shipped profile carries whole-model measurements"
    predicted = LatencyModel.from_profile(loaded.profile).predict([Genome.from_dict(m["genome"]) for m in ok])
    assert np.all(np.isfinite(predicted)) and np.all(predicted > 0)


def test_a_cpu_without_its_own_profile_falls_back_to_the_portable_one():
    """Kernels built for an AVX-512 CPU would crash an AVX2-only one: the fallback is the AVX2 profile."""
    from codesign.profile.shipped import PORTABLE_FALLBACK

    unknown = {"kind": "llvm", "mcpu": "x86-64", "num-cores": 1}
    assert find_shipped_profile(unknown, allow_mismatch=True).name == PORTABLE_FALLBACK
    with pytest.raises(ProfileError, match="no shipped profile was measured"):
        find_shipped_profile(unknown)
