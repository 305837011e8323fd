import gzip
import pickle

import numpy as np
import pytest

from codesign.data import load_splits
from codesign.data.formats import load_cifar10_split, load_image_folder, read_idx
from codesign.errors import DatasetError


def test_fashion_mnist_splits(fmnist_splits):
    s = fmnist_splits
    assert len(s.train) == 55000 and len(s.val) == 5000 and len(s.test) == 10000
    assert s.train.images.shape[1:] == (28, 28, 1) and len(s.train.classes) == 10
    assert np.bincount(s.test.labels).tolist() == [1000] * 10
    assert 0.2 < s.mean[0] < 0.4 and 0.3 < s.std[0] < 0.4


def test_validation_split_is_disjoint_and_seeded(fmnist_root):
    a = load_splits("fashion-mnist", fmnist_root, val_size=1000, seed=3)
    b = load_splits("fashion-mnist", fmnist_root, val_size=1000, seed=3)
    assert np.array_equal(a.val.images, b.val.images)
    train_rows = {x.tobytes() for x in a.train.images[:20000]}
    assert sum(x.tobytes() in train_rows for x in a.val.images[:200]) < 5  # (FMNIST has a few duplicate images)


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_missing_and_truncated_idx(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_splits("fashion-mnist", tmp_path / "nope")
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte"):
        load_splits("fashion-mnist", tmp_path)
    rng = np.random.default_rng(0)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (50, 28, 28)))
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, (50,)))
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 255, (10, 28, 28)))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, (10,)))
    assert len(load_splits("fashion-mnist", tmp_path, val_size=10).train) == 40
    raw = gzip.decompress((tmp_path / "t10k-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DatasetError, match="truncated"):
        load_splits("fashion-mnist", tmp_path, val_size=10)
    with pytest.raises(DatasetError, match="magic"):
        read_idx(b"\x01\x02\x03\x04", "x")


def _write_cifar(root, n_per_batch=20):
    rng = np.random.default_rng(0)
    root.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 255, (n_per_batch, 3072)).astype(np.uint8),
            b"labels": rng.integers(0, 10, n_per_batch).tolist(),
        }
        (root / name).write_bytes(pickle.dumps(batch))


def test_cifar10_python_batches(tmp_path):
    _write_cifar(tmp_path / "c10")
    train = load_cifar10_split(tmp_path / "c10", True)
    assert train.images.shape == (100, 32, 32, 3)
    splits = load_splits("cifar10", tmp_path / "c10", val_size=10)
    assert len(splits.test) == 20 and splits.train.channels == 3


def test_cifar_loader_refuses_arbitrary_pickles(tmp_path):
    _write_cifar(tmp_path / "c10")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "c10" / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(DatasetError, match="refusing"):
        load_cifar10_split(tmp_path / "c10", False)
    with pytest.raises(DatasetError, match="cifar-10-batches-py"):
        load_cifar10_split(tmp_path / "missing", False)


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for i in range(6):
                Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(d / f"{i}.png")
    splits = load_splits("imagefolder", tmp_path, val_size=2, image_size=16, channels=3)
    assert splits.test.images.shape == (12, 16, 16, 3) and splits.train.classes == ("cat", "dog")
    (tmp_path / "train" / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="unreadable"):
        load_image_folder(tmp_path / "train", 16, 3)
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_splits("mnist-from-the-internet", tmp_path)
