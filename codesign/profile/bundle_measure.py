"""Measure a codesign measurement bundle on the device it was built for (copied into bundles as ``measure.py``).

This file is self-contained: it needs Python 3, numpy and what the bundle ships (the TVM runtime
libraries, ``codesign_runtime.py``, and ``tvm_ffi`` for this Python if it is not installed). On a
GPU machine it also uses torch, when present, to move tensors and to time torch eager.

    python3 BUNDLE/measure.py                      # writes BUNDLE/results.json, resumable
    python3 BUNDLE/measure.py --max-minutes 5 --out /tmp/results.json
    codesign profile --merge BUNDLE --results BUNDLE/results.json -o hw_profiles/h100.json

Every compiled kernel runs once on deterministic probe inputs (its output poisoned with NaN
first); its output is compared with reference values computed when the bundle was built, and only
kernels that agree are timed: TVM's time evaluator (device-synchronized, warm-up first), median
of repeats over several rotated input sets, spread recorded. Whole subnets are checked against
reference logits and timed the same way, plus a host-loop timing that rotates inputs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_FORMAT = "codesign-bundle-results"
PROBE_SAMPLES = 16
KERNEL_TOLERANCE = 1e-3
MODEL_TOLERANCE = 1e-3


def probe_array(shape: list[int], dtype: str, salt: int) -> np.ndarray:
    """Deterministic inputs in [-1, 1), bit-identical on every machine (integer hashing, no RNG)."""
    count = int(np.prod(shape)) if shape else 1
    index = np.arange(count, dtype=np.uint64) + np.uint64(salt * 7919 + 1)
    hashed = (index * np.uint64(2654435761)) % np.uint64(2**32)
    values = hashed.astype(np.float64) / 2.0**32 * 2.0 - 1.0
    return values.astype(dtype).reshape(shape)


def output_summary(output: np.ndarray) -> dict[str, Any]:
    """What a reference keeps of an output: a few sampled values, its mean |x| and max |x|."""
    flat = np.asarray(output, dtype=np.float64).reshape(-1)
    picks = np.linspace(0, flat.size - 1, num=min(PROBE_SAMPLES, flat.size)).astype(np.int64)
    return {
        "finite": bool(np.isfinite(flat).all()),
        "mean_abs": float(np.abs(flat).mean()) if flat.size else 0.0,
        "max_abs": float(np.abs(flat).max()) if flat.size else 0.0,
        "indices": picks.tolist(),
        "values": flat[picks].tolist(),
    }


def summary_error(got: dict[str, Any], want: dict[str, Any]) -> float:
    """Largest deviation of ``got`` from ``want``, relative to the reference's max |x| (inf if not finite)."""
    if not got["finite"]:
        return math.inf
    scale = max(want["max_abs"], 1e-6)
    sampled = max((abs(a - b) for a, b in zip(got["values"], want["values"], strict=True)), default=0.0)
    return max(sampled, abs(got["mean_abs"] - want["mean_abs"]), abs(got["max_abs"] - want["max_abs"])) / scale


def _setup_imports(bundle: Path) -> None:
    """Make ``codesign_runtime`` and ``tvm_ffi`` importable from what the bundle ships."""
    sys.path.insert(0, str(bundle))
    try:
        import tvm_ffi  # noqa: F401

        return
    except ImportError:
        pass
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    copied = bundle / "python" / tag
    if copied.is_dir():
        sys.path.insert(0, str(copied))
        return
    for wheel in sorted((bundle / "wheels").glob(f"apache_tvm_ffi-*-{tag}-*.whl")):
        target = Path(tempfile.mkdtemp(prefix="codesign_tvm_ffi_"))
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(target)
        sys.path.insert(0, str(target))
        return
    raise SystemExit(
        f"error: no tvm_ffi for Python {tag}: pip install apache-tvm-ffi==0.1.14.post0, or rebuild the bundle "
        "with --runtime-wheels DIR holding its wheel for this Python"
    )


def describe_device(device: str) -> dict[str, Any]:
    """What is measured, as read now: GPU name, driver, CUDA, clocks (nvidia-smi), or the CPU."""
    info: dict[str, Any] = {"device": device, "host": platform.node(), "python": platform.python_version()}
    if device == "cuda":
        query = "name,driver_version,clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem,temperature.gpu,power.draw"
        try:
            line = subprocess.run(
                ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=20,
                check=True,
            ).stdout.splitlines()[0]
            info.update(dict(zip(query.split(","), (v.strip() for v in line.split(",")), strict=False)))
        except (OSError, subprocess.SubprocessError, IndexError) as exc:
            info["nvidia_smi_error"] = str(exc)
        try:
            import torch

            props = torch.cuda.get_device_properties(0)
            info.update(
                torch=torch.__version__,
                cuda=torch.version.cuda,
                multiprocessors=props.multi_processor_count,
                compute_capability=f"{props.major}.{props.minor}",
                gpu_memory_gib=round(props.total_memory / 2**30, 1),
                name=info.get("name") or props.name,
            )
        except Exception as exc:  # torch is optional: nvidia-smi alone names the GPU
            info["torch_error"] = str(exc)
    else:
        info["name"] = platform.processor() or platform.machine()
        cpuinfo = Path("/proc/cpuinfo")
        if cpuinfo.is_file():
            for line in cpuinfo.read_text(errors="replace").splitlines():
                if line.lower().startswith("model name"):
                    info["name"] = line.split(":", 1)[1].strip()
                    break
        info["cores"] = os.cpu_count()
    return info


class Measurer:
    """Runs, checks and times what one bundle holds, appending to a resumable results file."""

    def __init__(self, bundle: Path, out: Path, device: str, *, repeat: int, min_repeat_ms: float, rotations: int):
        import codesign_runtime as rt

        self.rt = rt
        self.bundle = bundle
        self.out = out
        self.device = device
        self.repeat = repeat
        self.min_repeat_ms = min_repeat_ms
        self.rotations = rotations
        self.index = json.loads((bundle / "bundle.json").read_text(encoding="utf-8"))
        self.tvm_ffi = rt.load_runtime(cuda=device == "cuda", library_dir=bundle / "runtime")
        self.to_device = rt.DeviceTensors(self.tvm_ffi, device)
        self.results = self._load_previous()
        self._scratch = Path(tempfile.mkdtemp(prefix="codesign_bundle_"))

    def library(self, relative: str) -> Path:
        """A library of the bundle as a loadable file (xz-compressed ones are unpacked to a scratch folder)."""
        path = self.bundle / relative
        if path.suffix != ".xz":
            return path.resolve()
        unpacked = self._scratch / path.name[: -len(".xz")]
        if not unpacked.is_file():
            import lzma

            unpacked.write_bytes(lzma.decompress(path.read_bytes()))
        return unpacked

    def _load_previous(self) -> dict[str, Any]:
        if self.out.is_file():
            previous = json.loads(self.out.read_text(encoding="utf-8"))
            if previous.get("bundle_id") == self.index["bundle_id"] and previous.get("device") == self.device:
                return previous
        return {
            "format": RESULTS_FORMAT,
            "bundle_id": self.index["bundle_id"],
            "device": self.device,
            "device_info": describe_device(self.device),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "settings": {"repeat": self.repeat, "min_repeat_ms": self.min_repeat_ms, "rotations": self.rotations},
            "seconds": 0.0,
            "kernels": {},
            "models": {},
        }

    def save(self) -> None:
        """Write the results atomically (a killed run resumes from the last save)."""
        tmp = self.out.with_name(f".{self.out.name}.tmp")
        tmp.write_text(json.dumps(self.results, separators=(",", ":")) + "\n", encoding="utf-8")
        os.replace(tmp, self.out)

    def _timed(self, run_once: Any) -> dict[str, Any]:
        samples: list[float] = []
        per_set = max(1, math.ceil(self.repeat / self.rotations))
        for rotation in range(self.rotations):
            samples.extend(run_once(rotation, per_set))
        return {
            "median_ms": statistics.median(samples),
            "mean_ms": statistics.fmean(samples),
            "std_ms": statistics.pstdev(samples),
            "p10_ms": float(np.percentile(samples, 10)),
            "p90_ms": float(np.percentile(samples, 90)),
            "repeats": len(samples),
            "number": 0,
        }

    def measure_kernels(self, deadline: float, say: Any) -> None:
        """Check and time every kernel function, library by library."""
        references = self.index["references"]
        for library in self.index["kernel_libraries"]:
            pending = [k for k in library["kernels"] if k["symbol"] not in self.results["kernels"]]
            if not pending:
                continue
            if time.monotonic() > deadline:
                say("time is up: stopping before every kernel was measured (rerun to resume)")
                return
            module = self.tvm_ffi.load_module(str(self.library(library["path"])))
            for kernel in pending:
                self.results["kernels"][kernel["symbol"]] = self._measure_kernel(module, kernel, references)
            self.save()
            done = sum(1 for r in self.results["kernels"].values() if r["status"] == "ok")
            say(f"{library['path']}: {len(self.results['kernels'])} kernels run, {done} checked and timed")

    def _measure_kernel(self, module: Any, kernel: dict[str, Any], references: dict[str, Any]) -> dict[str, Any]:
        args_spec = kernel["args"]
        try:
            function = module[kernel["symbol"]]
            sets = []
            for rotation in range(self.rotations):
                args = [
                    self.to_device(probe_array(shape, dtype, salt=i + 101 * rotation))
                    for i, (shape, dtype) in enumerate(args_spec[:-1])
                ]
                args.append(self.to_device.poisoned(*args_spec[-1]))
                sets.append(args)
            function(*sets[0])
            self.to_device.synchronize()
            got = output_summary(self.rt.tensor_to_numpy(sets[0][-1]))
            error = summary_error(got, references[kernel["reference"]])
            if not error <= KERNEL_TOLERANCE:
                return {"status": "wrong", "error": f"output differs from the reference by {error:.3g} (relative)"}

            def run(rotation: int, repeat: int) -> list[float]:
                return self.rt.time_function(
                    self.tvm_ffi,
                    module,
                    kernel["symbol"],
                    self.device,
                    sets[rotation],
                    repeat=repeat,
                    min_repeat_ms=self.min_repeat_ms,
                )

            return {"status": "ok", "check_error": error, "timing": self._timed(run)}
        except Exception as exc:  # one failing kernel must not stop the run: record why
            return {"status": "failed", "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}

    def measure_models(self, deadline: float, say: Any, *, with_torch: bool) -> None:
        """Check and time every whole subnet (TVM; torch eager beside it when asked and possible)."""
        for model in self.index["models"]:
            if model["key"] in self.results["models"]:
                continue
            if time.monotonic() > deadline:
                say("time is up: stopping before every model was measured (rerun to resume)")
                return
            record = self._measure_model(model)
            if with_torch and record["status"] == "ok":
                record["torch_eager"] = self._torch_eager(model)
            self.results["models"][model["key"]] = record
            self.save()
            timing = record.get("timing")
            say(f"model {model['key']}: " + (f"{timing['median_ms']:.4f} ms" if timing else record["status"]))

    def _measure_model(self, model: dict[str, Any]) -> dict[str, Any]:
        try:
            compiled = self.rt.CompiledModel(
                self.library(model["path"]), device=self.device, library_dir=self.bundle / "runtime"
            )
            inputs = [probe_array(model["input_shape"], "float32", salt=r) for r in range(self.rotations)]
            logits = compiled(inputs[0])
            reference = np.asarray(model["reference_logits"], dtype=np.float64)
            error = float(np.max(np.abs(logits - reference)) / max(1.0, float(np.max(np.abs(reference)))))
            if not error <= MODEL_TOLERANCE:
                return {"status": "wrong", "error": f"logits differ from the reference by {error:.3g}"}

            def run(rotation: int, repeat: int) -> list[float]:
                return compiled.time(inputs[rotation], repeat=repeat, min_repeat_ms=self.min_repeat_ms)

            device_inputs = [compiled.to_device(x) for x in inputs]

            def host_loop(rotation: int, repeat: int) -> list[float]:
                samples = []
                for _ in range(repeat):
                    self.to_device.synchronize()
                    start = time.perf_counter()
                    for i in range(10):
                        compiled.main(device_inputs[(rotation + i) % len(device_inputs)])
                    self.to_device.synchronize()
                    samples.append((time.perf_counter() - start) * 100.0)
                return samples

            return {
                "status": "ok",
                "check_error": error,
                "timing": self._timed(run),
                "host_loop_rotated": self._timed(host_loop),
            }
        except Exception as exc:
            return {"status": "failed", "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}

    def check_artifact(self, directory: Path) -> dict[str, Any]:
        """Run an exported artifact's reference inputs, compare with its onnxruntime logits, time it."""
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
        tvm = manifest.get("tvm", {})
        spec = tvm.get("device_check")
        if spec is None:
            return {"status": "failed", "error": "the artifact ships no reference outputs (not a cuda export?)"}
        try:
            compiled = self.rt.CompiledModel(
                directory / tvm.get("library", "model_tvm.so"), device=self.device, library_dir=self.bundle / "runtime"
            )
            x = np.load(directory / spec["inputs"], allow_pickle=False)
            want = np.load(directory / spec["onnxruntime_logits"], allow_pickle=False)
            got = np.concatenate([compiled(x[i : i + 1]) for i in range(len(x))])
            error = float(np.max(np.abs(got - want)))
            ok = bool(np.isfinite(got).all()) and error <= spec["tolerance"]

            def run(rotation: int, repeat: int) -> list[float]:
                return compiled.time(x[rotation : rotation + 1], repeat=repeat, min_repeat_ms=self.min_repeat_ms)

            return {
                "status": "ok" if ok else "wrong",
                "max_abs_vs_onnxruntime": error,
                "images": len(x),
                "tolerance": spec["tolerance"],
                "timing": self._timed(run),
                "predicted_ms": tvm.get("latency", {}).get("predicted_ms"),
                "genome": manifest.get("genome"),
            }
        except Exception as exc:
            return {"status": "failed", "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}

    def _torch_eager(self, model: dict[str, Any]) -> dict[str, Any]:
        try:
            import torch

            from codesign.space import Genome, SearchSpace
            from codesign.supernet.static import StaticSubnet
            from codesign.supernet.supernet import ElasticSupernet
        except ImportError as exc:
            return {"status": "skipped", "error": f"needs torch and codesign importable ({exc})"}

        def sync() -> None:
            if self.device == "cuda":
                torch.cuda.synchronize()

        space = SearchSpace.from_dict(self.index["space"])
        genome = Genome.from_dict(model["genome"])
        torch.manual_seed(0)
        module = StaticSubnet(ElasticSupernet(space).subnet_config(genome)).eval().to(self.device)
        x = torch.from_numpy(probe_array(model["input_shape"], "float32", salt=0)).to(self.device)
        with torch.inference_mode():
            logits = module(x).double().cpu().numpy()
            reference = np.asarray(model["reference_logits"], dtype=np.float64)
            error = float(np.max(np.abs(logits - reference)) / max(1.0, float(np.max(np.abs(reference)))))
            samples = []
            for _ in range(3):
                module(x)
            for _ in range(self.repeat):
                sync()
                start = time.perf_counter()
                for _ in range(10):
                    module(x)
                sync()
                samples.append((time.perf_counter() - start) * 100.0)
        return {"status": "ok", "check_error": error, "median_ms": statistics.median(samples), "repeats": len(samples)}


def main(argv: list[str] | None = None) -> int:
    """Entry point: measure the bundle this file sits in (or ``--bundle``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default=str(Path(__file__).resolve().parent), help="default: this file's folder")
    parser.add_argument("--out", default=None, help="results file (default: BUNDLE/results.json)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: the bundle's target")
    parser.add_argument("--repeat", type=int, default=12, help="timing samples per kernel and model")
    parser.add_argument("--min-repeat-ms", type=float, default=5.0, help="each sample lasts at least this long")
    parser.add_argument("--rotations", type=int, default=3, help="input sets rotated while timing")
    parser.add_argument("--max-minutes", type=float, default=8.0, help="stop (resumably) after this long")
    parser.add_argument("--no-torch", action="store_true", help="skip the torch eager comparison")
    parser.add_argument("--dry-run", action="store_true", help="load the runtime and the index, measure nothing")
    parser.add_argument(
        "--artifact",
        action="append",
        default=[],
        metavar="DIR",
        help="also check and time an artifact of `codesign export --target ...` (repeatable)",
    )
    args = parser.parse_args(argv)
    bundle = Path(args.bundle)
    if not (bundle / "bundle.json").is_file():
        print(f"error: {bundle} is not a measurement bundle (no bundle.json)", file=sys.stderr)
        return 2
    try:
        index = json.loads((bundle / "bundle.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        print(f"error: {bundle / 'bundle.json'} is unreadable ({exc}); copy the bundle again", file=sys.stderr)
        return 2
    device = args.device or ("cuda" if index["target"].get("kind") == "cuda" else "cpu")
    out = Path(args.out) if args.out else bundle / "results.json"
    _setup_imports(bundle)
    started = time.monotonic()
    try:
        measurer = Measurer(
            bundle, out, device, repeat=args.repeat, min_repeat_ms=args.min_repeat_ms, rotations=args.rotations
        )
    except Exception as exc:  # the runtime or the driver is missing: say which, in one line
        print(f"error: cannot load the TVM runtime for {device}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    kernels = sum(len(lib["kernels"]) for lib in index["kernel_libraries"])
    print(f"bundle {index['bundle_id']}: {kernels} kernels, {len(index['models'])} models, device {device}")
    if args.dry_run:
        print("dry run: runtime loaded, nothing measured")
        return 0
    deadline = started + 60.0 * args.max_minutes
    # The few whole subnets and artifacts first: they are the ground truth a short GPU window must
    # not lose; the thousands of kernels follow, and a later run resumes them.
    measurer.measure_models(deadline, print, with_torch=not args.no_torch)
    for directory in args.artifact:
        record = measurer.check_artifact(Path(directory))
        measurer.results.setdefault("artifacts", {})[Path(directory).name] = record
        measurer.save()
        detail = record.get("error") or (
            f"max |diff| {record['max_abs_vs_onnxruntime']:.2e} over {record['images']} images, "
            f"{record['timing']['median_ms']:.4f} ms (predicted {record['predicted_ms']})"
        )
        print(f"artifact {directory}: {record['status']}: {detail}")
    measurer.measure_kernels(deadline, print)
    measurer.results["seconds"] = round(measurer.results.get("seconds", 0.0) + time.monotonic() - started, 2)
    measurer.results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    measurer.save()
    statuses: dict[str, int] = {}
    for record in [*measurer.results["kernels"].values(), *measurer.results["models"].values()]:
        statuses[record["status"]] = statuses.get(record["status"], 0) + 1
    print(f"results written to {out}: {statuses} in {measurer.results['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
