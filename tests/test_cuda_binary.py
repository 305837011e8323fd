"""CUDA libraries with compiled kernels: the packed import tree rewrite, and a real nvcc build (no GPU needed)."""

import shutil
import struct

import pytest

from codesign.compiler.cuda_binary import (
    COMPILED_FORMAT,
    CudaPayload,
    PackedImports,
    PackedModule,
    compile_packed_cuda,
    complete_cuda_target,
    cuda_arch,
)
from codesign.errors import CodesignError


def _string(value: bytes) -> bytes:
    return struct.pack("<Q", len(value)) + value


def _blob(payload: bytes) -> bytes:
    tree = PackedImports(
        [0, 1, 2, 2],
        [1, 2],
        [PackedModule("relax.VMExecutable", b"exec"), PackedModule("_lib", None), PackedModule("cuda", payload)],
    )
    return tree.to_bytes()


FUNCTION_TABLE = b"\x01\x00\x00\x00\x00\x00\x00\x00" + _string(b"kernel0") + b"\x03\x00\x00\x00\x00\x00\x00\x00"
SOURCE = b'extern "C" __global__ void kernel0(float* x) { x[threadIdx.x] = 1.0f; }\n'


def test_packed_import_tree_roundtrips_and_rewrites_cuda_source():
    payload = _string(b"cuda") + FUNCTION_TABLE + _string(SOURCE)
    blob = _blob(payload)
    parsed = PackedImports.parse(blob)
    assert parsed.to_bytes() == blob
    assert [m.kind for m in parsed.modules] == ["relax.VMExecutable", "_lib", "cuda"]
    seen = []
    rewritten, count = compile_packed_cuda(blob, lambda src: seen.append(src) or b"FATBIN-BYTES")
    assert count == 1 and seen == [SOURCE.decode()]
    cuda = PackedImports.parse(rewritten).modules[2]
    new = CudaPayload.parse(cuda.payload)
    assert (new.fmt, new.function_table, new.data) == (COMPILED_FORMAT, FUNCTION_TABLE, b"FATBIN-BYTES")
    assert PackedImports.parse(rewritten).modules[0].payload == b"exec"
    again, count = compile_packed_cuda(rewritten, lambda src: pytest.fail("compiled twice"))
    assert count == 0 and again == rewritten


def test_corrupt_blobs_are_rejected():
    blob = _blob(_string(b"cuda") + FUNCTION_TABLE + _string(SOURCE))
    with pytest.raises(ValueError):
        PackedImports.parse(blob[:-5])
    with pytest.raises(ValueError):
        CudaPayload.parse(_string(b"cuda") + b"\x00\x01")


def test_cuda_targets_are_completed_and_checked():
    target = complete_cuda_target({"kind": "cuda", "arch": "sm_89"})
    assert target["arch"] == "sm_89" and target["max_threads_per_block"] == 1024
    assert complete_cuda_target()["arch"] == "sm_90"
    assert cuda_arch(target) == "sm_89"
    with pytest.raises(CodesignError, match="arch"):
        cuda_arch({"kind": "cuda"})
    with pytest.raises(CodesignError, match="not a cuda target"):
        complete_cuda_target({"kind": "llvm"})


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs the CUDA toolkit's nvcc (no GPU needed)")
def test_exported_cuda_library_holds_fatbin_not_source(tmp_path):
    import tvm
    from tvm.script import relax as R

    from codesign.compiler.cuda_binary import export_library_with_compiled_cuda, library_import_tree

    @tvm.script.ir_module
    class Module:
        @R.function
        def main(x: R.Tensor((1, 64), "float32"), w: R.Tensor((64, 32), "float32")):
            with R.dataflow():
                y = R.nn.relu(R.matmul(x, w))
                R.output(y)
            return y

    executable = tvm.compile(Module, target=tvm.target.Target(complete_cuda_target()))
    path = tmp_path / "m.so"
    assert export_library_with_compiled_cuda(executable, path, "sm_90") == 1
    modules = library_import_tree(path).modules
    cuda = [CudaPayload.parse(m.payload) for m in modules if m.kind == "cuda"]
    assert len(cuda) == 1 and cuda[0].fmt == "fatbin"
    assert cuda[0].data[:4] == bytes.fromhex("50ed55ba")  # fatbin magic, not CUDA C
    assert b"__global__" not in cuda[0].data


def _fake_nvidia_smi(folder, monkeypatch, script: str) -> None:
    smi = folder / "nvidia-smi"
    smi.write_text("#!/bin/sh\n" + script + "\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:/usr/bin:/bin")


def test_cuda_target_is_the_local_gpus_and_another_gpus_profile_is_not_used_silently(tmp_path, monkeypatch):
    import json

    from codesign.cli.search import resolve_target
    from codesign.compiler.cuda_binary import local_cuda_arch
    from codesign.profile import shipped
    from codesign.profile.profile_file import ProfileError

    _fake_nvidia_smi(tmp_path, monkeypatch, 'echo "8.0"')  # an A100
    assert local_cuda_arch() == "sm_80"
    assert resolve_target("cuda") == {"kind": "cuda", "arch": "sm_80"}
    assert complete_cuda_target({"kind": "cuda"})["arch"] == "sm_80"
    assert complete_cuda_target({"kind": "cuda", "arch": "sm_90"})["arch"] == "sm_90"  # a given arch wins
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "cuda-sm90-h200.json").write_text(json.dumps({"target": {"kind": "cuda", "arch": "sm_90"}}))
    monkeypatch.setattr(shipped, "shipped_profiles_dir", lambda: profiles)
    with pytest.raises(ProfileError, match=r"no shipped profile was measured for this GPU \(sm_80\)"):
        shipped.find_shipped_profile(resolve_target("cuda"))
    assert shipped.find_shipped_profile(resolve_target("cuda"), allow_mismatch=True).name == "cuda-sm90-h200.json"


def test_a_build_machine_without_a_gpu_builds_for_hopper(tmp_path, monkeypatch):
    from codesign.cli.search import resolve_target
    from codesign.compiler.cuda_binary import local_cuda_arch

    _fake_nvidia_smi(tmp_path, monkeypatch, 'echo "NVIDIA-SMI has failed" >&2; exit 9')  # driver present, no GPU
    assert local_cuda_arch() is None
    assert resolve_target("cuda") == {"kind": "cuda"}
    assert complete_cuda_target({"kind": "cuda"})["arch"] == "sm_90"
