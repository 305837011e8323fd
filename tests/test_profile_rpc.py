"""`codesign profile` through a real TVM RPC tracker + server on 127.0.0.1 (build here, time there)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from codesign.profile.profile_file import load_profile
from codesign.profile.tvm_backend import host_llvm_target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def rpc_device(tmp_path):
    """A tracker and one CPU server registered under key ``loopback``; both killed (with workers) after."""
    tracker_port, server_port = free_port(), free_port()
    env = {**os.environ, "TVM_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tvm.exec.rpc_tracker",
                "--host",
                "127.0.0.1",
                "--port",
                str(tracker_port),
                "--port-end",
                str(tracker_port + 1),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    ]
    time.sleep(2)
    procs.append(
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tvm.exec.rpc_server",
                "--host",
                "127.0.0.1",
                "--port",
                str(server_port),
                "--port-end",
                str(server_port + 1),
                "--tracker",
                f"127.0.0.1:{tracker_port}",
                "--key",
                "loopback",
                "--custom-addr",
                "127.0.0.1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    )
    from tvm import rpc

    for _ in range(60):
        try:
            summary = rpc.connect_tracker("127.0.0.1", tracker_port).summary()
            if any("loopback" in str(q) for q in summary.get("queue_info", {})):
                break
        except Exception:
            pass
        time.sleep(0.5)
    yield f"127.0.0.1:{tracker_port}"
    for p in procs:  # the server forks workers: end the whole process group
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(timeout=30)


def test_profile_over_rpc_loopback(rpc_device, tmp_path):
    out = tmp_path / "remote.json"
    target = json.dumps(host_llvm_target(1))
    cmd = [
        sys.executable,
        "-m",
        "codesign",
        "profile",
        "--space",
        "tiny",
        "--target",
        target,
        "--rpc-tracker",
        rpc_device,
        "--rpc-key",
        "loopback",
        "--representatives",
        "0",
        "--max-workloads",
        "3",
        "--calibration-models",
        "1",
        "-o",
        str(out),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    profile = load_profile(out).profile
    assert profile.device.name == f"rpc:loopback@{rpc_device}"
    assert len(profile.measurements) == 3
    assert all(r["status"] == "ok" for m in profile.measurements for r in m["results"])
    assert len(profile.models) == 1 and profile.models[0]["status"] == "ok"

    dead = cmd.copy()
    dead[dead.index("--rpc-tracker") + 1] = f"127.0.0.1:{free_port()}"  # nothing listens there
    dead[dead.index("-o") + 1] = str(tmp_path / "x.json")
    unreachable = subprocess.run(dead, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert unreachable.returncode == 1 and "cannot reach a device" in unreachable.stderr
    assert len(unreachable.stderr.strip().splitlines()) == 1


def test_export_times_the_artifact_over_rpc(rpc_device, fmnist_splits, tmp_path):
    from codesign.export.pipeline import export_subnet
    from codesign.profile.session import RPCConfig
    from codesign.profile.shipped import resolve_profile
    from codesign.space import Genome
    from codesign.supernet import load_supernet

    loaded = load_supernet()
    profile = resolve_profile(host_llvm_target(), None, allow_mismatch=True).profile
    result = export_subnet(
        loaded=loaded,
        genome=Genome.smallest(loaded.supernet.space),
        splits=fmnist_splits,
        out_dir=tmp_path / "a",
        parity_images=8,
        evaluate_test=False,
        profile=profile,
        rpc=RPCConfig(rpc_device, "loopback"),
    )
    measured = result.manifest["tvm"]["latency"]["measured"]
    assert measured["where"] == f"rpc:loopback@{rpc_device}, batch 1"
    assert measured["median_ms"] > 0 and measured["repeats"] == 20
