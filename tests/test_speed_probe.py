"""The device speed probe: re-times a profile's own subnets for real (TVM, this CPU) and scales the model."""

from dataclasses import replace

import numpy as np
import pytest

from codesign.compiler.tvm_compile import compile_subnet, time_executable
from codesign.errors import CodesignError
from codesign.latency.model import LatencyModel
from codesign.profile.speed_probe import probe_device_speed, probe_subnets
from codesign.profile.tvm_backend import host_llvm_target
from codesign.space import Genome
from codesign.testing import random_genomes, synthetic_profile


def _default_schedules(genome: Genome) -> Genome:
    return Genome(**{**genome.__dict__, "schedules": tuple(0 for _ in genome.schedules)})


def _model_record(key: str, genome: Genome, median_ms: float, schedules: str = "fastest") -> dict:
    timing = {"median_ms": median_ms, "mean_ms": median_ms, "std_ms": 0.0, "repeats": 5, "number": 1}
    return {
        "key": key,
        "type": "model",
        "genome": genome.to_dict(),
        "schedules": schedules,
        "status": "ok",
        "timing": timing,
    }


def test_probe_picks_spread_subnets_and_prefers_fastest_schedules(tiny_space):
    genome = Genome.largest(tiny_space)
    models = [_model_record(f"m{i}", genome, float(i + 1)) for i in range(9)]
    models += [_model_record("r", genome, 0.5, schedules="random"), {**models[0], "key": "bad", "status": "failed"}]
    profile = replace(synthetic_profile(tiny_space), models=models)
    assert [m["key"] for m in probe_subnets(profile, 3)] == ["m0", "m4", "m8"]
    assert len(probe_subnets(profile, 50)) == 9
    with pytest.raises(CodesignError, match="no measured whole subnets"):
        probe_subnets(replace(profile, models=[]), 2)


def test_probe_measures_the_speed_ratio_and_scales_predictions(tiny_space):
    """Recorded times 3x what this machine takes now: the probe finds a factor near 1/3."""
    target = host_llvm_target(1)
    profile = replace(synthetic_profile(tiny_space, candidates=0), target=target)
    families = profile.tuning_records["families"]
    genomes = [_default_schedules(Genome.largest(tiny_space)), _default_schedules(Genome.smallest(tiny_space))]
    genomes.append(_default_schedules(random_genomes(tiny_space, 1, seed=3)[0]))
    models = []
    for i, g in enumerate(genomes):
        now = time_executable(compile_subnet(tiny_space, g, target, families), tiny_space, g.resolution).median_ms
        models.append(_model_record(f"model{i:03d}", g, 3.0 * now))
    probe = probe_device_speed(replace(profile, models=models), subnets=3)
    assert sorted(probe.keys) == ["model000", "model001", "model002"]
    assert 0.2 < probe.factor < 0.5, probe
    assert probe.factor == float(np.median(probe.ratios)) and "speed probe: 3 of" in probe.describe()

    model = LatencyModel.from_profile(profile)
    faster = model.at_speed(probe.factor)
    population = random_genomes(tiny_space, 20, seed=1)
    np.testing.assert_allclose(faster.predict(population), probe.factor * model.predict(population), rtol=1e-12)
    assert all(faster.fastest_schedules(g) == model.fastest_schedules(g) for g in population[:5])
    assert model.predict(population[:1])[0] != faster.predict(population[:1])[0]  # the original is unchanged
    with pytest.raises(CodesignError, match="positive"):
        model.at_speed(0.0)


def test_export_refuses_a_speed_probe_without_whole_subnets_before_any_work(tmp_path):
    from codesign.errors import ExportError
    from codesign.export.pipeline import export_subnet
    from codesign.supernet import load_supernet

    loaded = load_supernet()
    space = loaded.supernet.space
    profile = replace(synthetic_profile(space), models=[])
    with pytest.raises(ExportError, match="--speed-probe: the profile has no measured whole subnets"):
        export_subnet(
            loaded=loaded,
            genome=Genome.largest(space),
            splits=None,
            out_dir=tmp_path / "out",
            profile=profile,
            speed_probe=2,
        )
    assert not (tmp_path / "out").exists()
