"""``codesign profile``: measure a device's kernels under TVM schedules into a profile file."""

from __future__ import annotations

import argparse
import json

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
        "With --rpc-tracker/--rpc-key everything is compiled here and timed on the remote device (a\n"
        "board or server running `python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY`).\n"
        "Not yet: --target cuda."
    )
    examples = (
        "codesign profile --target llvm --budget-minutes 30 -o hw_profiles/my_cpu.json",
        "codesign profile --space tiny --budget-minutes 2 --tune-trials 8 -o /tmp/tiny.json",
        'codesign profile --target \'{"kind": "llvm", "mcpu": "cortex-a72", "mtriple": "aarch64-linux-gnu", '
        '"num-cores": 4}\' --rpc-tracker 10.0.0.5:9190 --rpc-key rpi4 -o hw_profiles/rpi4.json',
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from codesign.space import DEFAULT_SPACE

        parser.add_argument("-o", "--out", required=True, metavar="FILE.json", help="profile file to write")
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
        from codesign.profile.tvm_backend import host_llvm_target
        from codesign.space import get_space

        if args.rpc_tracker and not args.rpc_key:
            raise CodesignError("--rpc-tracker needs --rpc-key (the key the device's RPC server registered with)")
        if args.target == "llvm" and args.rpc_tracker:
            raise CodesignError(
                "with --rpc-tracker give the remote device's target as JSON, e.g. "
                '\'{"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "num-cores": 4}\''
            )
        if args.target == "llvm":
            target = host_llvm_target(args.cores)
        else:
            try:
                target = json.loads(args.target)
            except json.JSONDecodeError:
                raise CodesignError(f"unknown target {args.target!r}: use 'llvm' or a TVM target JSON object") from None
            if not isinstance(target, dict) or target.get("kind") != "llvm":
                raise CodesignError("only llvm targets can be profiled so far (cuda and RPC are not implemented yet)")
        space = get_space(args.space)
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
        )
        summary = Profiler(space, config, work_dir).run(progress=print)
        profile = profile_from_journal(space, config, work_dir)
        save_profile(out, profile)
        print(
            f"profile written to {out}: {summary['measured']} of {summary['workloads']} kernels measured, "
            f"{summary['tuned']} tuned, {summary['models']} whole models (journal in {work_dir})"
        )
        fitted = profile.predictor or {}
        if "kernel_validation" in fitted:
            k = fitted["kernel_validation"]["all"]
            print(f"kernel predictor (cross-validated): {k['within10']:.1%} within +-10%, RMSPE {k['rmspe']:.3f}")
        if "model_validation" in fitted:
            m = fitted["model_validation"]["calibrated"]
            print(f"whole models (leave-one-out): {m['within10']:.1%} within +-10%, RMSPE {m['rmspe']:.3f}")
        return 0
