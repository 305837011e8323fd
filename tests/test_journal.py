import json
import os
import signal
import subprocess
import sys
import time

import pytest

from codesign.profile.journal import Journal, read_journal, with_retries


def test_append_and_reopen(tmp_path):
    j = Journal(tmp_path / "j.jsonl")
    for i in range(5):
        j.append({"key": f"w{i}", "ms": i * 0.5})
    again = Journal(tmp_path / "j.jsonl")
    assert [r["key"] for r in again] == [f"w{i}" for i in range(5)]
    assert again.done_keys(lambda r: r["key"]) == {f"w{i}" for i in range(5)}


def test_torn_tail_is_dropped_and_appends_continue(tmp_path):
    p = tmp_path / "j.jsonl"
    p.write_text(json.dumps({"key": "a"}) + "\n" + json.dumps({"key": "b"}) + "\n" + '{"key": "c", "ms"')
    contents = read_journal(p)
    assert contents.dropped_torn_tail and [r["key"] for r in contents.records] == ["a", "b"]
    j = Journal(p)
    j.append({"key": "c", "ms": 1.0})
    assert [r["key"] for r in read_journal(p).records] == ["a", "b", "c"]


def test_corruption_in_the_middle_is_an_error(tmp_path):
    p = tmp_path / "j.jsonl"
    p.write_text('{"key": "a"}\nnot json\n{"key": "b"}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_journal(p)


def test_kill_during_appends_loses_no_finished_record(tmp_path):
    p = tmp_path / "j.jsonl"
    code = (
        f"from codesign.profile.journal import Journal\nimport sys\nj = Journal({str(p)!r})\n"
        "for i in range(10**6):\n    j.append({'key': f'w{i}', 'pad': 'x' * 500})\n    print(i, flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    acknowledged = -1
    deadline = time.time() + 60
    while acknowledged < 200 and time.time() < deadline:
        acknowledged = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    keys = [r["key"] for r in Journal(p)]
    assert keys[: acknowledged + 1] == [f"w{i}" for i in range(acknowledged + 1)]  # every acknowledged record survived
    assert os.path.getsize(p) > 0


def test_with_retries():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("rpc dropped\nmore detail")
        return 42

    assert with_retries(flaky, attempts=3) == (42, None)
    calls.clear()
    result, error = with_retries(flaky, attempts=2)
    assert result is None and error == "RuntimeError: rpc dropped"
