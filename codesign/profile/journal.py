"""An append-only measurement journal: every finished measurement is on disk before the next starts.

One JSON object per line, flushed and fsynced. A run killed mid-write leaves at most one torn
last line, which :func:`read_journal` drops (and reports); everything before it is kept, so a
resumed profile re-measures only what was not finished.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class JournalContents:
    """The complete records of a journal and whether a torn tail was dropped."""

    records: list[dict[str, Any]]
    dropped_torn_tail: bool


def read_journal(path: str | Path) -> JournalContents:
    """All complete records of ``path`` (empty when the file does not exist)."""
    p = Path(path)
    if not p.exists():
        return JournalContents([], False)
    records: list[dict[str, Any]] = []
    raw = p.read_bytes()
    lines = raw.split(b"\n")
    torn = False
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # only the unterminated last line can be a torn write
                torn = True
                continue
            raise ValueError(f"{p}: line {i + 1} is not JSON (the journal is corrupt, not just cut short)") from None
        if not isinstance(record, dict):
            raise ValueError(f"{p}: line {i + 1} is not a JSON object")
        records.append(record)
    return JournalContents(records, torn)


class Journal:
    """Appends records to a JSON-lines file durably; drop a torn tail once, on open."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        contents = read_journal(self.path)
        if contents.dropped_torn_tail:  # rewrite without the torn line so appends start on a clean line
            tmp = self.path.with_suffix(self.path.suffix + ".tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in contents.records), encoding="utf-8")
            os.replace(tmp, self.path)
        self.records = contents.records

    def append(self, record: dict[str, Any]) -> None:
        """Write one record and fsync it before returning."""
        line = json.dumps(record, sort_keys=True) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        self.records.append(record)

    def done_keys(self, key: Callable[[dict[str, Any]], str]) -> set[str]:
        """Keys of the records already journaled (finished, whether ok or failed)."""
        return {key(r) for r in self.records}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(list(self.records))


def with_retries(
    action: Callable[[], T], *, attempts: int, on_error: Callable[[int, BaseException], None] | None = None
) -> tuple[T | None, str | None]:
    """Run ``action`` up to ``attempts`` times; return ``(result, None)`` or ``(None, last error)``."""
    last = "not attempted"
    for attempt in range(1, attempts + 1):
        try:
            return action(), None
        except Exception as exc:  # a measurement may fail in any layer (build, RPC, runtime)
            last = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            if on_error is not None:
                on_error(attempt, exc)
    return None, last
