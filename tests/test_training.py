import os
import signal
import subprocess
import sys
import time

import torch

from codesign.supernet import ElasticSupernet, load_supernet
from codesign.supernet.weights import state_dict_equal
from codesign.training import SupernetTrainer, TrainConfig
from codesign.training.checkpoint import CHECKPOINT_FILENAME

# Resume tolerance: exact. Every random draw derives from (seed, step) and the checkpoint holds the
# full model and optimizer state, so with the same thread count the resumed run is bit-identical.
CONFIG = TrainConfig(
    epochs_full=1,
    epochs_sandwich=1,
    batch_size=64,
    max_train_images=512,
    warmup_steps=3,
    checkpoint_every_steps=3,
    eval_images=200,
)


def _trainer(space, splits, out):
    torch.manual_seed(CONFIG.seed)
    return SupernetTrainer(ElasticSupernet(space), splits, CONFIG, out, progress=False)


def test_resume_ends_where_an_uninterrupted_run_ends(tiny_space, fmnist_splits, tmp_path):
    full = _trainer(tiny_space, fmnist_splits, tmp_path / "full")
    summary = full.run()
    assert summary["finished"] and len(summary["history"]) == 2

    first = _trainer(tiny_space, fmnist_splits, tmp_path / "split")
    partial = first.run(stop_after_steps=11)  # stops mid-sandwich-phase, after the channel reorganisation
    assert not partial["finished"] and (tmp_path / "split" / CHECKPOINT_FILENAME).exists()
    assert not (tmp_path / "split" / "supernet.safetensors").exists()
    resumed = _trainer(tiny_space, fmnist_splits, tmp_path / "split").run()

    def strip(history):
        return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in history]

    assert resumed["finished"] and strip(resumed["history"]) == strip(summary["history"])
    a = load_supernet(tmp_path / "full").supernet.state_dict()
    b = load_supernet(tmp_path / "split").supernet.state_dict()
    assert state_dict_equal(a, b)


def test_training_learns(tiny_space, fmnist_splits, tmp_path):
    summary = _trainer(tiny_space, fmnist_splits, tmp_path / "run").run()
    assert summary["history"][-1]["val_largest"] > 0.25  # 10 classes: chance is 0.1


def test_changed_options_refuse_to_resume(tiny_space, fmnist_splits, tmp_path):
    import pytest

    from codesign.errors import CheckpointError

    _trainer(tiny_space, fmnist_splits, tmp_path).run(stop_after_steps=2)
    torch.manual_seed(0)
    other = TrainConfig(**{**CONFIG.__dict__, "lr": 1e-2})
    with pytest.raises(CheckpointError, match="different config"):
        SupernetTrainer(ElasticSupernet(tiny_space), fmnist_splits, other, tmp_path, progress=False).run()


def _cli(*args):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return [
        sys.executable,
        "-m",
        "codesign",
        "train",
        "--space",
        "tiny",
        "--epochs-full",
        "1",
        "--epochs-sandwich",
        "1",
        "--batch-size",
        "32",
        "--max-train-images",
        "1024",
        "--checkpoint-every",
        "2",
        "--no-progress",
        *args,
    ], env


def test_killed_cli_run_resumes_without_loss(fmnist_root, tmp_path):
    cmd, env = _cli("-o", str(tmp_path / "ref"))
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600, cwd=tmp_path)

    cmd, env = _cli("-o", str(tmp_path / "killed"))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    ckpt = tmp_path / "killed" / CHECKPOINT_FILENAME
    deadline = time.time() + 300
    while time.time() < deadline and not ckpt.exists():
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "no checkpoint appeared before the kill"
    assert not (tmp_path / "killed" / "supernet.safetensors").exists(), "run finished before it could be killed"
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    a = load_supernet(tmp_path / "ref").supernet.state_dict()
    b = load_supernet(tmp_path / "killed").supernet.state_dict()
    assert state_dict_equal(a, b)


def test_fine_tune_from_an_existing_supernet(fmnist_root, tmp_path):
    cmd, env = _cli("-o", str(tmp_path / "base"))
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600, cwd=tmp_path)
    base = load_supernet(tmp_path / "base").supernet.state_dict()
    cmd, env = _cli("-o", str(tmp_path / "ft"), "--init", str(tmp_path / "base"), "--epochs-full", "0", "--lr", "1e-4")
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600, cwd=tmp_path)
    tuned = load_supernet(tmp_path / "ft").supernet.state_dict()
    assert not state_dict_equal(base, tuned)
    # small learning rate, no channel re-ranking: the fine-tuned weights stay close to where they started
    key = "blocks.0.expand_conv.weight"
    assert torch.allclose(base[key], tuned[key], atol=0.05)
    bad, env = _cli("-o", str(tmp_path / "bad"), "--init", str(tmp_path / "base"), "--space", "fmnist_mbv3")
    result = subprocess.run(bad, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 1 and "was trained on space 'tiny'" in result.stderr
