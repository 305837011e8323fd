"""The device speed probe: re-times a profile's own subnets for real (TVM, this CPU) and scales the model."""

from dataclasses import replace

import numpy as np
import pytest

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


def _probe_profile(tiny_space, recorded_ms: list[float]):
    """A profile on this CPU whose three whole subnets were 'recorded' at ``recorded_ms``."""
    target = host_llvm_target(1)
    profile = replace(synthetic_profile(tiny_space, candidates=0), target=target)
    genomes = [_default_schedules(Genome.largest(tiny_space)), _default_schedules(Genome.smallest(tiny_space))]
    between = (_default_schedules(g) for g in random_genomes(tiny_space, 20, seed=3))
    genomes.append(next(g for g in between if g not in genomes))
    models = [_model_record(f"model{i:03d}", g, ms) for i, (g, ms) in enumerate(zip(genomes, recorded_ms, strict=True))]
    return replace(profile, models=models), genomes


def test_probe_ratio_is_time_now_over_recorded_time(tiny_space, monkeypatch):
    """Each subnet compiled and timed for real; its ratio is exactly what the timer said over the record."""
    import codesign.compiler.tvm_compile as tvm_compile

    recorded = [7.0, 3.0, 5.0]
    profile, _ = _probe_profile(tiny_space, recorded)
    timed: list[float] = []
    real_time_executables = tvm_compile.time_executables

    def recording_timer(*args, **kwargs):
        timings = real_time_executables(*args, **kwargs)
        timed.extend(t.median_ms for t in timings)
        return timings

    monkeypatch.setattr(tvm_compile, "time_executables", recording_timer)
    probe = probe_device_speed(profile, subnets=3, repeat=3)
    by_key = dict(zip([m["key"] for m in probe_subnets(profile, 3)], timed, strict=True))
    expected = [by_key[k] / recorded[int(k[-3:])] for k in probe.keys]
    assert sorted(probe.keys) == ["model000", "model001", "model002"] and all(t > 0 for t in timed)
    np.testing.assert_allclose(probe.ratios, expected, rtol=1e-12)
    assert probe.factor == float(np.median(probe.ratios)) and "speed probe: 3 of" in probe.describe()


def test_probe_factor_scales_predictions_and_a_busy_probe_warns(tiny_space):
    """Recorded times 1.25x what the (given) timer reports: factor 0.8; ragged ratios are flagged, not trusted."""
    recorded = [6.0, 3.0, 9.0]
    profile, genomes = _probe_profile(tiny_space, recorded)
    now = {g.to_json(): 0.8 * ms for g, ms in zip(genomes, recorded, strict=True)}
    probe = probe_device_speed(profile, subnets=3, time_subnet=lambda executable, g: now[g.to_json()])
    assert probe.factor == pytest.approx(0.8) and probe.ratios == pytest.approx((0.8,) * 3)
    assert probe.warning() is None
    now[genomes[0].to_json()] = 6.0 * 283  # one subnet timed while something else held the CPU
    busy = probe_device_speed(profile, subnets=3, time_subnet=lambda executable, g: now[g.to_json()])
    assert busy.factor == pytest.approx(0.8) and "probably busy" in (busy.warning() or "")
    assert "probably busy" in (replace(probe, factor=2.5, ratios=(2.5, 2.5)).warning() or "")
    assert "probably busy" in (replace(probe, factor=0.4, ratios=(0.4, 0.4)).warning() or "")

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
