import json

import pytest

from codesign.profile.profile_file import (
    PROFILE_SCHEMA_VERSION,
    HardwareProfile,
    ProfileError,
    SoftwareInfo,
    describe_host_cpu,
    load_profile,
    now_utc,
    save_profile,
)

TARGET = {"kind": "llvm", "mcpu": "znver3", "num-cores": 2}


def _profile(space) -> HardwareProfile:
    return HardwareProfile(
        target=TARGET,
        device=describe_host_cpu("znver3"),
        software=SoftwareInfo(tvm="0.27.0.post1"),
        space=space.to_dict(),
        command=["codesign", "profile"],
        created=now_utc(),
        measurements=[{"workload": "conv_i8_o24_r6_k1_s1_relu", "median_ms": 0.01}],
    )


def test_round_trip(tmp_path, tiny_space):
    profile = _profile(tiny_space)
    save_profile(tmp_path / "p.json", profile)
    loaded = load_profile(tmp_path / "p.json", target=TARGET, tvm_version="0.27.0.post1")
    assert loaded.profile == profile and loaded.warnings == ()
    assert profile.device.cores >= 1 and profile.device.name


def test_corrupt_truncated_and_future_profiles(tmp_path, tiny_space):
    path = tmp_path / "p.json"
    save_profile(path, _profile(tiny_space))
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(ProfileError, match="corrupt or truncated"):
        load_profile(path)
    data = json.loads(text)
    data["schema_version"] = PROFILE_SCHEMA_VERSION + 1
    path.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match="newer"):
        load_profile(path)
    data = json.loads(text)
    del data["device"]
    path.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match="malformed"):
        load_profile(path)
    with pytest.raises(ProfileError, match="not found"):
        load_profile(tmp_path / "none.json")


def test_other_device_or_tvm_is_refused_unless_allowed(tmp_path, tiny_space):
    path = save_profile(tmp_path / "p.json", _profile(tiny_space))
    with pytest.raises(ProfileError, match="mcpu"):
        load_profile(path, target={**TARGET, "mcpu": "skylake"})
    with pytest.raises(ProfileError, match="kind"):
        load_profile(path, target={"kind": "cuda", "arch": "sm_90"})
    with pytest.raises(ProfileError, match="TVM 0.26"):
        load_profile(path, tvm_version="0.26.0")
    loaded = load_profile(path, target={**TARGET, "mcpu": "skylake"}, tvm_version="0.26.0", allow_mismatch=True)
    assert len(loaded.warnings) == 2
    assert load_profile(path, tvm_version="0.27.1").warnings == ()  # same release line
