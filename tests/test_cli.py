import json

import pytest

from codesign.cli.main import COMMANDS, main
from codesign.testing import run_cli


@pytest.mark.parametrize("command", [c.name for c in COMMANDS])
def test_help_teaches_with_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"codesign {command}" in out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def _one_line_error(result):
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_invalid_genome_is_a_clear_error(tmp_path):
    line = _one_line_error(
        run_cli(
            "export",
            "--genome",
            '{"resolution": 23, "depths": [2,2,2], "kernel_sizes": [3],'
            ' "expand_ratios": [3], "block_prune": [0], "width_prune": [0,0,0]}',
            "-o",
            str(tmp_path / "out"),
        )
    )
    assert "genes" in line or "resolution" in line
    assert not (tmp_path / "out").exists()


def test_corrupt_supernet_is_a_clear_error(tmp_path):
    bad = tmp_path / "supernet.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    line = _one_line_error(run_cli("evaluate", "--supernet", str(bad)))
    assert "safetensors" in line
    line = _one_line_error(run_cli("export", "--supernet", str(tmp_path), "-o", str(tmp_path / "out")))
    assert str(bad) in line and not (tmp_path / "out").exists()


def test_corrupt_training_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "train_state.safetensors").write_bytes(b"truncated")
    line = _one_line_error(run_cli("train", "--space", "tiny", "--max-train-images", "256", "-o", str(tmp_path)))
    assert "corrupt or truncated checkpoint" in line
    assert (tmp_path / "train_state.safetensors").read_bytes() == b"truncated"  # nothing overwritten


def test_missing_dataset_is_a_clear_error(tmp_path):
    line = _one_line_error(run_cli("train", "--data-root", str(tmp_path / "none"), "-o", str(tmp_path / "run")))
    assert "does not exist" in line
    line = _one_line_error(run_cli("train", "--dataset", "cifar10", "-o", str(tmp_path / "run")))
    assert "data-root" in line
    assert not (tmp_path / "run").exists()


def test_unwritable_or_occupied_output_is_refused(tmp_path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    line = _one_line_error(run_cli("export", "--genome", "smallest", "--skip-test-accuracy", "-o", str(occupied)))
    assert "not empty" in line and (occupied / "keep.txt").read_text() == "mine"


def test_export_default_supernet_end_to_end(tmp_path):
    out = tmp_path / "art"
    result = run_cli("export", "--genome", "random:3", "-o", str(out))
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metrics"]["onnx_vs_torch_max_abs"] <= 1e-4
    assert manifest["metrics"]["test_images"] == 10000
    assert manifest["metrics"]["test_accuracy_onnxruntime"] > 0.8
    assert set(manifest["files"]) == {"model.onnx", "subnet.safetensors", "subnet_config.json"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".art.")], "staging directory left behind"


def test_space_command_samples_valid_genomes():
    from codesign.space import Genome, get_space

    result = run_cli("space", "--sample", "3", "--seed", "2")
    assert result.returncode == 0
    space = get_space()
    genomes = [Genome.from_json(line).validate(space) for line in result.stdout.splitlines()]
    assert len(genomes) == 3 and len(set(genomes)) == 3


def test_profiling_cuda_here_points_to_the_bundle_workflow(tmp_path):
    line = _one_line_error(run_cli("profile", "--target", "cuda", "-o", str(tmp_path / "gpu.json")))
    assert "--build-only" in line and "--rpc-tracker" in line
    assert not (tmp_path / "gpu.json").exists()
    line = _one_line_error(run_cli("profile", "--merge", str(tmp_path), "-o", str(tmp_path / "p.json")))
    assert "not a measurement bundle" in line
