"""Kernel positions: vectorized workload lookup agrees with the per-genome enumeration."""

import numpy as np
import pytest

from codesign.latency.positions import PositionTable
from codesign.latency.workloads import enumerate_workloads, subnet_workloads
from codesign.space import Genome


@pytest.mark.parametrize("space_name", ["tiny", "fmnist_mbv3"])
def test_lookup_matches_enumeration(space_name):
    from codesign.space import get_space

    space = get_space(space_name)
    table = PositionTable(space)
    assert set(table.workloads) == set(enumerate_workloads(space))
    rng = np.random.default_rng(0)
    genomes = [Genome.largest(space), Genome.smallest(space)] + [Genome.random(space, rng) for _ in range(200)]
    vectors = np.stack([g.to_vector(space) for g in genomes])
    ids, active = table.workload_ids(vectors), table.active(vectors)
    for i, g in enumerate(genomes):
        got = [table.workloads[w] for w, a in zip(ids[i], active[i], strict=True) if a]
        assert got == subnet_workloads(space, g)


def test_equal_kernels_share_the_first_schedule(default_space):
    table = PositionTable(default_space)
    g = Genome.largest(default_space)  # every block of a stage is the same shape after the first
    v = g.to_vector(default_space)[None, :]
    ids, active = table.workload_ids(v), table.active(v)
    genes = np.arange(table.num_positions, dtype=np.int64)[None, :]
    effective = table.effective_schedules(ids, active, genes)[0]
    names = [p.name for p in table.positions]
    first, later = names.index("b1.expand"), names.index("b2.expand")
    assert ids[0, first] == ids[0, later] and effective[later] == genes[0, first]
    assert effective[names.index("stem")] == genes[0, names.index("stem")]
