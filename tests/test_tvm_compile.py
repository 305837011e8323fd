"""Timing compiled subnets: windows interleaved over several subnets, so a slow spell is shared."""

from __future__ import annotations

import numpy as np
import pytest

from codesign.compiler.tvm_compile import interleaved_windows


class SlowSpellMachine:
    """A clock of timer calls: every call in ``slow`` (call indices) reads ``factor`` x the base time."""

    def __init__(self, slow: range, factor: float = 2.0) -> None:
        self.slow, self.factor, self.calls, self.order = slow, factor, 0, []

    def timer(self, name: int, base_ms: float):
        def read() -> float:
            value = base_ms * (self.factor if self.calls in self.slow else 1.0)
            self.calls += 1
            self.order.append(name)
            return value

        return read


def test_windows_alternate_round_robin_with_pauses_between_rounds():
    machine = SlowSpellMachine(range(0))
    pauses: list[float] = []
    readings = interleaved_windows(
        [machine.timer(i, 1.0 + i) for i in range(3)], windows=4, pause_s=0.25, sleep=pauses.append
    )
    assert machine.order == [0, 1, 2] * 4
    assert pauses == [0.25] * 3
    assert readings == [[1.0] * 4, [2.0] * 4, [3.0] * 4]


def test_a_slow_spell_doubles_one_subnet_timed_alone_but_not_interleaved_ones():
    """A spell covering 40% of the calls: contiguous timing gives the subnet under it a 2x median."""
    windows, base = 10, [1.0, 2.0, 3.0, 4.0]
    contiguous = SlowSpellMachine(range(0, 16))
    alone = [np.median(interleaved_windows([contiguous.timer(i, b)], windows=windows)[0]) for i, b in enumerate(base)]
    assert alone[0] == pytest.approx(2 * base[0]) and alone[1] == pytest.approx(2 * base[1])

    shared = SlowSpellMachine(range(0, 16))
    readings = interleaved_windows([shared.timer(i, b) for i, b in enumerate(base)], windows=windows)
    assert [np.median(r) for r in readings] == pytest.approx(base)
    assert all(max(r) == pytest.approx(2 * b) for r, b in zip(readings, base, strict=True))  # the spell was seen


def test_time_executables_times_real_subnets_in_windows(tiny_space):
    from codesign.compiler.tvm_compile import compile_subnet, time_executables
    from codesign.profile.tvm_backend import host_llvm_target
    from codesign.space import Genome

    target = host_llvm_target(1)
    genomes = [Genome.smallest(tiny_space), Genome.largest(tiny_space)]
    executables = [(compile_subnet(tiny_space, g, target, {}), g.resolution) for g in genomes]
    timings = time_executables(executables, tiny_space, windows=4, window_ms=5)
    assert [t.repeats for t in timings] == [4, 4]
    assert all(t.number >= 1 and t.median_ms > 0 and t.std_ms >= 0 for t in timings)
    # each window ran the subnet as many times as fill about 5 ms (or once, when one run takes longer)
    assert all(t.number == 1 or 1.5 < t.number * t.median_ms < 25 for t in timings), timings
