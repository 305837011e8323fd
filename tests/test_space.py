import json

import pytest

from codesign.errors import SpaceError
from codesign.space import SPACE_SCHEMA_VERSION, SearchSpace, available_spaces, get_space


def test_shipped_spaces_load_and_round_trip():
    assert {"fmnist_mbv3", "tiny"} <= set(available_spaces())
    for name in available_spaces():
        space = get_space(name)
        assert SearchSpace.from_dict(space.to_dict()) == space
        assert space.to_dict()["schema_version"] == SPACE_SCHEMA_VERSION


def test_space_from_file(tmp_path, tiny_space):
    p = tmp_path / "mine.json"
    p.write_text(json.dumps(tiny_space.to_dict()))
    assert get_space(p) == tiny_space


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(schema_version=SPACE_SCHEMA_VERSION + 1), "newer"),
        (lambda d: d["stages"][0].update(kernel_sizes=[3, 4]), "odd"),
        (lambda d: d["stages"][0].update(stride=3), "stride"),
        (lambda d: d["stages"][0].update(depths=[]), "non-empty"),
        (lambda d: d["stages"][0].update(block_prune_ratios=[0.0, 1.0]), "ratios"),
        (lambda d: d["stages"][0].update(bogus=1), "unknown"),
        (lambda d: d.pop("stem"), "missing"),
        (lambda d: d["stem"].update(activation="gelu"), "activation"),
    ],
)
def test_bad_space_descriptions_are_rejected(tiny_space, mutate, message):
    d = tiny_space.to_dict()
    mutate(d)
    with pytest.raises(SpaceError, match=message):
        SearchSpace.from_dict(d)


def test_unknown_space_name_lists_choices():
    with pytest.raises(SpaceError, match="fmnist_mbv3"):
        get_space("no_such_space")


def test_corrupt_space_file(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(SpaceError, match="not valid JSON"):
        get_space(p)


def test_kept_channels_respects_divisor(default_space):
    assert default_space.kept_channels(24, 0.0) == 24
    assert default_space.kept_channels(24, 0.5) == 12
    assert default_space.kept_channels(24, 0.25) == 20  # 18 rounded to the divisor 4
    assert default_space.kept_channels(6, 0.9) == 4  # never below one divisor
