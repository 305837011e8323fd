"""The accuracy predictor: learns a ranking, round-trips through JSON, refuses bad files; Kendall tau."""

import json

import numpy as np
import pytest

from codesign.errors import CodesignError
from codesign.latency.positions import choice_counts
from codesign.search.accuracy_predictor import AccuracyPredictor, kendall_tau
from codesign.search.encoding import arch_one_hot
from codesign.space import Genome
from codesign.testing import random_genomes


def test_kendall_tau_known_values():
    assert kendall_tau(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 40])) == pytest.approx(1.0)
    assert kendall_tau(np.array([1, 2, 3, 4]), np.array([4, 3, 2, 1])) == pytest.approx(-1.0)
    assert kendall_tau(np.array([1, 2, 3]), np.array([1, 3, 2])) == pytest.approx(1 / 3)


def test_one_hot_ignores_inactive_blocks(tiny_space):
    g = Genome.smallest(tiny_space)
    other_inactive = Genome(**{**g.__dict__, "kernel_sizes": tuple(reversed(g.kernel_sizes))})
    v = np.stack([g.to_vector(tiny_space), other_inactive.canonical(tiny_space).to_vector(tiny_space)])
    x = arch_one_hot(tiny_space, v)
    assert x.shape == (2, sum(choice_counts(tiny_space)))
    active = [s for s in range(tiny_space.max_blocks) if g.is_active(tiny_space, s)]
    if all(g.kernel_sizes[s] == other_inactive.kernel_sizes[s] for s in active):
        np.testing.assert_array_equal(x[0], x[1])
    assert (x.sum(axis=1) < len(v[0])).all()  # inactive slots contribute no hot entries


def test_fit_ranks_held_out_subnets_and_round_trips(tiny_space, tmp_path):
    from codesign.latency.workloads import subnet_macs

    genomes = random_genomes(tiny_space, 150, seed=1)
    macs = np.log(np.asarray([subnet_macs(tiny_space, g) for g in genomes], dtype=float))
    accuracy = 0.8 + 0.02 * (macs - macs.min())
    model = AccuracyPredictor.fit(tiny_space, genomes[:120], accuracy[:120], hidden=(32,), ensemble=2, epochs=300)
    predicted = model.predict(tiny_space, genomes[120:])
    assert kendall_tau(predicted, accuracy[120:]) > 0.6
    path = model.save(tmp_path / "p.json")
    again = AccuracyPredictor.load(path)
    np.testing.assert_allclose(again.predict(tiny_space, genomes[120:]), predicted, rtol=1e-6)
    path.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(CodesignError, match="not a codesign accuracy predictor"):
        AccuracyPredictor.load(path)
    path.write_text("{trunc")
    with pytest.raises(CodesignError, match="corrupt"):
        AccuracyPredictor.load(path)
