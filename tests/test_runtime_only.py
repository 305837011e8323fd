"""Artifacts run with the TVM runtime alone: tvm_ffi + libtvm_runtime.so, never the compiler package."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest


@pytest.fixture(scope="module")
def cpu_library(tmp_path_factory):
    import tvm
    from tvm.script import relax as R

    weight = np.random.default_rng(0).standard_normal((64, 10)).astype("float32")

    @tvm.script.ir_module
    class Module:
        @R.function
        def main(x: R.Tensor((1, 64), "float32")):
            with R.dataflow():
                y = R.nn.relu(R.matmul(x, R.const(weight)))
                R.output(y)
            return y

    path = tmp_path_factory.mktemp("rt") / "model_tvm.so"
    tvm.compile(Module, target=tvm.target.Target({"kind": "llvm"})).export_library(str(path))
    return path, weight


def test_compiled_model_runs_without_importing_tvm(cpu_library):
    path, weight = cpu_library
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from codesign.runtime import CompiledModel
        x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)
        model = CompiledModel({str(path)!r})
        y = model(x)
        times = model.time(x, repeat=5, min_repeat_ms=1)
        assert len(times) == 5 and min(times) > 0, times
        assert "tvm" not in sys.modules and not any(m.startswith("tvm.") for m in sys.modules), "compiler imported"
        np.save(sys.argv[1], y)
        """
    )
    out = path.with_name("y.npy")
    subprocess.run([sys.executable, "-c", script, str(out)], check=True, timeout=300)
    x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)
    np.testing.assert_allclose(np.load(out), np.maximum(x @ weight, 0), rtol=1e-5, atol=1e-5)


def test_windows_of_several_models_alternate():
    """A slow spell of the machine falls on every model timed together, not on whichever was being timed."""
    from codesign.runtime import time_interleaved

    calls = []

    class Model:
        def __init__(self, name):
            self.name = name

        def window_timer(self, images, *, window_ms):
            def window():
                calls.append(self.name)
                return float(len(calls))

            return window

    samples = time_interleaved([Model("a"), Model("b")], [np.zeros(1), np.zeros(1)], windows=3, window_ms=5)
    assert calls == ["a", "b"] * 3
    assert samples == [[1.0, 3.0, 5.0], [2.0, 4.0, 6.0]]
    with pytest.raises(ValueError, match="one input per model"):
        time_interleaved([Model("a")], [], windows=1)


def test_timing_command_times_several_libraries_in_one_process(cpu_library, tmp_path):
    import json

    import tvm
    from tvm.script import relax as R

    path, _ = cpu_library
    heavy_weight = np.random.default_rng(1).standard_normal((512, 512)).astype("float32")

    @tvm.script.ir_module
    class Heavy:
        @R.function
        def main(x: R.Tensor((1, 512), "float32")):
            with R.dataflow():
                y = R.matmul(R.matmul(x, R.const(heavy_weight)), R.const(heavy_weight))
                R.output(y)
            return y

    heavy = tmp_path / "heavy.so"
    tvm.compile(Heavy, target=tvm.target.Target({"kind": "llvm"})).export_library(str(heavy))
    command = [sys.executable, "-m", "codesign.runtime", str(path), str(heavy), "--shape", "1,64"]
    done = subprocess.run(
        [*command, "--shape", "1,512", "--repeat", "4", "--min-repeat-ms", "5"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    light_ms, heavy_ms = (timed["samples_ms"] for timed in result["libraries"])
    assert result["samples_ms"] == light_ms and len(light_ms) == len(heavy_ms) == 4
    assert 0 < max(light_ms) < min(heavy_ms)
    wrong = subprocess.run(
        [*command, "--shape", "1,512", "--shape", "1,8"], capture_output=True, text=True, timeout=300
    )
    assert wrong.returncode == 2 and "need one --shape or 2, got 3" in wrong.stderr


def test_device_tensors_keep_scalars_and_round_trip():
    from codesign.runtime import DeviceTensors, load_runtime, tensor_to_numpy

    tensors = DeviceTensors(load_runtime(), "cpu")
    scalar = tensors(np.float32(2.5).reshape(()))
    assert tuple(scalar.shape) == () and float(tensor_to_numpy(scalar)) == 2.5
    strided = np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2]
    np.testing.assert_array_equal(tensor_to_numpy(tensors(strided)), strided)
    assert np.isnan(tensor_to_numpy(tensors.poisoned((3, 2), "float32"))).all()


def test_missing_runtime_library_is_a_clear_error(tmp_path, monkeypatch):
    from codesign import runtime

    monkeypatch.setattr(runtime.importlib.util, "find_spec", lambda name: None)
    monkeypatch.delenv("CODESIGN_TVM_LIBRARY_DIR", raising=False)
    with pytest.raises(runtime.RuntimeUnavailable, match="CODESIGN_TVM_LIBRARY_DIR"):
        runtime.runtime_library_dir(tmp_path)
