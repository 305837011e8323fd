"""Atomic file writes (a reader never sees a half-written file, a crash never leaves one), and JSON reads
that fail with one clear line."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make every written file private
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike[str], obj: Any, *, compact: bool = False) -> None:
    """Write ``obj`` as JSON to ``path`` atomically: indented, or ``compact`` (one line, for large data files)."""
    text = json.dumps(obj, separators=(",", ":")) if compact else json.dumps(obj, indent=2, sort_keys=False)
    write_text_atomic(path, text + "\n")


def read_json_file(path: str | os.PathLike[str], *, error: type[Exception], missing: str, corrupt: str) -> Any:
    """The JSON content of ``path``; a missing or unparsable file raises ``error``.

    ``missing`` and ``corrupt`` are the messages, formatted with ``{path}`` (and ``{exc}``, the parser's
    complaint, for ``corrupt``), so each kind of file says what it is and how to make a good one.
    """
    p = Path(path)
    if not p.is_file():
        raise error(missing.format(path=p))
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(corrupt.format(path=p, exc=exc)) from None


def staging_directory(
    destination: str | os.PathLike[str], *, overwrite: bool = False, error: type[Exception] = OSError
) -> Path:
    """A fresh temporary folder next to ``destination``, to build a whole output in before moving it in place.

    Raises ``error`` (with a one-line reason) when ``destination`` holds files and ``overwrite`` is
    off, or when its parent cannot be written.
    """
    out = Path(destination)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise error(f"output directory {out} exists and is not empty (pass --overwrite to replace it)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as exc:
        raise error(f"cannot write to {out.parent}: {exc.strerror}") from None
