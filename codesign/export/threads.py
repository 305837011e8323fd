"""How many CPU threads an exported library should run on: measured on the device, not assumed.

More threads are not always faster. On the shared 2-vCPU VMs codesign is developed on, a compiled
subnet ran 1.35x faster on one TVM runtime thread than on two (``tools/bench_threads.py``), and a
sub-millisecond model can lose to the thread pool's synchronization on any machine. So export times
the library it ships at each candidate thread count, with the runtime-only loader a deployment uses,
and records which count was fastest; ``codesign run`` then uses that count unless told otherwise.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from codesign.errors import CodesignError

# a count this close to the fastest is as good: take the fewer threads, leaving cores to the rest of the device
EQUAL_WITHIN = 0.03
TIMEOUT_S = 600


def candidate_thread_counts(cores: int) -> list[int]:
    """Thread counts worth timing on ``cores`` cores: 1, the powers of two below ``cores``, and ``cores``."""
    if cores < 1:
        raise ValueError(f"cores must be at least 1, got {cores}")
    counts = {cores}
    n = 1
    while n < cores:
        counts.add(n)
        n *= 2
    return sorted(counts)


@dataclass(frozen=True)
class ThreadSweep:
    """Per-inference milliseconds of one library at each thread count, pooled over interleaved rounds."""

    samples_ms: dict[int, list[float]]
    rounds: int

    def median_ms(self, threads: int) -> float:
        """Median latency at ``threads`` threads."""
        return statistics.median(self.samples_ms[threads])

    def recommended(self) -> int:
        """The fewest threads whose median is within :data:`EQUAL_WITHIN` of the fastest median."""
        best = min(self.median_ms(t) for t in self.samples_ms)
        return min(t for t in self.samples_ms if self.median_ms(t) <= best * (1 + EQUAL_WITHIN))

    def timing(self, threads: int) -> dict[str, Any]:
        """JSON-ready statistics at ``threads`` threads (the keys of ``Timing.to_dict`` plus the spread)."""
        values = np.asarray(self.samples_ms[threads], dtype=np.float64)
        return {
            "mean_ms": float(values.mean()),
            "median_ms": float(np.median(values)),
            "std_ms": float(values.std()),
            "p10_ms": float(np.percentile(values, 10)),
            "p90_ms": float(np.percentile(values, 90)),
            "repeats": len(values),
            "number": 1,
        }

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``by_threads`` section: statistics per thread count and the rounds they pooled."""
        return {
            "rounds": self.rounds,
            "timings": {str(t): self.timing(t) for t in sorted(self.samples_ms)},
        }


def _time_together(libraries: Sequence[TimedLibrary], threads: int, repeat: int) -> list[list[float]]:
    """One fresh process timing ``libraries`` on ``threads`` threads (the pool is sized once per process), their
    ``repeat`` windows alternating (``codesign.runtime.time_interleaved``): one list of samples per library."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, TVM_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    command = [sys.executable, "-m", "codesign.runtime", *(str(library.path) for library in libraries)]
    for library in libraries:
        command += ["--shape", ",".join(str(int(d)) for d in library.input_shape)]
    command += ["--repeat", str(repeat)]
    names = ", ".join(Path(library.path).name for library in libraries)
    plural = "s" if threads != 1 else ""
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise CodesignError(f"timing {names} on {threads} thread{plural} took over {TIMEOUT_S} s") from None
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise CodesignError(f"timing {names} on {threads} thread{plural} failed: {reason}")
    try:
        result = json.loads(done.stdout.strip().splitlines()[-1])
        samples = [[float(v) for v in timed["samples_ms"]] for timed in result["libraries"]]
        used = int(result["threads"])
    except (IndexError, KeyError, TypeError, ValueError):
        raise CodesignError(f"timing {names} on {threads} thread{plural} printed no timings") from None
    if used != threads:
        raise CodesignError(f"asked for {threads} runtime threads, the runtime used {used}")
    if len(samples) != len(libraries):
        raise CodesignError(f"timing {names} printed timings of {len(samples)} libraries, not {len(libraries)}")
    return samples


@dataclass(frozen=True)
class TimedLibrary:
    """One library :func:`sweep_libraries` times: where it is, its input shape and the thread counts to time."""

    path: Path
    input_shape: tuple[int, ...]
    counts: tuple[int, ...]


def sweep_libraries(libraries: Sequence[TimedLibrary], *, rounds: int = 3, repeat: int = 10) -> list[ThreadSweep]:
    """Time CPU libraries in the same interleaved rounds, one :class:`ThreadSweep` per library.

    Each round starts one fresh process per thread count, timing every library that has that count in
    ``repeat`` alternating windows, so a busy spell, or a change in the speed of a shared machine, falls on
    all of them alike: how an export times the speed probe's subnets beside the library whose prediction they
    correct. (Timed one library per process, each a contiguous half second, the slow spells of a shared
    2-vCPU VM fell on some and missed others: probe subnets read 1.27x while the artifact beside them read
    1.05x, 2026-12-08.)
    """
    if rounds < 1 or not libraries or any(not library.counts for library in libraries):
        raise ValueError("need at least one round, one library and a thread count for each")
    samples: list[dict[int, list[float]]] = [{int(t): [] for t in library.counts} for library in libraries]
    counts = sorted({t for timed in samples for t in timed})
    for _ in range(rounds):
        for t in counts:
            members = [i for i, timed in enumerate(samples) if t in timed]
            for i, timed in zip(members, _time_together([libraries[i] for i in members], t, repeat), strict=True):
                samples[i][t].extend(timed)
    return [ThreadSweep(timed, rounds) for timed in samples]


def sweep_threads(
    library: str | Path,
    input_shape: Sequence[int],
    *,
    counts: Sequence[int],
    rounds: int = 3,
    repeat: int = 10,
) -> ThreadSweep:
    """Time a CPU library at each of ``counts`` threads, ``rounds`` times in alternation.

    Alternating rounds (1, 2, 1, 2, ...) spread a busy spell of a shared machine over every count
    instead of charging it to one; each round is ``repeat`` samples in a fresh process.
    """
    if not counts:
        raise ValueError("need at least one round and one thread count")
    timed = TimedLibrary(Path(library), tuple(int(d) for d in input_shape), tuple(int(t) for t in counts))
    return sweep_libraries([timed], rounds=rounds, repeat=repeat)[0]
