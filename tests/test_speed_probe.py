"""The device speed probe: re-times a profile's own subnets for real (TVM, this CPU) and scales the model."""

from dataclasses import replace

import numpy as np
import pytest

from codesign.errors import CodesignError
from codesign.latency.model import LatencyModel
from codesign.profile.speed_probe import (
    PROBE_KERNEL_SHORTEST_QUANTILE,
    SpeedProbe,
    fit_thread_factors,
    probe_device_speed,
    probe_kernels,
    probe_subnets,
    single_thread_shares,
    speed_from_subnet_timings,
)
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


def test_probe_picks_both_schedule_kinds_spread_over_latency_at_the_profiles_own_speed(tiny_space):
    genome = Genome.largest(tiny_space)
    models = [_model_record(f"m{i}", genome, float(i + 1)) for i in range(9)]
    randoms = [_model_record(f"r{i}", genome, 0.5 + i, schedules="random") for i in range(5)]
    failed = {**models[0], "key": "bad", "status": "failed"}
    scaled = {**models[0], "key": "scaled", "speed_factor": 1.2}  # divided by an earlier probe: no reference
    profile = replace(synthetic_profile(tiny_space), models=[*models, *randoms, failed, scaled])
    # the shortest 30% of each kind (m0, m1; r0) are left out: a harness's cost per call weighs most there
    assert [m["key"] for m in probe_subnets(profile, 5)] == ["m2", "m5", "m8", "r1", "r4"]
    assert [m["key"] for m in probe_subnets(profile, 1)] == ["m2"]
    assert len(probe_subnets(profile, 50)) == 11
    assert [m["key"] for m in probe_subnets(replace(profile, models=[*models, randoms[0]]), 4)] == [
        "m2",
        "m5",
        "m8",
        "r0",
    ]
    assert [m["key"] for m in probe_subnets(replace(profile, models=randoms), 2)] == ["r1", "r4"]
    with pytest.raises(CodesignError, match="no measured whole subnets"):
        probe_subnets(replace(profile, models=[scaled]), 2)
    with pytest.raises(CodesignError, match="no measured whole subnets"):
        probe_subnets(replace(profile, models=[]), 2)


def test_thread_factors_are_the_robust_line_through_ratio_against_one_thread_share():
    shares = np.array([0.02, 0.05, 0.04, 0.6, 0.8, 0.85])
    ratios = 1.25 * (1 - shares) + 1.05 * shares
    assert fit_thread_factors(ratios, shares) == pytest.approx((1.25, 1.05))
    busy = ratios.copy()
    busy[1] *= 3  # one subnet timed while something else ran
    assert fit_thread_factors(busy, shares) == pytest.approx((1.25, 1.05), rel=0.02)
    assert fit_thread_factors(ratios[:3], shares[:3]) is None  # one kind only: nothing to separate
    assert fit_thread_factors(ratios[:1], shares[:1]) is None
    assert fit_thread_factors(np.array([0.1, 3.0]), np.array([0.0, 1.0])) is not None
    assert fit_thread_factors(np.array([3.0, 0.1]), np.array([0.0, 0.95])) is None  # negative one-thread factor


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
    import codesign.profile.speed_probe as speed_probe

    recorded = [7.0, 3.0, 5.0]
    profile, _ = _probe_profile(tiny_space, recorded)
    timed: list[float] = []
    real_time_executables = tvm_compile.time_executables

    def recording_timer(*args, **kwargs):
        timings = real_time_executables(*args, **kwargs)
        timed.extend(t.median_ms for t in timings)
        return timings

    monkeypatch.setattr(tvm_compile, "time_executables", recording_timer)
    kernel_times: dict[str, float] = {}
    real_time_default_kernel = speed_probe.time_default_kernel

    def recording_kernel_timer(workload, target, **kwargs):
        kernel_times[workload.key()] = real_time_default_kernel(workload, target, **kwargs)
        return kernel_times[workload.key()]

    monkeypatch.setattr(speed_probe, "time_default_kernel", recording_kernel_timer)
    probe = probe_device_speed(profile, subnets=3, kernels=2, repeat=3)
    recorded_kernels = dict((r["key"], ms) for r, ms in probe_kernels(profile, 2))
    assert sorted(kernel_times) == sorted(recorded_kernels) == sorted(probe.single_thread_keys)
    np.testing.assert_allclose(
        probe.single_thread_ratios, [kernel_times[k] / recorded_kernels[k] for k in probe.single_thread_keys]
    )
    assert all(t > 0 for t in kernel_times.values())
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
    probe = probe_device_speed(profile, subnets=3, kernels=0, time_subnet=lambda executable, g: now[g.to_json()])
    assert probe.factor == pytest.approx(0.8) and probe.ratios == pytest.approx((0.8,) * 3)
    assert probe.warning() is None
    now[genomes[0].to_json()] = 6.0 * 283  # one subnet timed while something else held the CPU
    busy = probe_device_speed(profile, subnets=3, kernels=0, time_subnet=lambda executable, g: now[g.to_json()])
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


def test_probe_kernels_are_default_lowered_timings_at_the_profiles_own_speed(tiny_space):
    profile = synthetic_profile(tiny_space)
    default_ms = {
        r["key"]: r["results"][0]["timing"]["median_ms"]
        for r in profile.measurements
        if r["workload"]["kind"] != "pool_fc"
    }
    picked = probe_kernels(profile, 4)
    assert len(picked) == 4 and all(ms == default_ms[r["key"]] for r, ms in picked)
    assert [ms for _, ms in picked] == sorted(ms for _, ms in picked)
    shortest = sorted(default_ms.values())[int(len(default_ms) * PROBE_KERNEL_SHORTEST_QUANTILE)]
    assert picked[0][1] == shortest and picked[-1][1] == max(default_ms.values())
    # a recalibration's timings were divided by an earlier probe's factor: never a reference
    recalibrated = [{**r, "speed_factor": 1.2} for r in profile.measurements]
    assert probe_kernels(replace(profile, measurements=recalibrated), 4) == []
    assert probe_kernels(profile, 0) == []


def test_one_thread_probe_factor_is_its_kernels_median_ratio_and_warns_when_ragged(tiny_space):
    recorded = [6.0, 3.0, 9.0]
    profile, genomes = _probe_profile(tiny_space, recorded)
    now = {g.to_json(): 1.3 * ms for g, ms in zip(genomes, recorded, strict=True)}
    kernel_ms = {r["key"]: ms for r, ms in probe_kernels(profile, 3)}
    probe = probe_device_speed(
        profile,
        subnets=3,
        kernels=3,
        time_subnet=lambda executable, g: now[g.to_json()],
        time_kernel=lambda w: 0.9 * kernel_ms[w.key()],
    )
    assert probe.factor == pytest.approx(1.3) and probe.single_thread_factor == pytest.approx(0.9)
    assert sorted(probe.single_thread_keys) == sorted(kernel_ms) and probe.warning() is None
    assert "3 one-thread kernels 0.900x" in probe.describe()
    record = probe.to_dict()
    assert record["single_thread_factor"] == probe.single_thread_factor and len(record["single_thread_kernels"]) == 3
    assert "single_thread_factor" not in replace(probe, single_thread_factor=None).to_dict()
    ragged = replace(probe, single_thread_ratios=(0.9, 0.9, 2.7))
    assert "one-thread speed probe ratios" in (ragged.warning() or "")


def test_one_thread_factor_scales_default_lowered_kernels_and_layout_changes_only(tiny_space):
    """Tuned kernels at the subnets' factor; TVM's default lowering (and layout changes, also default-lowered) at the
    one-thread factor; the schedule choices stay the profile's."""
    profile = synthetic_profile(tiny_space, layouts=True)
    model = LatencyModel.from_profile(profile)
    population = random_genomes(tiny_space, 30, seed=2)
    rng = np.random.default_rng(0)
    mixed = [model.random_schedules(g, rng) for g in population] + [_default_schedules(g) for g in population]
    probed = model.at_speed(1.3, single_thread_factor=0.9)
    plain = model.at_speed(1.3)
    scale = model.calibration.layer_scale
    for genome, got, everything in zip(mixed, probed.predict(mixed), plain.predict(mixed), strict=True):
        explained = model.explain(genome)
        one_thread = explained["transpose_ms"] + sum(
            layer["latency_ms"] for layer in explained["layers"] if layer["schedule_source"] == "default"
        )
        assert got == pytest.approx(everything + (0.9 - 1.3) * scale * one_thread, rel=1e-9)
    assert any(model.explain(g)["transposes"] for g in mixed)  # layout changes were part of it
    tuned = [model.fastest_schedules(g) for g in population]
    assert all(probed.fastest_schedules(g) == g for g in tuned)
    np.testing.assert_allclose(model.at_speed(1.3, single_thread_factor=1.3).predict(mixed), plain.predict(mixed))
    with pytest.raises(CodesignError, match="positive"):
        model.at_speed(1.3, single_thread_factor=-1.0)


def test_probe_fits_both_factors_on_subnets_of_both_schedule_kinds(tiny_space):
    """Search-scheduled and random-schedule subnets 'run' tuned kernels 1.3x and one-thread ones 1.05x their
    profile time: the probe recovers both from the subnets alone, times no kernel alone, and scales the model."""
    profile = replace(synthetic_profile(tiny_space), target=host_llvm_target(1))
    model = LatencyModel.from_profile(profile)
    population = random_genomes(tiny_space, 12, seed=4)
    genomes = [model.fastest_schedules(g) for g in population[:4]]
    genomes += [_default_schedules(g) for g in population[4:8]]
    kinds = ["fastest"] * 4 + ["random"] * 4
    recorded = model.predict(genomes)
    models = [
        _model_record(f"model{i:03d}", g, float(ms), kind)
        for i, (g, ms, kind) in enumerate(zip(genomes, recorded, kinds, strict=True))
    ]
    profile = replace(profile, models=models)
    shares = dict(zip([g.to_json() for g in genomes], single_thread_shares(profile, genomes), strict=True))
    assert max(shares.values()) - min(shares.values()) > 0.3
    now = {
        g.to_json(): ms * (1.3 * (1 - shares[g.to_json()]) + 1.05 * shares[g.to_json()])
        for g, ms in zip(genomes, recorded, strict=True)
    }

    def untouchable(workload):
        raise AssertionError("the subnets separate the two speeds: no kernel is timed alone")

    probe = probe_device_speed(
        profile, subnets=8, kernels=4, time_subnet=lambda executable, g: now[g.to_json()], time_kernel=untouchable
    )
    assert probe.single_thread_source == "subnets" and probe.single_thread_keys == ()
    assert (probe.factor, probe.single_thread_factor) == pytest.approx((1.3, 1.05))
    assert probe.fitted_ratios() == pytest.approx(probe.ratios) and probe.warning() is None
    assert "tuned kernels 1.300x, one-thread kernels 1.050x" in probe.describe()
    assert SpeedProbe.from_dict(probe.to_dict()) == replace(probe, seconds=round(probe.seconds, 1))
    assert probe.kernels_alone_factor is None and "kernels_alone_factor" not in probe.to_dict()
    # a recalibration also times kernels alone: their factor is kept apart, the fitted ones are unchanged
    kernel_ms = {r["key"]: ms for r, ms in probe_kernels(profile, 3)}
    with_alone = probe_device_speed(
        profile,
        subnets=8,
        kernels=3,
        kernels_alone=True,
        time_subnet=lambda executable, g: now[g.to_json()],
        time_kernel=lambda w: 0.9 * kernel_ms[w.key()],
    )
    assert (with_alone.factor, with_alone.single_thread_factor) == pytest.approx((1.3, 1.05))
    assert with_alone.kernels_alone_factor == pytest.approx(0.9) and len(with_alone.single_thread_keys) == 3
    assert with_alone.to_dict()["kernels_alone_factor"] == with_alone.kernels_alone_factor
    assert "3 of them timed alone 0.900x" in with_alone.describe()
    probed = model.at_speed(probe.factor, single_thread_factor=probe.single_thread_factor)
    np.testing.assert_allclose(probed.predict(genomes), [now[g.to_json()] for g in genomes], rtol=1e-9)
    # the same subnets timed by a caller (a benchmark interleaving them with what it predicts): the same fit
    records = probe_subnets(profile, 8)
    given = speed_from_subnet_timings(profile, records, [now[Genome.from_dict(r["genome"]).to_json()] for r in records])
    assert given.keys == probe.keys and given.ratios == pytest.approx(probe.ratios)
    assert (given.factor, given.single_thread_factor, given.single_thread_source) == pytest.approx(
        (1.3, 1.05, "subnets")
    )
    one_kind = [r for r in records if r["schedules"] == "fastest"]
    median_only = speed_from_subnet_timings(
        profile, one_kind, [now[Genome.from_dict(r["genome"]).to_json()] for r in one_kind]
    )
    assert median_only.single_thread_factor is None and median_only.single_thread_source is None
    assert median_only.factor == pytest.approx(float(np.median(median_only.ratios)))
    with pytest.raises(CodesignError, match="one timing per probe subnet"):
        speed_from_subnet_timings(profile, records, [1.0])
    busy_genome = genomes[int(probe.keys[-1][-3:])]  # a random-schedule subnet the probe times
    now[busy_genome.to_json()] *= 283  # timed while something else held the CPU
    busy = probe_device_speed(profile, subnets=8, kernels=0, time_subnet=lambda executable, g: now[g.to_json()])
    assert "probably busy" in (busy.warning() or "")
    assert busy.factor == pytest.approx(1.3, rel=0.05)
