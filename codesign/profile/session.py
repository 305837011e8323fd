"""Where measurements run: this machine, or a remote device reached through a TVM RPC tracker.

Kernels and whole models are always compiled here. A :class:`LocalSession` runs them in this
process; an :class:`RPCSession` exports each one as a shared library, uploads it to the device
behind the tracker and times it there, so a user can profile a board or a GPU server that is not
this machine (it needs only TVM's runtime and ``python -m tvm.exec.rpc_server``).
"""

from __future__ import annotations

import socket
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codesign.errors import CodesignError


class LocalSession:
    """Measure on this machine."""

    description = "local"

    def __init__(self, target: dict[str, Any]) -> None:
        from codesign.profile.tvm_backend import require_tvm

        tvm = require_tvm()
        self.device = tvm.cuda(0) if target.get("kind") == "cuda" else tvm.cpu(0)

    def load(self, built: Any) -> Any:
        """A built module, ready to run on :attr:`device`."""
        return built

    def close(self) -> None:
        """Nothing to release."""


@dataclass(frozen=True)
class RPCConfig:
    """A device behind a TVM RPC tracker: ``host:port`` and the key its server registered with."""

    tracker: str
    key: str
    session_timeout_s: int = 600

    @property
    def host_port(self) -> tuple[str, int]:
        """The tracker address, validated."""
        host, sep, port = self.tracker.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise CodesignError(f"--rpc-tracker must be HOST:PORT, got {self.tracker!r}")
        return host, int(port)


class RPCSession:
    """Measure on the device behind an RPC tracker (one session for the whole run)."""

    def __init__(self, config: RPCConfig, target: dict[str, Any]) -> None:
        from codesign.profile.tvm_backend import require_tvm

        require_tvm()
        from tvm import rpc

        host, port = config.host_port
        try:  # a plain connect first: TVM's client retries for a minute, logging every attempt
            socket.create_connection((host, port), timeout=10).close()
        except OSError as exc:
            raise CodesignError(f"cannot reach a device through the RPC tracker {config.tracker}: {exc}") from None
        try:
            tracker = rpc.connect_tracker(host, port)
            self.remote = tracker.request(config.key, priority=1, session_timeout=config.session_timeout_s)
        except Exception as exc:
            raise CodesignError(
                f"cannot reach a device with key {config.key!r} through the RPC tracker {config.tracker}: {exc}"
            ) from None
        self.device = self.remote.cuda(0) if target.get("kind") == "cuda" else self.remote.cpu(0)
        self.target = target
        self.description = f"rpc:{config.key}@{config.tracker}"
        self._dir = tempfile.TemporaryDirectory(prefix="codesign-rpc-")

    def load(self, built: Any) -> Any:
        """Export ``built`` as a shared library, upload it and load it on the remote device.

        CUDA kernels are compiled here (fatbin), so the device needs no NVRTC or nvcc.
        """
        name = f"m{uuid.uuid4().hex[:12]}.so"
        path = Path(self._dir.name) / name
        if self.target.get("kind") == "cuda":
            from codesign.compiler.cuda_binary import cuda_arch, export_library_with_compiled_cuda

            export_library_with_compiled_cuda(built, path, cuda_arch(self.target))
        else:
            built.export_library(str(path))
        self.remote.upload(str(path))
        path.unlink()
        return self.remote.load_module(name)

    def close(self) -> None:
        """Drop the temporary files (the remote session ends with this object)."""
        self._dir.cleanup()


def open_session(target: dict[str, Any], rpc: RPCConfig | None) -> LocalSession | RPCSession:
    """The session measurements of ``target`` run in."""
    return RPCSession(rpc, target) if rpc is not None else LocalSession(target)
