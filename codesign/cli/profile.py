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
        "Not yet: remote devices over RPC, --target cuda, the fitted latency predictor and whole-model\n"
        "calibration."
    )
    examples = (
        "codesign profile --target llvm --budget-minutes 30 -o hw_profiles/my_cpu.json",
        "codesign profile --space tiny --budget-minutes 2 --tune-trials 8 -o /tmp/tiny.json",
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
        )
        summary = Profiler(space, config, work_dir).run(progress=print)
        save_profile(out, profile_from_journal(space, config, work_dir))
        print(
            f"profile written to {out}: {summary['measured']} of {summary['workloads']} kernels measured, "
            f"{summary['tuned']} tuned (journal in {work_dir})"
        )
        return 0
