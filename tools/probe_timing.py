"""How a machine's speed moves while an export times its artifact: the speed probe's subnets and artifacts, per round.

Compiles ``--probe N`` of the profile's own subnets as the profile compiled them (the subnets an export's
``--speed-probe`` uses) and, for each ``--artifact DIR`` (an export), the same genome compiled that way too; then
times them all with the runtime-only loader in ``--rounds`` rounds, and prints each library's ratio to its
reference (a probe subnet: its time recorded in the profile; an artifact: the profile's prediction) in every round.

- ``--layout together`` (default): one fresh process per round, all libraries' 50 ms windows alternating, as
  ``codesign export --speed-probe`` times them (``codesign.export.threads.sweep_libraries``);
- ``--layout apart``: one fresh process per library per round, each library's windows back to back, as exports
  timed them before 2026-12-08.

A machine whose speed does not move shows the same ratio in every round; a shared VM shows which libraries a slow
spell reached. Run it on an otherwise idle machine:

    python tools/probe_timing.py --profile hw_profiles/llvm-znver4-2c.json --artifact out/best --layout apart
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    """Compile, time in rounds, print per-round ratios; 0 on success."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", required=True)
    parser.add_argument("--artifact", action="append", default=[], metavar="DIR", help="an export (repeatable)")
    parser.add_argument("--probe", type=int, default=8, metavar="N", help="the profile's subnets to time (default 8)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=10, help="50 ms windows per library per round")
    parser.add_argument("--layout", choices=("together", "apart"), default="together")
    args = parser.parse_args()
    if args.probe < 1 or args.rounds < 1 or args.repeat < 1:
        parser.error("--probe, --rounds and --repeat must be at least 1")
    for directory in args.artifact:
        if not (Path(directory) / "manifest.json").is_file():
            parser.error(f"--artifact {directory}: no manifest.json there (give a codesign export directory)")

    from codesign.compiler.tvm_compile import compile_subnet
    from codesign.export.threads import ThreadSweep, TimedLibrary, sweep_libraries
    from codesign.latency.model import LatencyModel
    from codesign.profile.profile_file import load_profile
    from codesign.profile.speed_probe import compile_probe_subnets
    from codesign.space import Genome

    profile = load_profile(args.profile, allow_mismatch=True).profile
    cores = int(profile.target.get("num-cores") or os.cpu_count() or 1)
    model = LatencyModel.from_profile(profile)
    space = model.space
    families = profile.tuning_records.get("families", {})
    records, genomes, executables = compile_probe_subnets(profile, args.probe)
    names = [f"probe {record['key']} ({record.get('schedules', '?')} schedules)" for record in records]
    references = [float(record["timing"]["median_ms"]) for record in records]
    folder = Path(tempfile.mkdtemp(prefix="probe_timing_"))
    paths = []
    for i, executable in enumerate(executables):
        paths.append(folder / f"probe{i}.so")
        executable.export_library(str(paths[-1]))
    for directory in args.artifact:
        manifest = json.loads((Path(directory) / "manifest.json").read_text(encoding="utf-8"))
        genome = Genome.from_dict(manifest["genome"])
        predicted = float(model.predict([genome])[0])
        executable = compile_subnet(space, genome, profile.target, families, positions=model.positions)
        paths.append(folder / f"artifact{len(paths)}.so")
        executable.export_library(str(paths[-1]))
        genomes.append(genome)
        names.append(f"{directory}, compiled as the profile compiles")
        references.append(predicted)
        paths.append(Path(directory) / manifest.get("tvm", {}).get("library", "model_tvm.so"))
        genomes.append(genome)
        names.append(f"{directory}, the exported artifact")
        references.append(predicted)
    libraries = [
        TimedLibrary(path, (1, space.in_channels, g.resolution, g.resolution), (cores,))
        for path, g in zip(paths, genomes, strict=True)
    ]
    started = time.perf_counter()
    if args.layout == "together":
        sweeps = sweep_libraries(libraries, rounds=args.rounds, repeat=args.repeat)
    else:
        by_round = [
            [sweep_libraries([library], rounds=1, repeat=args.repeat)[0] for library in libraries]
            for _ in range(args.rounds)
        ]
        sweeps = [
            ThreadSweep({cores: [v for r in by_round for v in r[i].samples_ms[cores]]}, args.rounds)
            for i in range(len(libraries))
        ]
    print(
        f"{len(libraries)} libraries, {args.rounds} rounds, windows {args.layout}, {cores} threads: "
        f"{time.perf_counter() - started:.0f} s"
    )
    print(f"{'median':>7} {'ref ms':>7}  per round (ratio to the reference)")
    for name, reference, sweep in zip(names, references, sweeps, strict=True):
        samples = sweep.samples_ms[cores]
        per_round = [statistics.median(samples[k * args.repeat : (k + 1) * args.repeat]) for k in range(args.rounds)]
        print(
            f"{sweep.median_ms(cores) / reference:6.3f}x {reference:7.3f}  "
            + " ".join(f"{m / reference:5.2f}" for m in per_round)
            + f"  {name}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
