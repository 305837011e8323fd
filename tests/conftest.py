"""Shared fixtures. Tests use one torch thread each (they may run beside other jobs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from codesign.data import load_splits
from codesign.data.formats import DEFAULT_FASHION_MNIST_ROOT
from codesign.space import get_space

torch.set_num_threads(1)
if os.environ.get("PYTEST_XDIST_WORKER"):
    # beside other workers (pytest -n): one thread for TVM too, inherited by the CLI processes tests start
    os.environ["TVM_NUM_THREADS"] = "1"
    os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(scope="session")
def fmnist_root() -> Path:
    """The real Fashion-MNIST IDX directory (CI installs Debian's dataset-fashion-mnist)."""
    if not (DEFAULT_FASHION_MNIST_ROOT / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"Fashion-MNIST is missing at {DEFAULT_FASHION_MNIST_ROOT}: apt-get install dataset-fashion-mnist")
    return DEFAULT_FASHION_MNIST_ROOT


@pytest.fixture(scope="session")
def fmnist_splits(fmnist_root: Path):
    """Real Fashion-MNIST train/val/test splits."""
    return load_splits("fashion-mnist", fmnist_root, val_size=5000, seed=0)


@pytest.fixture(scope="session")
def default_space():
    return get_space("fmnist_mbv3")


@pytest.fixture(scope="session")
def tiny_space():
    return get_space("tiny")
