"""Helpers for tests of codesign and of code built on it (shipped so that downstream tests can use them)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

from codesign.space import Genome, SearchSpace


def run_cli(
    *args: str,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 600,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m codesign ARGS`` in a child process and capture its text output.

    The default working directory is a neutral one, so that the installed package is what runs
    rather than a source tree that happens to be the current directory (a clone's source tree
    lacks the compiled extension). ``env`` adds to this process's environment.
    """
    return subprocess.run(
        [sys.executable, "-m", "codesign", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tempfile.gettempdir() if cwd is None else cwd,
        env=None if env is None else {**os.environ, **env},
    )


def randomize_batchnorm(module: torch.nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial affine parameters and statistics, so equality checks mean something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                assert m.running_mean is not None and m.running_var is not None, "BN without running statistics"
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)


def random_genomes(space: SearchSpace, count: int, seed: int = 0) -> list[Genome]:
    """The largest and smallest genomes followed by ``count`` seeded random ones."""
    rng = np.random.default_rng(seed)
    return [Genome.largest(space), Genome.smallest(space)] + [Genome.random(space, rng) for _ in range(count)]


def synthetic_profile(
    space: SearchSpace,
    *,
    candidates: int = 3,
    seed: int = 0,
    calibration: bool = True,
    layouts: bool = False,
    packed: bool = False,
) -> object:
    """A hardware profile with *invented* kernel latencies, for unit tests of the latency model and search.

    Kernel latency grows with MACs and memory traffic; schedule candidate 0 (the default lowering)
    is 3x slower, tuned candidates are faster on channel counts divisible by 16 and slower
    otherwise, so schedules and pruning interact. With ``layouts`` every family also has NHWC
    candidates (default and one tuned: depthwise kernels faster than NCHW, dense ones slower) and
    the profile has transpose timings. With ``packed`` as well, NCHW8c candidates (default and one
    tuned, faster than NCHW on every kind) that fail on kernels whose channels do not divide by 8,
    and the layout changes to and from NCHW8c. Every kernel of ``space`` is "measured"; there are no
    traces (nothing can be compiled from it) and the device says it is synthetic.
    """
    from codesign.latency.positions import PositionTable
    from codesign.latency.transposes import activation_shapes, change_fits, layout_changes, transpose_key
    from codesign.latency.workloads import kernel_family
    from codesign.profile.profile_file import DeviceInfo, HardwareProfile, SoftwareInfo

    rng = np.random.default_rng(seed)
    positions = PositionTable(space)
    families: dict[str, list[dict[str, object]]] = {}
    for w in positions.workloads:
        if w.kind != "pool_fc":
            schedules: list[dict[str, object]] = [{"source": "default", "trace": None}]
            schedules += [{"source": f"synthetic#{i}", "trace": None} for i in range(candidates)]
            if layouts:
                schedules += [
                    {"source": "default", "trace": None, "layout": "NHWC"},
                    {"source": "synthetic-nhwc#0", "trace": None, "layout": "NHWC"},
                ]
            if packed:
                schedules += [
                    {"source": "default", "trace": None, "layout": "NCHW8c"},
                    {"source": "synthetic-nchw8c#0", "trace": None, "layout": "NCHW8c"},
                ]
            families.setdefault(kernel_family(w), schedules)
    measurements = []
    for w in positions.workloads:
        base = 2e-6 * w.macs + 1e-6 * (w.in_channels * w.resolution**2 + w.out_channels * w.out_resolution**2) + 0.002
        count = 1 if w.kind == "pool_fc" else 1 + candidates + (2 if layouts else 0) + (2 if packed else 0)
        results = []
        for c in range(count):
            if c > candidates + 2:  # NCHW8c: the default, then one tuned; only on whole channel blocks
                if w.in_channels % 8 or w.out_channels % 8:
                    results.append(
                        {"candidate": c, "source": "synthetic", "status": "failed", "timing": None, "error": "misfit"}
                    )
                    continue
                factor = (0.6 if w.kind == "depthwise" else 0.75) * (3.0 if c == candidates + 3 else 0.7)
            elif c > candidates:  # NHWC: the default, then one tuned
                factor = (0.5 if w.kind == "depthwise" else 1.15) * (3.0 if c == candidates + 1 else 0.7)
            elif c == 0:
                factor = 3.0
            else:
                fits = w.out_channels % (8 * c) == 0
                factor = (0.6 if fits else 1.3) + 0.05 * c
            ms = base * factor * float(rng.uniform(0.97, 1.03))
            timing = {"median_ms": ms, "mean_ms": ms, "std_ms": ms * 0.01, "repeats": 5, "kernels": []}
            results.append({"candidate": c, "source": "synthetic", "status": "ok", "timing": timing, "error": None})
        measurements.append(
            {
                "type": "measured",
                "key": w.key(),
                "family": kernel_family(w),
                "workload": w.to_dict(),
                "results": results,
            }
        )
    transposes = []
    changes = layout_changes(["NHWC"] if layouts else []) + layout_changes(["NCHW8c"] if packed else [])
    for channels, resolution in activation_shapes(positions.workloads) if changes else []:
        for from_layout, to_layout in changes:
            if not change_fits(channels, from_layout, to_layout):
                continue
            ms = 1e-6 * channels * resolution**2 + 0.001
            transposes.append(
                {
                    "key": transpose_key(channels, resolution, to_layout, from_layout),
                    "channels": channels,
                    "resolution": resolution,
                    "from_layout": from_layout,
                    "to_layout": to_layout,
                    "status": "ok",
                    "timing": {"median_ms": ms, "mean_ms": ms, "std_ms": 0.0, "repeats": 5},
                    "error": None,
                }
            )
    terms = {"layer_scale": 1.1, "per_kernel_ms": 0.004, "constant_ms": 0.02} if calibration else {}
    return HardwareProfile(
        target={"kind": "llvm", "mcpu": "synthetic", "num-cores": 1},
        device=DeviceInfo(kind="cpu", name="synthetic (tests only)", cores=1, arch="synthetic"),
        software=SoftwareInfo(tvm="0.27.0.post1"),
        space=space.to_dict(),
        command=["synthetic_profile"],
        created="1970-01-01T00:00:00Z",
        measurements=measurements,
        tuning_records={"families": families},
        predictor={"calibration": {"terms": terms, "models": 0}} if terms else None,
        transposes=transposes,
    )


def synthetic_accuracy_predictor(space: SearchSpace, *, samples: int = 96, seed: int = 0) -> object:
    """An accuracy predictor fitted on an *invented* accuracy (rises with log MACs), for unit tests of search."""
    from codesign.latency.workloads import subnet_macs
    from codesign.search.accuracy_predictor import AccuracyPredictor

    genomes = random_genomes(space, samples, seed)
    macs = np.asarray([subnet_macs(space, g) for g in genomes], dtype=np.float64)
    accuracy = 0.80 + 0.02 * (np.log(macs) - np.log(macs).min())
    return AccuracyPredictor.fit(space, genomes, accuracy, hidden=(32,), ensemble=2, epochs=200, seed=seed)
