from dataclasses import replace

import numpy as np
import pytest

from codesign.errors import GenomeError
from codesign.space import Genome, get_space, parse_genome_spec


@pytest.mark.parametrize("space_name", ["fmnist_mbv3", "tiny"])
def test_vector_and_json_round_trips(space_name):
    space = get_space(space_name)
    rng = np.random.default_rng(0)
    for _ in range(200):
        g = Genome.random(space, rng)
        assert Genome.from_vector(space, g.to_vector(space)) == g
        assert Genome.from_json(g.to_json()) == g
        assert Genome.from_dict(g.to_dict()).validate(space) == g
    with_schedules = replace(g, schedules=(1, 0, 3))
    assert Genome.from_vector(space, with_schedules.to_vector(space)) == with_schedules
    assert Genome.from_json(with_schedules.to_json()) == with_schedules


def test_random_sampling_is_uniform_and_seeded(default_space):
    a = [Genome.random(default_space, np.random.default_rng(5)) for _ in range(3)]
    b = [Genome.random(default_space, np.random.default_rng(5)) for _ in range(3)]
    assert a == b
    rng = np.random.default_rng(1)
    kernels = np.array([Genome.random(default_space, rng).kernel_sizes[0] for _ in range(3000)])
    counts = np.array([(kernels == k).sum() for k in default_space.stages[0].kernel_sizes])
    assert counts.min() > 850 and counts.max() < 1150  # three choices, ~1000 each


def test_largest_and_smallest(default_space):
    big, small = Genome.largest(default_space), Genome.smallest(default_space)
    big.validate(default_space)
    small.validate(default_space)
    assert big.resolution == max(default_space.resolutions)
    assert small.depths == tuple(min(s.depths) for s in default_space.stages)
    assert all(
        big.mid_channels(default_space, s) >= small.mid_channels(default_space, s)
        for s in range(default_space.max_blocks)
    )


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(resolution=31), "resolution"),
        (dict(depths=(9, 2, 2)), "depth"),
        (dict(kernel_sizes=(4,) * 12), "kernel"),
        (dict(expand_ratios=(5,) * 12), "expand"),
        (dict(block_prune=(0.3,) * 12), "pruning"),
        (dict(width_prune=(0.0,)), "width_prune"),
    ],
)
def test_invalid_genomes_name_the_bad_gene(default_space, change, message):
    with pytest.raises(GenomeError, match=message):
        replace(Genome.largest(default_space), **change).validate(default_space)


def test_bad_vectors_and_json(default_space):
    with pytest.raises(GenomeError, match="needs at least"):
        Genome.from_vector(default_space, [0, 1])
    v = Genome.largest(default_space).to_vector(default_space)
    v[0] = 99
    with pytest.raises(GenomeError, match="out of range"):
        Genome.from_vector(default_space, v)
    with pytest.raises(GenomeError, match="valid JSON"):
        Genome.from_json("{oops")
    with pytest.raises(GenomeError, match="missing"):
        Genome.from_dict({"resolution": 28})


def test_canonical_ignores_inactive_slots(default_space):
    rng = np.random.default_rng(3)
    g = replace(Genome.random(default_space, rng), depths=(2, 2, 2))
    other = replace(g, kernel_sizes=g.kernel_sizes[:2] + (7, 7) + g.kernel_sizes[4:])
    assert g != other and g.canonical(default_space) == other.canonical(default_space)


def test_parse_genome_spec(tmp_path, default_space):
    assert parse_genome_spec("largest", default_space) == Genome.largest(default_space)
    assert parse_genome_spec("random:4", default_space) == Genome.random(default_space, np.random.default_rng(4))
    g = Genome.random(default_space, np.random.default_rng(9))
    (tmp_path / "g.json").write_text(g.to_json())
    assert parse_genome_spec(str(tmp_path / "g.json"), default_space) == g
    assert parse_genome_spec('{"genome": ' + g.to_json() + "}", default_space) == g
    with pytest.raises(GenomeError):
        parse_genome_spec("random:x", default_space)
    with pytest.raises(GenomeError, match="neither"):
        parse_genome_spec("no/such/file.json", default_space)


def test_short_form_mentions_active_blocks_only(default_space):
    g = Genome.smallest(default_space)
    assert g.short(default_space).count("k") == sum(g.depths)


@pytest.mark.parametrize("space_name", ["fmnist_mbv3", "tiny"])
def test_short_form_round_trips(space_name):
    space = get_space(space_name)
    rng = np.random.default_rng(3)
    for _ in range(50):
        g = Genome.random(space, rng).canonical(space)
        short = g.short(space)
        assert Genome.from_short(space, short) == g
        assert parse_genome_spec(short, space) == g


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("r24 | w0 k3e4p0", "expected"),
        ("x24 | w0 | w0 | w0", "expected"),
        ("r24 | k3e4p0 | w0 | w0", "must start"),
        ("r24 | w0 k3e4 | w0 | w0", "is not k"),
        ("r99 | w0 k3e4p0 | w0 k3e4p0 | w0 k3e4p0", "resolution"),
    ],
)
def test_bad_short_forms_say_what_is_wrong(default_space, text, message):
    with pytest.raises(GenomeError, match=message):
        Genome.from_short(default_space, text)
