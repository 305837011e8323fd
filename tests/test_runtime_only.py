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
