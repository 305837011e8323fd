"""``codesign export``: a genome -> a checked, deployable artifact."""

from __future__ import annotations

import argparse
from typing import Any

from codesign.cli.base import Command, add_data_arguments, add_threads_argument, apply_threads


class ExportCommand(Command):
    name = "export"
    summary = "export a subnet as a checked ONNX artifact with a manifest"
    description = (
        "Extract a subnet from a supernet (default: the shipped Fashion-MNIST supernet), recalibrate its\n"
        "BatchNorm statistics on training images, export it as static-shape ONNX, check it with\n"
        "onnx.checker and against onnxruntime on real test images (max |diff| <= --tolerance), and write\n"
        "OUT/model.onnx, OUT/subnet.safetensors, OUT/subnet_config.json and OUT/manifest.json.\n"
        "With --format tvm the ONNX model is also compiled by TVM for the profile's target under the\n"
        "genome's schedule genes (OUT/model_tvm.so, checked against onnxruntime) and timed on this\n"
        "machine next to the latency model's prediction, and at 1, 2, 4, ... threads: the fastest count is\n"
        "recorded in the manifest and `codesign run` uses it (more threads can be slower on a small model\n"
        "or a shared VM). --target cuda builds the library here with nvcc-compiled kernels (no GPU\n"
        "needed; without a cuda profile TVM's default GPU schedules are used) plus reference inputs and\n"
        "logits: `codesign run OUT --check --time` on the GPU machine checks parity (<= 1e-3) and times\n"
        "it. --retune-trials N tunes each kernel of the subnet on this CPU and keeps its own schedule where\n"
        "it times faster than the profile's (the profile replays a few tuned schedules onto every shape).\n"
        "Nothing is written unless every check passes."
    )
    examples = (
        "codesign export --genome largest -o out/largest",
        "codesign export --genome random:7 --supernet runs/fmnist -o out/r7",
        'codesign export --genome search_result.json -o out/best      # a genome JSON, or {"genome": {...}}',
        "codesign export --genome out/search/recommended.json --format tvm -o out/best_tvm",
        "codesign export --genome 'r24 | w0 k7e6p25 k7e6p0 | w25 k7e6p25 | w25 k5e3p0' --format tvm -o out/mine",
        "codesign export --genome out/search/recommended.json --format tvm --target cuda -o out/best_h100",
        "codesign export --genome out/search/recommended.json --format tvm --retune-trials 32 -o out/best_retuned",
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("-o", "--out", required=True, metavar="DIR", help="artifact directory to create")
        parser.add_argument(
            "--genome",
            default="largest",
            metavar="SPEC",
            help="largest | smallest | random:SEED | short form as search prints it ('r24 | w0 k7e6p25 | ...') "
            "| genome JSON file | inline JSON (default: largest)",
        )
        parser.add_argument(
            "--supernet",
            default=None,
            metavar="PATH",
            help="supernet .safetensors or run directory (default: the shipped one)",
        )
        parser.add_argument(
            "--format",
            choices=("onnx", "tvm"),
            default="onnx",
            help="onnx, or tvm: also compile it with TVM under the genome's schedules (default: onnx)",
        )
        parser.add_argument(
            "--target",
            default="llvm",
            help="with --format tvm: 'llvm' (this CPU), 'cuda' (sm_90: H100/H200; built here with nvcc, "
            'no GPU needed) or a TVM target JSON such as \'{"kind": "cuda", "arch": "sm_89"}\'',
        )
        parser.add_argument("--profile", default=None, metavar="FILE.json", help="default: the shipped profile")
        parser.add_argument("--allow-mismatch", action="store_true", help="use a profile measured elsewhere")
        parser.add_argument(
            "--tune-trials",
            type=int,
            default=0,
            metavar="N",
            help="tune kernels whose family the profile has no schedules for, N MetaSchedule trials each "
            "(default 0: TVM's default lowering for them)",
        )
        parser.add_argument(
            "--retune-trials",
            type=int,
            default=0,
            metavar="N",
            help="tune every kernel of the subnet on this CPU with N MetaSchedule trials (32 is a good start; "
            "35-315 s per kernel at 32 trials on 2 cores here), slowest first, in two runs of N/2 (one starting from "
            "the profile's schedule, one from scratch), and compile each with whichever of its "
            "own and the profile's schedule times faster; finished kernels are journaled beside OUT, so a "
            "killed export resumes (default 0: the profile's schedules only)",
        )
        parser.add_argument(
            "--retune-minutes",
            type=float,
            default=None,
            metavar="M",
            help="with --retune-trials: start no new kernel after M minutes of tuning (the one in flight finishes; "
            "journaled kernels are free)",
        )
        parser.add_argument(
            "--retune-from",
            action="append",
            default=[],
            metavar="ARTIFACT",
            help="with --retune-trials: reuse the kernels an earlier re-tuned export (its directory, or a "
            "retune_journal.jsonl) tuned on this target with the same trials and profile schedule, instead of "
            "tuning them again (a kernel several subnets share, or a second export with a larger --retune-minutes); "
            "repeatable",
        )
        parser.add_argument(
            "--schedules",
            choices=("auto", "genome", "fastest", "default"),
            default="auto",
            help="which kernel schedules to compile with: the genome's own schedule genes (a search result), "
            "the profile's fastest per kernel, or TVM's default lowering; auto (default) takes the genome's "
            "when it has any, else the fastest",
        )
        parser.add_argument(
            "--runtime-threads",
            type=_runtime_threads,
            default="auto",
            metavar="auto|N",
            help="CPU threads the artifact runs on (recorded in its manifest, used by codesign run): auto "
            "(default) times the library here at 1, 2, 4, ... and all cores and takes the fastest; N takes N",
        )
        parser.add_argument(
            "--speed-probe",
            type=int,
            default=0,
            metavar="N",
            help="when the library is timed here: also re-time N of the profile's own subnets the same way, in "
            "the same rounds, and record how fast this machine runs now relative to its profile, with the "
            "prediction at that speed "
            "(a shared VM drifts 10-15%% over hours; default 0: off)",
        )
        parser.add_argument(
            "--rpc-tracker", default=None, metavar="HOST:PORT", help="time the library on the device behind it"
        )
        parser.add_argument("--rpc-key", default=None, metavar="KEY", help="the device's key at the tracker")
        parser.add_argument(
            "--tolerance", type=float, default=1e-4, help="max |torch - onnxruntime| allowed (default 1e-4)"
        )
        parser.add_argument("--skip-test-accuracy", action="store_true", help="do not score the test split")
        parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
        add_data_arguments(parser)
        add_threads_argument(parser)

    def run(self, args: argparse.Namespace) -> int:
        from codesign.errors import ExportError

        if args.speed_probe < 0:
            raise ExportError("--speed-probe takes a number of subnets, 0 or more")
        retuning = args.retune_trials or args.retune_minutes is not None or args.retune_from
        if args.format != "tvm" and (args.tune_trials or retuning):
            raise ExportError(
                "--tune-trials, --retune-trials, --retune-minutes and --retune-from compile with TVM: add --format tvm"
            )
        apply_threads(args.threads)
        from codesign.data import load_splits
        from codesign.export.pipeline import describe, export_subnet
        from codesign.space import parse_genome_spec
        from codesign.supernet import load_supernet

        loaded = load_supernet(args.supernet)
        genome = parse_genome_spec(args.genome, loaded.supernet.space)
        search = search_beside(args.genome)
        splits = load_splits(
            args.dataset,
            args.data_root,
            val_size=args.val_size,
            seed=args.data_seed,
            channels=loaded.supernet.space.in_channels,
        )
        profile = None
        target = None
        if args.format == "tvm":
            profile, target = _profile_and_target(args)
        result = export_subnet(
            loaded=loaded,
            genome=genome,
            splits=splits,
            out_dir=args.out,
            tolerance=args.tolerance,
            evaluate_test=not args.skip_test_accuracy,
            overwrite=args.overwrite,
            profile=profile,
            target=target,
            rpc=_rpc_config(args),
            tune_trials=args.tune_trials,
            schedules=args.schedules,
            runtime_threads=args.runtime_threads,
            retune_trials=args.retune_trials,
            retune_minutes=args.retune_minutes,
            retune_from=tuple(args.retune_from),
            speed_probe=args.speed_probe,
            latency_budget_ms=search["budget_ms"] if search else None,
        )
        print(f"exported to {result.out_dir}: {describe(result.manifest)}")
        latency = (result.manifest.get("tvm") or {}).get("latency") or {}
        if search and latency.get("measured_over_budget", 0.0) > 1.0 and not search["probed"]:
            print(
                "hint: the search bound its budget at the profile's speed; on the profiled device, "
                "`codesign search --speed-probe 4` binds it at this machine's speed now"
            )
        return 0


def search_beside(genome_spec: str) -> dict[str, Any] | None:
    """The latency budget of the search that wrote ``genome_spec`` (its ``front.json`` beside it), if any.

    ``{"budget_ms": float, "probed": bool}``; ``None`` for a spec that is not a file in a search's
    output directory, or whose ``front.json`` does not read as one.
    """
    import json
    from pathlib import Path

    spec = Path(genome_spec)
    front = spec.parent / "front.json"
    if not (spec.is_file() and front.is_file()):
        return None
    try:
        data = json.loads(front.read_text())
        budget = float(data["budget"]["latency_ms"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return {"budget_ms": budget, "probed": "speed_probe" in data}


def _runtime_threads(text: str) -> Any:
    """``--runtime-threads``: "auto" or a positive thread count."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected auto or a thread count of at least 1, got {text!r}")
    return value


def _profile_and_target(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The hardware profile and full TVM target an export compiles for.

    A cuda export needs no profile: without one it uses TVM's default GPU schedules and says so.
    """
    from codesign.cli.search import resolve_target
    from codesign.profile.profile_file import ProfileError
    from codesign.profile.shipped import resolve_profile

    requested = resolve_target(args.target)
    if requested.get("kind") != "cuda":
        loaded = resolve_profile(requested, args.profile, allow_mismatch=args.allow_mismatch)
        return loaded.profile, loaded.profile.target
    from codesign.compiler.cuda_binary import complete_cuda_target, nvcc_path

    nvcc_path()
    try:
        profile = resolve_profile(requested, args.profile, allow_mismatch=args.allow_mismatch).profile
    except ProfileError:
        if args.profile:
            raise
        print(
            "note: no cuda profile shipped or given: compiling with TVM's default GPU schedules, no latency prediction"
        )
        return None, complete_cuda_target(requested)
    return profile, complete_cuda_target({**profile.target, **requested})


def _rpc_config(args: argparse.Namespace) -> Any:
    """The RPC device to time the artifact on, if any (both --rpc-tracker and --rpc-key, or neither)."""
    from codesign.errors import CodesignError
    from codesign.profile.session import RPCConfig

    if bool(args.rpc_tracker) != bool(args.rpc_key):
        raise CodesignError("--rpc-tracker and --rpc-key go together")
    return RPCConfig(args.rpc_tracker, args.rpc_key) if args.rpc_tracker else None
