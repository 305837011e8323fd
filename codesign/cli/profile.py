"""``codesign profile``: measure a device's kernels under TVM schedules into a profile file."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from codesign.cli.base import Command


class ProfileCommand(Command):
    name = "profile"
    summary = "measure this device's kernels under TVM schedules (budgeted, resumable)"
    description = (
        "Enumerate the fused kernels the search space can produce, tune representatives of each kernel\n"
        "family with MetaSchedule, replay their schedules on every kernel and time each candidate on this\n"
        "machine, most important kernels first, until --budget-minutes is spent. Progress is journaled in\n"
        "--work-dir: rerunning the same command resumes a killed run. The profile JSON (device and\n"
        "software provenance, raw measurements with spread, tuning records) is written to -o.\n"
        "After the kernels, --calibration-models whole random subnets are compiled with TVM under the\n"
        "schedules their genes choose and measured; a gradient-boosted kernel predictor (JSON) fills the\n"
        "kernels the budget left unmeasured, and a calibration learns what the per-kernel sum misses.\n"
        "On CPUs kernels are tuned in NCHW, NHWC and the packed NCHW8c (--layouts): a candidate fixes its\n"
        "kernel's layout, and the layout changes between kernels are timed too, so the search can mix NCHW\n"
        "with one other layout per network (NCHW8c only where channels divide into blocks of 8).\n"
        "With --rpc-tracker/--rpc-key everything is compiled here and timed on the remote device (a\n"
        "board or server running `python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY`).\n"
        "\n"
        "Devices reached only briefly or only by copying files (a GPU server without TVM) are measured\n"
        "in three steps: --build-only compiles every kernel under every schedule candidate and\n"
        "--bundle-models whole subnets into a self-contained bundle (CUDA kernels as nvcc-compiled\n"
        "fatbin, the TVM runtime libraries, reference outputs, measure.py); on the device\n"
        "`python3 BUNDLE/measure.py` (or --measure BUNDLE) checks and times it all, resumably; --merge\n"
        "folds its results into a profile with the device's provenance."
    )
    examples = (
        "codesign profile --target llvm --budget-minutes 30 -o hw_profiles/my_cpu.json",
        "codesign profile --space tiny --budget-minutes 2 --tune-trials 8 -o /tmp/tiny.json",
        "codesign profile --target cuda --build-only -o h100_bundle          # here, no GPU needed",
        "python3 h100_bundle/measure.py                                     # on the GPU machine",
        "codesign profile --merge h100_bundle --results h100_bundle/results.json -o hw_profiles/h100.json",
        'codesign profile --target \'{"kind": "llvm", "mcpu": "cortex-a72", "mtriple": "aarch64-linux-gnu", '
        '"num-cores": 4}\' --rpc-tracker 10.0.0.5:9190 --rpc-key rpi4 -o hw_profiles/rpi4.json',
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from codesign.space import DEFAULT_SPACE

        parser.add_argument(
            "-o", "--out", metavar="FILE.json|DIR", help="profile file to write (with --build-only: the bundle folder)"
        )
        parser.add_argument(
            "--target", default="llvm", help="'llvm' (this CPU, mcpu detected) or a TVM target as JSON (default: llvm)"
        )
        parser.add_argument("--space", default=DEFAULT_SPACE, metavar="NAME|FILE.json")
        parser.add_argument(
            "--work-dir",
            default=None,
            metavar="DIR",
            help="journal and tuning database (default: FILE.json's name + '.work')",
        )
        parser.add_argument("--budget-minutes", type=float, default=30.0)
        parser.add_argument("--tune-trials", type=int, default=32, help="MetaSchedule trials per representative")
        parser.add_argument("--representatives", type=int, default=2, help="kernels tuned per kernel family")
        parser.add_argument("--top-k", type=int, default=3, help="distinct tuned schedules kept per representative")
        parser.add_argument(
            "--max-workloads",
            type=int,
            default=None,
            metavar="N",
            help="measure at most the N most important kernels (smoke runs)",
        )
        parser.add_argument(
            "--calibration-models",
            type=int,
            default=24,
            metavar="N",
            help="whole random subnets compiled and measured to calibrate the per-kernel sum (0: none)",
        )
        parser.add_argument(
            "--calibration-minutes",
            type=float,
            default=6.0,
            help="part of --budget-minutes kept for the whole-model measurements",
        )
        parser.add_argument(
            "--full-fraction",
            type=float,
            default=0.3,
            help="share of the kernel time spent timing the most important kernels under every candidate "
            "before the coverage pass (default: 0.3)",
        )
        parser.add_argument(
            "--rpc-tracker",
            default=None,
            metavar="HOST:PORT",
            help="measure on the device registered at this TVM RPC tracker (build here, run there)",
        )
        parser.add_argument("--rpc-key", default=None, metavar="KEY", help="the device's key at the tracker")
        parser.add_argument(
            "--layouts",
            default=None,
            metavar="NCHW[,NHWC][,NCHW8c]",
            help="data layouts to tune kernels in; each becomes schedule candidates the search may mix with "
            "NCHW, with measured layout changes between them (default: NCHW,NHWC,NCHW8c on CPUs, NCHW otherwise)",
        )
        parser.add_argument(
            "--recalibrate",
            metavar="PROFILE.json",
            help="refine PROFILE here where the search goes: schedule --calibration-models random subnets as "
            "the search does, time the kernel/schedule pairs they use that were only predicted, re-fit the "
            "kernel predictor, then compile and time the subnets whole and re-fit the calibration on all "
            "its subnets; written to -o, journaled in --work-dir",
        )
        parser.add_argument(
            "--refit",
            metavar="PROFILE.json",
            help="re-fit PROFILE's whole-model calibration on the subnets it already holds, measuring nothing "
            "(runs anywhere): a profile made by an older codesign gets the current calibration form; written to -o",
        )
        parser.add_argument(
            "--kernel-predictor",
            action="store_true",
            help="with --refit: also re-fit the kernel predictor on PROFILE's kernel timings (filling every untimed "
            "pair anew), after replaying each timed or replay-checked schedule to record the loop tilings it takes "
            "(needs TVM, no device: a few minutes for a full profile)",
        )
        parser.add_argument(
            "--models-only",
            action="store_true",
            help="with --recalibrate: time no kernels, only the whole subnets (the kernel table is kept)",
        )
        parser.add_argument(
            "--calibration-sampling",
            choices=("random", "spread"),
            default="random",
            help="with --recalibrate: random architectures (default), or spread: the space's smallest and "
            "largest subnets and others spanning the latency range between (a calibration that holds at its ends)",
        )
        parser.add_argument(
            "--kernel-schedules",
            choices=("fastest", "random", "collapsed", "disturbed"),
            default="fastest",
            help="with --recalibrate: time the predicted kernel/schedule pairs of the subnets scheduled as the "
            "search schedules them (fastest, default), or with every schedule gene drawn at random (random: the "
            "pairs a search evolving schedule genes meets, otherwise filled from the few kernels timed under "
            "every candidate), subnet by subnet within --budget-minutes; or every predicted pair whose loop "
            "tilings collapsed when its schedule was replayed on that kernel (collapsed: what the kernel "
            "predictor cannot foresee), the most important kernels first; or every pair whose recorded timing "
            "spread beyond 25%% of its median over its repeats (disturbed: predicted until timed again steadily)",
        )
        parser.add_argument(
            "--speed-probe",
            type=int,
            default=0,
            metavar="N",
            help="with --recalibrate: first re-time N of PROFILE's own subnets here (half at the search's "
            "schedules, half at random ones), fit how much slower its tuned and its one-thread (default-lowered) "
            "kernels run now, and divide every new timing by those factors, so that kernels and subnets timed on "
            "a machine running off the profile's speed join it in its units (a shared VM drifts 10-25%%, and not "
            "alike for one thread and all of them)",
        )
        parser.add_argument(
            "--retime-models",
            action="store_true",
            help="with --recalibrate: first compile and time again every whole subnet PROFILE holds, replacing "
            "their timings (after a change to how codesign compiles them); --calibration-models may then be 0",
        )
        parser.add_argument(
            "--retime-rule",
            choices=("replace", "fastest"),
            default="replace",
            help="with --retime-models: replace each recorded timing (default; after a compiler change), or keep "
            "the faster of the recorded and the new one, all occasions listed (a VM whose speed is bimodal over "
            "minutes: calibrate on its fast state, the one its kernels were timed in)",
        )
        parser.add_argument(
            "--check-speed",
            metavar="PROFILE.json",
            help="measure nothing new: re-time --probe-subnets of PROFILE's own whole subnets here (half at the "
            "search's schedules, half at random ones) and say how fast this machine runs its tuned and its "
            "one-thread kernels now relative to when PROFILE was measured (its predictions scale by those "
            "factors; a shared VM drifts 10-15%% over hours)",
        )
        parser.add_argument(
            "--probe-subnets", type=int, default=8, metavar="N", help="with --check-speed: subnets to re-time (8)"
        )
        bundle = parser.add_argument_group("measurement bundles (build here, measure on a device without TVM)")
        bundle.add_argument("--build-only", action="store_true", help="compile a measurement bundle into -o DIR")
        bundle.add_argument("--measure", metavar="BUNDLE", help="measure BUNDLE on this machine (runs its measure.py)")
        bundle.add_argument("--merge", metavar="BUNDLE", help="fold --results of BUNDLE into the profile -o")
        bundle.add_argument("--results", metavar="FILE.json", help="with --merge: default BUNDLE/results.json")
        bundle.add_argument(
            "--bundle-models", type=int, default=30, metavar="N", help="whole random subnets in the bundle"
        )
        bundle.add_argument(
            "--sampled-candidates",
            type=int,
            default=3,
            metavar="K",
            help="schedules per kernel family sampled from MetaSchedule's design space, besides the default",
        )
        bundle.add_argument(
            "--runtime-wheels",
            metavar="DIR",
            help="apache_tvm_ffi wheels to ship for the device's Python (tools/fetch_runtime_wheels.sh)",
        )
        parser.add_argument("--cores", type=int, default=None, help="cores to use (default: all)")
        parser.add_argument("--seed", type=int, default=0)

    def run(self, args: argparse.Namespace) -> int:
        import os
        from pathlib import Path

        from codesign.errors import CodesignError

        if args.cores:
            os.environ["TVM_NUM_THREADS"] = str(args.cores)
        from codesign.profile.profile_file import save_profile
        from codesign.profile.profiler import ProfileConfig, Profiler, profile_from_journal
        from codesign.space import get_space

        if args.measure:
            return _measure_bundle(args.measure, args.out)
        if args.check_speed:
            return _check_speed(args)
        if not args.out:
            raise CodesignError("give -o FILE.json (or -o DIR with --build-only)")
        if args.merge:
            return _merge_bundle(args.merge, args.results, args.out, args.seed)
        if args.kernel_predictor and not args.refit:
            raise CodesignError("--kernel-predictor applies to --refit; add --refit PROFILE.json")
        if args.recalibrate and args.refit:
            raise CodesignError("give --recalibrate or --refit, not both (--recalibrate re-fits after it measures)")
        if args.recalibrate:
            return _recalibrate(args)
        if args.refit:
            return _refit(args)
        if args.rpc_tracker and not args.rpc_key:
            raise CodesignError("--rpc-tracker needs --rpc-key (the key the device's RPC server registered with)")
        if args.target == "llvm" and args.rpc_tracker:
            raise CodesignError(
                "with --rpc-tracker give the remote device's target as JSON, e.g. "
                '\'{"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "num-cores": 4}\''
            )
        target = _profile_target(args.target, args.cores)
        space = get_space(args.space)
        if args.build_only:
            return _build_bundle(space, target, args)
        if target.get("kind") == "cuda" and not args.rpc_tracker:
            raise CodesignError(
                "there is no GPU here to time cuda kernels on: use --build-only -o BUNDLE (then measure.py on the "
                "GPU machine and --merge), or --rpc-tracker/--rpc-key to reach a GPU running a TVM RPC server"
            )
        out = Path(args.out)
        work_dir = Path(args.work_dir) if args.work_dir else out.with_name(out.name + ".work")
        config = ProfileConfig(
            target=target,
            budget_minutes=args.budget_minutes,
            tune_trials=args.tune_trials,
            representatives=args.representatives,
            top_k=args.top_k,
            seed=args.seed,
            max_workloads=args.max_workloads,
            calibration_models=args.calibration_models,
            full_fraction=args.full_fraction,
            rpc_tracker=args.rpc_tracker,
            rpc_key=args.rpc_key,
            calibration_minutes=min(args.calibration_minutes, args.budget_minutes),
            layouts=_layouts(args.layouts, target),
        )
        summary = Profiler(space, config, work_dir).run(progress=print)
        profile = profile_from_journal(space, config, work_dir)
        save_profile(out, profile)
        print(
            f"profile written to {out}: {summary['measured']} of {summary['workloads']} kernels measured, "
            f"{summary['tuned']} tuned, {summary['models']} whole models (journal in {work_dir})"
        )
        _print_validation(profile)
        return 0


SPEED_DRIFT_TO_MENTION = 0.05


def _check_speed(args: argparse.Namespace) -> int:
    """``--check-speed``: this machine's speed now relative to a profile it measured."""
    import os

    from codesign.errors import CodesignError
    from codesign.profile.profile_file import load_profile
    from codesign.profile.speed_probe import probe_device_speed, profiled_here_problems

    if args.probe_subnets < 1:
        raise CodesignError("--probe-subnets must be at least 1")
    loaded = load_profile(args.check_speed, allow_mismatch=True)
    cores = args.cores or int(loaded.profile.target.get("num-cores") or 0) or None
    problems = profiled_here_problems(loaded.profile, cores=cores)
    if problems:
        raise CodesignError(
            f"{args.check_speed} was not measured with this machine and TVM ({'; '.join(problems)}): "
            "check a profile's speed on the device and software it measured"
        )
    if cores:
        os.environ["TVM_NUM_THREADS"] = str(cores)  # the count the profile was timed with, before TVM's pool starts
    probe = probe_device_speed(loaded.profile, subnets=args.probe_subnets, kernels=args.probe_subnets, progress=print)
    print(probe.describe())
    warning = probe.warning()
    if warning is not None:
        print(f"warning: {warning}")
    elif abs(probe.factor - 1.0) > SPEED_DRIFT_TO_MENTION:
        print(
            f"this machine runs {probe.factor:.2f}x the time it ran when {args.check_speed} was measured: predictions "
            f"are off by as much (`codesign export --speed-probe N` records the factor with an artifact; "
            f"`codesign profile --recalibrate {args.check_speed} --retime-models` re-times the profile's subnets)"
        )
    else:
        print(f"within {SPEED_DRIFT_TO_MENTION:.0%} of the profile's speed")
    return 0


def _refit(args: argparse.Namespace) -> int:
    """``--refit``: the calibration re-fitted on the profile's own whole-model timings, nothing measured."""
    from pathlib import Path

    from codesign.profile.profile_file import load_profile, save_profile
    from codesign.profile.profiler import refit_calibration

    loaded = load_profile(args.refit, allow_mismatch=True)
    before = (loaded.profile.predictor or {}).get("model_validation", {}).get("calibrated")
    kernels_before = (loaded.profile.predictor or {}).get("kernel_validation", {}).get("all")
    profile = refit_calibration(
        loaded.profile, kernel_predictor=args.kernel_predictor, progress=lambda msg: print(msg, file=sys.stderr)
    )
    save_profile(Path(args.out), profile)
    terms = profile.predictor["calibration"]["terms"]
    what = "kernel predictor and calibration" if args.kernel_predictor else "calibration"
    print(f"profile written to {args.out}: {what} re-fitted, " + ", ".join(f"{k}={v:.6g}" for k, v in terms.items()))
    if args.kernel_predictor and kernels_before:
        print(
            f"kernel predictor before (cross-validated): {kernels_before['within10']:.1%} within +-10%, "
            f"RMSPE {kernels_before['rmspe']:.3f}"
        )
    if before:
        print(
            f"before: whole models (leave-one-out) {before['within10']:.1%} within +-10%, RMSPE {before['rmspe']:.3f}"
        )
    _print_validation(profile)
    return 0


def _recalibrate(args: argparse.Namespace) -> int:
    """``--recalibrate``: the search's predicted kernels and whole subnets timed on this CPU, the profile re-fitted."""
    from pathlib import Path

    from codesign.errors import CodesignError
    from codesign.profile.profile_file import load_profile, save_profile
    from codesign.profile.profiler import recalibrate_profile
    from codesign.profile.tvm_backend import host_llvm_target, software_versions

    if args.rpc_tracker:
        raise CodesignError("--recalibrate measures on this machine; it does not take --rpc-tracker")
    if args.retime_rule != "replace" and not args.retime_models:
        raise CodesignError("--retime-rule applies to --retime-models; add it or drop --retime-rule")
    if args.speed_probe and args.retime_models:
        raise CodesignError(
            "--speed-probe scales new timings to the profile's speed; --retime-models replaces the old ones at "
            "today's: give one of them"
        )
    if args.speed_probe < 0:
        raise CodesignError("--speed-probe needs a number of subnets of at least 1 (0: no probe)")
    if args.kernel_schedules != "fastest" and args.models_only:
        raise CodesignError("--kernel-schedules chooses the kernels to time; --models-only times none")
    kernels_only = args.retime_models or args.kernel_schedules in ("collapsed", "disturbed")
    if args.calibration_models < (0 if kernels_only else 1):
        raise CodesignError(
            "--recalibrate needs --calibration-models of at least 1 (or --retime-models, or --kernel-schedules "
            "collapsed or disturbed)"
        )
    target = host_llvm_target(args.cores)
    loaded = load_profile(args.recalibrate, target=target, tvm_version=software_versions()["tvm"], allow_mismatch=True)
    if loaded.warnings:
        raise CodesignError(
            f"{args.recalibrate} was not measured with this machine and TVM ({'; '.join(loaded.warnings)}): "
            "recalibrate a profile on the device and software it measured"
        )
    out = Path(args.out)
    work_dir = Path(args.work_dir) if args.work_dir else out.with_name(out.name + ".work")
    before = (loaded.profile.predictor or {}).get("model_validation", {}).get("calibrated")
    profile = recalibrate_profile(
        loaded.profile,
        models=args.calibration_models,
        work_dir=work_dir,
        seed=args.seed,
        budget_minutes=args.budget_minutes,
        time_kernels=not args.models_only,
        retime_models=args.retime_models,
        retime_rule=args.retime_rule,
        sampling=args.calibration_sampling,
        kernel_schedules=args.kernel_schedules,
        speed_probe=args.speed_probe,
        progress=print,
    )
    save_profile(out, profile)
    models = sum(1 for m in profile.models if m.get("status") == "ok")
    latest = profile.predictor["calibration"]["recalibrations"][-1]
    retimed = f", {latest['models_retimed']} of them re-timed" if args.retime_models else ""
    print(
        f"profile written to {out}: {latest['kernel_records_added']} kernel records added, calibration re-fitted "
        f"on {models} whole models{retimed} (journal in {work_dir})"
    )
    if before:
        print(
            f"before: whole models (leave-one-out) {before['within10']:.1%} within +-10%, RMSPE {before['rmspe']:.3f}"
        )
    _print_validation(profile)
    return 0


def _layouts(spec: str | None, target: dict[str, Any]) -> tuple[str, ...]:
    """The ``--layouts`` to tune in: validated, NCHW first (candidate 0 is always NCHW's default lowering)."""
    from codesign.errors import CodesignError
    from codesign.latency.transposes import LAYOUT_NAMES, canonical_layout, layout_id

    if spec is None:
        return LAYOUT_NAMES if target.get("kind") == "llvm" else ("NCHW",)
    names = [canonical_layout(name) for name in spec.split(",") if name.strip()]
    if "NCHW" not in names:
        raise CodesignError("--layouts must include NCHW (every kernel's first candidate is NCHW's default)")
    return tuple(sorted(set(names), key=layout_id))


def _profile_target(spec: str, cores: int | None) -> dict[str, Any]:
    """The full TVM target to profile: this CPU, a CUDA GPU (sm_90 unless given), or a target JSON."""
    from codesign.cli.search import resolve_target
    from codesign.compiler.cuda_binary import complete_cuda_target
    from codesign.profile.tvm_backend import host_llvm_target

    if spec == "llvm":
        return host_llvm_target(cores)
    target = resolve_target(spec)
    return complete_cuda_target(target) if target["kind"] == "cuda" else target


def _build_bundle(space: Any, target: dict[str, Any], args: argparse.Namespace) -> int:
    from codesign.profile.bundle import BundleConfig, build_bundle

    config = BundleConfig(
        target=target,
        sampled_candidates=args.sampled_candidates,
        models=args.bundle_models,
        seed=args.seed,
        max_workloads=args.max_workloads,
        runtime_wheels=args.runtime_wheels,
    )
    summary = build_bundle(space, config, args.out, progress=print)
    print(
        f"bundle written to {summary['bundle']}: {summary['kernels']} compiled kernels of {summary['workloads']} "
        f"workloads ({summary['replay_failures']} schedules do not replay, {summary['build_failures']} do not "
        f"build), {summary['models']} whole models, {summary['bytes'] / 2**20:.1f} MiB, {summary['seconds']:.0f} s.\n"
        f"next, on the device: python3 {summary['bundle']}/measure.py"
    )
    return 0


def _measure_bundle(bundle: str, out: str | None) -> int:
    import subprocess
    import sys
    from pathlib import Path

    from codesign.profile.bundle import load_bundle_index

    load_bundle_index(bundle)
    command = [sys.executable, str(Path(bundle) / "measure.py")] + (["--out", out] if out else [])
    return subprocess.run(command, check=False).returncode


def _merge_bundle(bundle: str, results: str | None, out: str, seed: int) -> int:
    from pathlib import Path

    from codesign.profile.bundle import merge_results
    from codesign.profile.profile_file import save_profile

    profile = merge_results(bundle, results or str(Path(bundle) / "results.json"), seed=seed)
    save_profile(out, profile)
    ok = sum(1 for m in profile.measurements for r in m["results"] if r["status"] == "ok")
    models = sum(1 for m in profile.models if m["status"] == "ok")
    print(
        f"profile written to {out}: {profile.device.name}, {ok} kernel timings of {len(profile.measurements)} "
        f"kernels, {models} whole models"
    )
    _print_validation(profile)
    return 0


def _print_validation(profile: Any) -> None:
    """The fitted latency model's own validation, as stored in the profile."""
    fitted = profile.predictor or {}
    if "kernel_validation" in fitted:
        k = fitted["kernel_validation"]["all"]
        print(f"kernel predictor (cross-validated): {k['within10']:.1%} within +-10%, RMSPE {k['rmspe']:.3f}")
    if "model_validation" in fitted:
        m = fitted["model_validation"]["calibrated"]
        print(f"whole models (leave-one-out): {m['within10']:.1%} within +-10%, RMSPE {m['rmspe']:.3f}")
        for label, part in fitted["model_validation"].get("calibrated_by_schedules", {}).items():
            print(f"  {part['n']} scheduled {label}: {part['within10']:.1%} within +-10%, RMSPE {part['rmspe']:.3f}")
        term = fitted["model_validation"].get("activation_term")
        if term:
            print(
                f"  activation term {'kept' if term['kept'] else 'left out'}: with it {term['with']['within10']:.1%} "
                f"within +-10% (RMSPE {term['with']['rmspe']:.3f}), without {term['without']['within10']:.1%} "
                f"({term['without']['rmspe']:.3f})"
            )
