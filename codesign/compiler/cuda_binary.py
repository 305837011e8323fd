"""CUDA libraries that carry compiled kernels (fatbin: SASS + PTX) instead of CUDA C source.

TVM 0.27's CUDA code generation leaves each device module as CUDA C source (format ``cuda``);
the runtime compiles it when the library is loaded, which needs NVRTC (cuda-bindings) or nvcc
on the deployment machine. Here the source is compiled with the local nvcc while the library is
exported, and the packed import tree is rewritten so the device module is a ``fatbin``: loading
it needs only the driver (``cuModuleLoadData``), no compiler.

The packed import tree (``__tvm_ffi__library_bin``, see tvm_ffi's ``library_module.cc``) is
``<nbytes:u64> <indptr:vec<u64>> <children:vec<u64>>`` then per module ``<kind:str>`` and, for
every kind but ``_lib``, ``<payload:str>``. A CUDA module's payload is
``<fmt:str> <function table> <data:str>``; only ``fmt`` and ``data`` change.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codesign.errors import CodesignError

LIBRARY_SYMBOL = "__tvm_ffi__library_bin"
COMPILED_FORMAT = "fatbin"


@dataclass(frozen=True)
class PackedModule:
    """One entry of a packed import tree: its kind and its serialized bytes (None for ``_lib``)."""

    kind: str
    payload: bytes | None


@dataclass(frozen=True)
class PackedImports:
    """A parsed ``__tvm_ffi__library_bin`` blob."""

    indptr: list[int]
    children: list[int]
    modules: list[PackedModule]

    @classmethod
    def parse(cls, blob: bytes) -> PackedImports:
        """Parse the bytes of a packed import tree (with its leading size field)."""
        reader = _Reader(blob)
        nbytes = reader.u64()
        if nbytes + 8 != len(blob):
            raise ValueError(f"packed import tree says {nbytes} bytes, holds {len(blob) - 8}")
        indptr = reader.u64_vector()
        children = reader.u64_vector()
        modules = []
        while not reader.done():
            kind = reader.string().decode()
            modules.append(PackedModule(kind, None if kind == "_lib" else reader.string()))
        return cls(indptr, children, modules)

    def to_bytes(self) -> bytes:
        """The blob, size field included."""
        parts = [_u64_vector(self.indptr), _u64_vector(self.children)]
        for module in self.modules:
            parts.append(_string(module.kind.encode()))
            if module.payload is not None:
                parts.append(_string(module.payload))
        body = b"".join(parts)
        return struct.pack("<Q", len(body)) + body


@dataclass(frozen=True)
class CudaPayload:
    """A CUDA module's serialized form: kernel format, function table (opaque bytes), kernel data."""

    fmt: str
    function_table: bytes
    data: bytes

    @classmethod
    def parse(cls, payload: bytes, source_length: int | None = None) -> CudaPayload:
        """Split a payload; the function table is what lies between ``fmt`` and the trailing ``data``."""
        reader = _Reader(payload)
        fmt = reader.string().decode()
        rest = payload[reader.pos :]
        # ``data`` is the last field: find the u64 length prefix that makes it end exactly at the end.
        candidates = [source_length] if source_length is not None else range(len(rest) - 8, -1, -1)
        for length in candidates:
            start = len(rest) - length - 8
            if start >= 0 and struct.unpack_from("<Q", rest, start)[0] == length:
                return cls(fmt, rest[:start], rest[start + 8 :])
        raise ValueError("cannot locate the kernel data in a CUDA module payload")

    def to_bytes(self) -> bytes:
        """Serialize in the order the CUDA runtime reads it back."""
        return _string(self.fmt.encode()) + self.function_table + _string(self.data)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def done(self) -> bool:
        return self.pos >= len(self.data)

    def u64(self) -> int:
        (value,) = struct.unpack_from("<Q", self.data, self.pos)
        self.pos += 8
        return int(value)

    def u64_vector(self) -> list[int]:
        return [self.u64() for _ in range(self.u64())]

    def string(self) -> bytes:
        length = self.u64()
        value = self.data[self.pos : self.pos + length]
        if len(value) != length:
            raise ValueError("truncated packed import tree")
        self.pos += length
        return value


def _u64_vector(values: list[int]) -> bytes:
    return struct.pack(f"<{len(values) + 1}Q", len(values), *values)


def _string(value: bytes) -> bytes:
    return struct.pack("<Q", len(value)) + value


DEFAULT_CUDA_ARCH = "sm_90"
CUDA_TARGET_DEFAULTS: dict[str, Any] = {
    "max_threads_per_block": 1024,
    "max_shared_memory_per_block": 49152,
    "thread_warp_size": 32,
    "registers_per_block": 65536,
}


def local_cuda_arch() -> str | None:
    """The ``sm_XY`` of this machine's first NVIDIA GPU, as nvidia-smi reports its compute capability;
    None where there is no GPU or no nvidia-smi (a build machine)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        lines = subprocess.run(
            [smi, "--query-gpu=compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.fullmatch(r"(\d+)\.(\d+)", lines[0]) if lines else None
    return f"sm_{match.group(1)}{match.group(2)}" if match else None


def complete_cuda_target(target: dict[str, Any] | None = None) -> dict[str, Any]:
    """A full CUDA target JSON: ``target``'s keys over this machine's GPU arch, else Hopper's (``sm_90``:
    H100, H200), and Hopper's limits.

    MetaSchedule needs the limits (threads, shared memory, warp size, registers) spelled out,
    since a build machine has no GPU to query them from.
    """
    given = dict(target or {})
    if given.get("kind", "cuda") != "cuda":
        raise CodesignError(f"not a cuda target: {given!r}")
    arch = given.get("arch") or local_cuda_arch() or DEFAULT_CUDA_ARCH
    return {"kind": "cuda", **CUDA_TARGET_DEFAULTS, **given, "arch": arch}


def cuda_arch(target: dict[str, Any]) -> str:
    """The ``sm_XY`` a CUDA target JSON names; raises when it names none (nothing to compile for)."""
    arch = str(target.get("arch", ""))
    if not re.fullmatch(r"sm_\d+[a-z]?", arch):
        raise CodesignError(f'a cuda target needs an "arch" such as "sm_90" (got {target!r})')
    return arch


def nvcc_path() -> str:
    """The nvcc that compiles the kernels; a clear error when there is none."""
    found = shutil.which("nvcc") or (
        str(Path(os.environ["CUDA_HOME"]) / "bin" / "nvcc") if os.environ.get("CUDA_HOME") else None
    )
    if not found or not Path(found).is_file():
        raise CodesignError("nvcc not found: building CUDA artifacts needs the CUDA toolkit (put nvcc on PATH)")
    return found


def compile_cuda_source(source: str, arch: str) -> bytes:
    """A fatbin holding SASS for ``arch`` and its PTX (so newer GPUs can JIT it), built with nvcc."""
    from codesign.profile.tvm_backend import require_tvm

    nvcc_path()
    tvm = require_tvm()
    from tvm.support import nvcc

    number = arch[3:]
    gencode = [
        "-gencode",
        f"arch=compute_{number.rstrip('a')},code=sm_{number}",
        "-gencode",
        f"arch=compute_{number.rstrip('a')},code=compute_{number.rstrip('a')}",
    ]
    with tvm.target.Target({"kind": "cuda", "arch": arch}):
        return bytes(nvcc.compile_cuda(source, target_format=COMPILED_FORMAT, arch=gencode, compiler="nvcc"))


def compile_packed_cuda(blob: bytes, compile_source: Callable[[str], bytes]) -> tuple[bytes, int]:
    """Rewrite every CUDA-source module of a packed import tree as compiled kernels; returns (blob, count)."""
    packed = PackedImports.parse(blob)
    modules = []
    compiled = 0
    for module in packed.modules:
        if module.kind == "cuda" and module.payload is not None:
            payload = CudaPayload.parse(module.payload)
            if payload.fmt == "cuda":
                binary = compile_source(payload.data.decode())
                payload = CudaPayload(COMPILED_FORMAT, payload.function_table, binary)
                compiled += 1
            module = PackedModule("cuda", payload.to_bytes())
        modules.append(module)
    return PackedImports(packed.indptr, packed.children, modules).to_bytes(), compiled


def _blob_from_c(source: str) -> bytes:
    start = source.index("= {") + 3
    end = source.rindex("};")
    return bytes.fromhex(source[start:end].replace("0x", "").replace(",", "").replace("\n", "").replace(" ", ""))


_HEX = [f"0x{b:02x}" for b in range(256)]


def _blob_to_c(blob: bytes) -> str:
    rows = (",".join(map(_HEX.__getitem__, blob[i : i + 4096])) for i in range(0, len(blob), 4096))
    return (
        '#ifdef __cplusplus\nextern "C" {\n#endif\n'
        f"extern const unsigned char {LIBRARY_SYMBOL}[];\n"
        f"const unsigned char {LIBRARY_SYMBOL}[{len(blob)}] = {{\n" + ",\n".join(rows) + "\n};\n"
        "#ifdef __cplusplus\n}\n#endif\n"
    )


def export_library_with_compiled_cuda(module: Any, path: str | Path, arch: str) -> int:
    """``module.export_library(path)`` with its CUDA kernels compiled by nvcc; returns how many modules were.

    Raises :class:`CodesignError` when nvcc is missing or a CUDA module could not be rewritten.
    """
    from tvm.runtime import _ffi_api

    nvcc_path()
    counts: list[int] = []

    def pack_imports(mod: Any, is_system_lib: bool, prefix: str, workspace_dir: str) -> str:
        blob = _blob_from_c(_ffi_api.ModulePackImportsToC(mod, is_system_lib, prefix))
        rewritten, compiled = compile_packed_cuda(blob, lambda source: compile_cuda_source(source, arch))
        counts.append(compiled)
        out = os.path.join(workspace_dir, f"{prefix}devc.c")
        Path(out).write_text(_blob_to_c(rewritten), encoding="ascii")
        return out

    module.export_library(str(path), fpack_imports=pack_imports)
    return sum(counts)


def library_import_tree(path: str | Path) -> PackedImports:
    """The packed import tree inside an exported library (read from the file, nothing loaded)."""
    import ctypes

    from codesign.runtime import load_runtime

    load_runtime()  # the library's undefined symbols resolve against the TVM runtime
    handle = ctypes.CDLL(str(Path(path).resolve()), mode=os.RTLD_LOCAL)
    base = ctypes.cast(getattr(handle, LIBRARY_SYMBOL), ctypes.c_void_p).value
    assert base is not None, f"{LIBRARY_SYMBOL} resolved to a null address"  # dlsym found the symbol
    (nbytes,) = struct.unpack("<Q", ctypes.string_at(base, 8))
    return PackedImports.parse(ctypes.string_at(base, nbytes + 8))
