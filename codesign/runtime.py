"""Running exported artifacts with the TVM *runtime* alone (no TVM compiler, no codesign stack).

Deploying a ``model_tvm.so`` needs three things, about 7 MB in all, not the ~260 MB compiler:

- the ``apache-tvm-ffi`` wheel (``pip install apache-tvm-ffi==0.1.14.post0``, 3 MB),
- ``libtvm_runtime.so`` (and, for CUDA, ``libtvm_runtime_cuda.so``, which needs the driver's
  ``libcuda.so.1`` and ``libcudart.so.13``) from the ``apache-tvm`` wheel's ``tvm/lib`` folder,
- this file, which imports nothing of codesign, numpy aside: copy it next to the artifact.

Point ``CODESIGN_TVM_LIBRARY_DIR`` (or ``library_dir=``) at the folder holding the runtime
libraries; by default the installed ``tvm`` package's ``lib`` folder is used without importing
``tvm``. CUDA artifacts exported by codesign hold compiled kernels (fatbin), so the deployment
machine needs the NVIDIA driver, not nvcc or NVRTC.

    from codesign.runtime import CompiledModel            # or: from runtime import CompiledModel
    model = CompiledModel("model_tvm.so", device="cpu")   # or device="cuda"
    logits = model(images)                                # (1, C, H, W) float32 -> (1, classes)
    model.main(model.to_device(images))                   # the same without the copies (a tensor out)
    times_ms = model.time(images, repeat=20)              # median, spread: statistics.median(times_ms)
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

RUNTIME_LIBRARIES = ("libtvm_runtime.so",)
CUDA_RUNTIME_LIBRARIES = ("libtvm_runtime_cuda.so",)
POOLED_ALLOCATOR = 2
_DEVICE_TYPES = {"cpu": 1, "cuda": 2}
_loaded: set[str] = set()


class RuntimeUnavailable(RuntimeError):
    """The TVM runtime libraries (or the GPU driver) needed to run an artifact are missing."""


def runtime_library_dir(library_dir: str | Path | None = None) -> Path:
    """Where ``libtvm_runtime.so`` lives: the argument, ``$CODESIGN_TVM_LIBRARY_DIR``, or the tvm wheel's."""
    candidates: list[Path] = []
    if library_dir is not None:
        candidates.append(Path(library_dir))
    if os.environ.get("CODESIGN_TVM_LIBRARY_DIR"):
        candidates.append(Path(os.environ["CODESIGN_TVM_LIBRARY_DIR"]))
    spec = importlib.util.find_spec("tvm")
    if spec is not None and spec.submodule_search_locations:
        candidates.extend(Path(p) / "lib" for p in spec.submodule_search_locations)
    for folder in candidates:
        if (folder / RUNTIME_LIBRARIES[0]).is_file():
            return folder
    raise RuntimeUnavailable(
        f"{RUNTIME_LIBRARIES[0]} not found (looked in {', '.join(map(str, candidates)) or 'nothing'}); "
        "set CODESIGN_TVM_LIBRARY_DIR to the folder holding the TVM runtime libraries"
    )


def load_runtime(*, cuda: bool = False, library_dir: str | Path | None = None, threads: int | None = None) -> Any:
    """Load tvm_ffi and the TVM runtime libraries into this process; returns the ``tvm_ffi`` module.

    CPU kernels run on ``threads`` threads (default: ``TVM_NUM_THREADS`` if set, else every core;
    the TVM runtime alone would use one here). It takes effect before the first kernel runs.
    """
    if threads is not None:
        os.environ["TVM_NUM_THREADS"] = str(max(1, int(threads)))
    else:
        os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))
    try:
        import tvm_ffi
    except ImportError as exc:
        raise RuntimeUnavailable(f"the TVM FFI is missing ({exc}): pip install apache-tvm-ffi==0.1.14.post0") from None
    folder = runtime_library_dir(library_dir)
    names = RUNTIME_LIBRARIES + (CUDA_RUNTIME_LIBRARIES if cuda else ())
    for name in names:
        path = str(folder / name)
        if path in _loaded:
            continue
        if cuda and name in CUDA_RUNTIME_LIBRARIES:
            _preload_cudart(folder)
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            raise RuntimeUnavailable(f"cannot load {path}: {exc}") from None
        _loaded.add(path)
    return tvm_ffi


def _preload_cudart(folder: Path) -> None:
    """libtvm_runtime_cuda.so needs libcudart.so.13: take one shipped beside it or from the nvidia wheels."""
    search = [folder]
    for spec_name in ("nvidia", "nvidia.cu13", "nvidia.cuda_runtime"):
        try:
            spec = importlib.util.find_spec(spec_name)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            search.extend(Path(p) for p in spec.submodule_search_locations)
    for root in search:
        for candidate in [root / "libcudart.so.13", *root.glob("**/libcudart.so.13")]:
            if candidate.is_file():
                try:
                    ctypes.CDLL(str(candidate), mode=ctypes.RTLD_GLOBAL)
                    return
                except OSError:
                    continue


def tensor_to_numpy(value: Any) -> np.ndarray:
    """A host copy of a TVM tensor on any device (through the runtime's own copy, synchronized)."""
    import tvm_ffi

    shape = tuple(int(d) for d in value.shape)
    out = np.empty(shape, dtype=str(value.dtype))
    tvm_ffi.get_global_func("runtime.TVMTensorCopyToBytes")(value, out.ctypes.data_as(ctypes.c_void_p), out.nbytes)
    return out


class DeviceTensors:
    """Moves numpy arrays onto a device as TVM tensors allocated by the TVM runtime.

    The runtime's allocator gives the alignment compiled kernels assume (64 bytes on CPUs);
    wrapping a numpy buffer with DLPack does not, and misaligned vector loads crash.
    """

    def __init__(self, tvm_ffi: Any, device: str) -> None:
        self.tvm_ffi = tvm_ffi
        self.device = device
        self._device = tvm_ffi.device(device, 0)
        self._alloc = tvm_ffi.get_global_func("runtime.TVMTensorAllocWithScope")
        self._copy_in = tvm_ffi.get_global_func("runtime.TVMTensorCopyFromBytes")

    def empty(self, shape: Sequence[int], dtype: str) -> Any:
        """An uninitialized tensor on this device."""
        return self._alloc(self.tvm_ffi.Shape([int(d) for d in shape]), self.tvm_ffi.dtype(dtype), self._device, None)

    def __call__(self, array: np.ndarray) -> Any:
        """A copy of ``array`` on this device."""
        array = np.asarray(array)
        if not array.flags.c_contiguous:  # (np.ascontiguousarray would turn 0-d scalars into 1-d)
            array = array.copy(order="C")
        tensor = self.empty(array.shape, str(array.dtype))
        self._copy_in(tensor, array.ctypes.data_as(ctypes.c_void_p), array.nbytes)
        return tensor

    def synchronize(self) -> None:
        """Wait until everything queued on this device's default stream has finished."""
        self.tvm_ffi.get_global_func("runtime.Device_StreamSync")(self._device, 0)

    def poisoned(self, shape: Sequence[int], dtype: str) -> Any:
        """A tensor filled with NaN (floats) or a marker value, so outputs a kernel never wrote show."""
        marker = np.nan if "float" in dtype else -7
        return self(np.full(tuple(shape), marker, dtype=dtype))


def time_function(
    tvm_ffi: Any,
    module: Any,
    name: str,
    device: str,
    args: Sequence[Any],
    *,
    number: int = 0,
    repeat: int = 20,
    min_repeat_ms: float = 20.0,
) -> list[float]:
    """Milliseconds per call of ``module[name](*args)``: ``repeat`` samples, each the mean over a batch.

    Uses TVM's own timer (device-synchronized, warm-up run first); ``number=0`` sizes each batch so it
    lasts ``min_repeat_ms``.
    """
    return _time_evaluator(tvm_ffi, module, name, device, number=number, repeat=repeat, min_repeat_ms=min_repeat_ms)(
        *args
    )


def _time_evaluator(
    tvm_ffi: Any, module: Any, name: str, device: str, *, number: int, repeat: int, min_repeat_ms: float
) -> Callable[..., list[float]]:
    """TVM's time evaluator for ``module[name]``, made once: each call returns ``repeat`` samples in ms."""
    evaluator = tvm_ffi.get_global_func("runtime.RPCTimeEvaluator")
    feval = evaluator(
        module, name, _DEVICE_TYPES[device], 0, max(number, 1), repeat, int(min_repeat_ms), 100, 0, 1, 0, ""
    )

    def run(*args: Any) -> list[float]:
        return [1e3 * t for t in struct.unpack("@" + "d" * repeat, bytes(feval(*args)))]

    return run


class CompiledModel:
    """A Relax VM over an exported library: call it with a (1, C, H, W) float32 array, get logits."""

    def __init__(
        self,
        library: str | Path,
        *,
        device: str = "cpu",
        library_dir: str | Path | None = None,
        threads: int | None = None,
    ) -> None:
        if device not in _DEVICE_TYPES:
            raise ValueError(f"device must be one of {sorted(_DEVICE_TYPES)}, got {device!r}")
        self.device = device
        self.tvm_ffi = load_runtime(cuda=device == "cuda", library_dir=library_dir, threads=threads)
        self.threads = int(os.environ["TVM_NUM_THREADS"])
        path = Path(library)
        if not path.is_file():
            raise FileNotFoundError(f"no compiled library at {path}")
        self.library = self.tvm_ffi.load_module(str(path.resolve()))
        self.vm = self.library["vm_load_executable"]()
        init = [_DEVICE_TYPES[device], 0, POOLED_ALLOCATOR]
        if device != "cpu":
            init += [_DEVICE_TYPES["cpu"], 0, POOLED_ALLOCATOR]
        self.vm["vm_initialization"](*init)
        self.to_device = DeviceTensors(self.tvm_ffi, device)
        # looked up once: a VM function lookup on every call adds measurable time to a sub-millisecond model
        self.main = self.vm["main"]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Logits for ``images`` (the batch size the library was compiled for)."""
        out = self.main(self.to_device(np.asarray(images, dtype=np.float32)))
        if not hasattr(out, "shape") and len(out) > 0:
            out = out[0]
        return tensor_to_numpy(out)

    def time(self, images: np.ndarray, *, repeat: int = 20, min_repeat_ms: float = 20.0) -> list[float]:
        """Milliseconds per inference, ``repeat`` samples (input already on the device, as deployed)."""
        self.vm["save_function"]("main", "main_timed", 1, self.to_device(np.asarray(images, dtype=np.float32)))
        return time_function(
            self.tvm_ffi, self.vm, "main_timed", self.device, [], repeat=repeat, min_repeat_ms=min_repeat_ms
        )

    def window_timer(self, images: np.ndarray, *, window_ms: float = 50.0) -> Callable[[], float]:
        """A function timing one window of about ``window_ms``: milliseconds per inference over it.

        The runs per window are counted once here (on a warm-up sized by TVM's timer), so that windows of
        several models can alternate (:func:`time_interleaved`).
        """
        self.vm["save_function"]("main", "main_timed", 1, self.to_device(np.asarray(images, dtype=np.float32)))
        per_run_ms = time_function(
            self.tvm_ffi, self.vm, "main_timed", self.device, [], repeat=1, min_repeat_ms=window_ms
        )[0]
        number = max(1, int(round(window_ms / max(per_run_ms, 1e-6))))
        timed = _time_evaluator(
            self.tvm_ffi, self.vm, "main_timed", self.device, number=number, repeat=1, min_repeat_ms=0
        )
        return lambda: timed()[0]


def time_interleaved(
    models: Sequence[CompiledModel], inputs: Sequence[np.ndarray], *, windows: int = 10, window_ms: float = 50.0
) -> list[list[float]]:
    """Milliseconds per inference of each model, ``windows`` samples each, their windows alternating.

    Window 1 of every model, then window 2 of every model, and so on: a slow spell of a shared machine
    (on a 2-vCPU znver4 VM, two-thread runs of small subnets slowed 1.5-2.2x for spells of seconds to
    minutes: ``tools/probe_timing.py``, ``tools/bench_latency_model.py --passes 4``, 2026-12-08) falls
    on all models alike instead of on whichever was being timed.
    """
    if len(models) != len(inputs):
        raise ValueError(f"one input per model: {len(models)} models, {len(inputs)} inputs")
    timers = [model.window_timer(x, window_ms=window_ms) for model, x in zip(models, inputs, strict=True)]
    samples: list[list[float]] = [[] for _ in models]
    for _ in range(windows):
        for timer, timed in zip(timers, samples, strict=True):
            timed.append(timer())
    return samples


def load_artifact_library(
    path: str | Path, *, device: str = "cpu", threads: int | None = None
) -> Callable[[np.ndarray], np.ndarray]:
    """A function mapping a (1, C, H, W) float32 array to logits, backed by a compiled TVM library."""
    return CompiledModel(path, device=device, threads=threads)


def artifact_threads(manifest: dict[str, Any]) -> int | None:
    """The CPU threads an artifact should run on, if its manifest says.

    The thread count export measured fastest on this device (``latency.recommended_threads``) when
    it timed several, else the cores its target was profiled with (``num-cores``).
    """
    tvm_section = manifest.get("tvm", {})
    recommended = tvm_section.get("latency", {}).get("recommended_threads")
    if recommended:
        return int(recommended)
    cores = tvm_section.get("target", {}).get("num-cores")
    return int(cores) if cores else None


def load_artifact(
    directory: str | Path, *, device: str | None = None, threads: int | None = None
) -> tuple[Callable[[np.ndarray], np.ndarray], dict[str, Any]]:
    """The artifact's predict function (TVM library if present, else onnxruntime) and its manifest.

    ``threads``: CPU threads for the TVM library (default: ``TVM_NUM_THREADS`` if set, else
    :func:`artifact_threads`: the count export measured fastest, or the profiled cores).
    """
    root = Path(directory)
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    tvm_section = manifest.get("tvm", {})
    library = root / tvm_section.get("library", "model_tvm.so")
    if library.is_file():
        kind = device or ("cuda" if tvm_section.get("target", {}).get("kind") == "cuda" else "cpu")
        if threads is None and "TVM_NUM_THREADS" not in os.environ:
            threads = artifact_threads(manifest)
        return load_artifact_library(library, device=kind, threads=threads), manifest
    from codesign.export.onnx_export import onnxruntime_logits

    def run(images: np.ndarray) -> np.ndarray:
        return onnxruntime_logits(root / "model.onnx", images)

    return run, manifest


def preprocess(images_uint8: np.ndarray, manifest: dict[str, Any]) -> np.ndarray:
    """Raw images (N, H, W) or (N, C, H, W) uint8 -> the normalized float32 input the artifact expects."""
    import torch

    spec = manifest["input"]
    _, channels, height, width = spec["shape"]
    x = torch.from_numpy(np.asarray(images_uint8, dtype=np.float32) / 255.0)
    if x.ndim == 3:
        x = x[:, None]
    if x.shape[1] != channels:
        x = x.mean(dim=1, keepdim=True).expand(-1, channels, -1, -1)
    if tuple(x.shape[-2:]) != (height, width):
        x = torch.nn.functional.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    mean = torch.tensor(spec["normalization"]["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(spec["normalization"]["std"], dtype=torch.float32).view(1, -1, 1, 1)
    return ((x - mean) / std).numpy().astype(np.float32)


def _time_library_main(argv: Sequence[str] | None = None) -> int:
    """``python -m codesign.runtime LIBRARY [LIBRARY ...] --shape 1,1,28,28 [--shape ...]``: CPU libraries' timings.

    Prints JSON: ``threads``, ``samples_ms`` (the first library's) and ``libraries`` (each one's path and
    ``samples_ms``). Several libraries are timed in alternating windows (:func:`time_interleaved`); give one
    ``--shape`` for all or one per library. Runs on ``TVM_NUM_THREADS`` threads: a fresh process per thread
    count, because the TVM runtime sizes its thread pool once per process.
    """
    import argparse

    parser = argparse.ArgumentParser(description=_time_library_main.__doc__)
    parser.add_argument("library", nargs="+")
    parser.add_argument(
        "--shape", required=True, action="append", help="input shape, comma-separated (once, or once per library)"
    )
    parser.add_argument("--repeat", type=int, default=10, help="windows per library")
    parser.add_argument("--min-repeat-ms", type=float, default=50.0, help="length of a window")
    args = parser.parse_args(argv)
    shapes = args.shape * len(args.library) if len(args.shape) == 1 else args.shape
    if len(shapes) != len(args.library):
        parser.error(f"{len(args.library)} libraries need one --shape or {len(args.library)}, got {len(args.shape)}")
    models = [CompiledModel(library, device="cpu") for library in args.library]
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal([int(d) for d in shape.split(",")]).astype(np.float32) for shape in shapes]
    samples = time_interleaved(models, inputs, windows=args.repeat, window_ms=args.min_repeat_ms)
    libraries = [{"library": str(path), "samples_ms": timed} for path, timed in zip(args.library, samples, strict=True)]
    print(json.dumps({"threads": models[0].threads, "samples_ms": samples[0], "libraries": libraries}))
    return 0


if __name__ == "__main__":
    raise SystemExit(_time_library_main())
