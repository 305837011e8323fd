"""Readers for the on-disk formats codesign accepts: IDX (Fashion-MNIST/MNIST), CIFAR-10 python batches, ImageFolder.

Nothing is ever downloaded: each reader takes a directory the user already has.
"""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path

import numpy as np

from codesign.data.dataset import ImageDataset
from codesign.errors import DatasetError

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DEFAULT_FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
_IDX_DTYPES = {0x08: np.uint8}


def _open_maybe_gz(root: Path, stem: str) -> bytes:
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            try:
                return gzip.decompress(candidate.read_bytes()) if candidate.suffix == ".gz" else candidate.read_bytes()
            except (OSError, EOFError) as exc:
                raise DatasetError(f"{candidate}: cannot read ({exc})") from None
    raise DatasetError(
        f"missing {root / stem}[.gz] (expected the IDX files of Fashion-MNIST/MNIST in {root}; "
        "on Debian: apt-get install dataset-fashion-mnist)"
    )


def read_idx(raw: bytes, what: str) -> np.ndarray:
    """Parse an IDX file (the MNIST family's format) into an array; raises on any inconsistency."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DatasetError(f"{what}: not an IDX file (bad magic number)")
    dtype = _IDX_DTYPES.get(raw[2])
    if dtype is None:
        raise DatasetError(f"{what}: unsupported IDX element type 0x{raw[2]:02x}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{what}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape)) if shape else 0
    if len(raw) - header != expected:
        raise DatasetError(
            f"{what}: IDX header promises {expected} bytes of data, file has {len(raw) - header} (truncated?)"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def load_idx_pair(root: Path, prefix: str, classes: tuple[str, ...], name: str) -> ImageDataset:
    """Images and labels of one IDX split (``train`` or ``t10k``)."""
    images = read_idx(_open_maybe_gz(root, f"{prefix}-images-idx3-ubyte"), f"{root}/{prefix}-images")
    labels = read_idx(_open_maybe_gz(root, f"{prefix}-labels-idx1-ubyte"), f"{root}/{prefix}-labels")
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DatasetError(f"{root}: {prefix} images {images.shape} and labels {labels.shape} do not match")
    return ImageDataset(images[..., None].copy(), labels.astype(np.int64), classes, name)


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles CIFAR's python batches while refusing anything but numpy arrays and builtins."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")


def _load_cifar_batch(path: Path) -> dict:
    if not path.is_file():
        raise DatasetError(f"missing CIFAR-10 batch {path} (expected the 'cifar-10-batches-py' folder)")
    try:
        with open(path, "rb") as handle:
            batch = _ArrayOnlyUnpickler(io.BytesIO(handle.read()), encoding="bytes").load()
    except Exception as exc:  # any unpickling failure is a malformed file
        raise DatasetError(f"{path}: not a CIFAR-10 python batch ({exc})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DatasetError(f"{path}: CIFAR-10 batch lacks 'data'/'labels'")
    return batch


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def load_cifar10_split(root: Path, train: bool) -> ImageDataset:
    """CIFAR-10 from its python-pickle folder (``data_batch_1..5`` and ``test_batch``)."""
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    images, labels = [], []
    for n in names:
        batch = _load_cifar_batch(root / n)
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072:
            raise DatasetError(f"{root / n}: expected (N, 3072) image rows, got {data.shape}")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return ImageDataset(
        np.ascontiguousarray(np.concatenate(images)),
        np.concatenate(labels),
        CIFAR10_CLASSES,
        f"cifar10/{'train' if train else 'test'}",
    )


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def load_image_folder(root: Path, image_size: int, channels: int) -> ImageDataset:
    """An ImageFolder tree (``root/<class>/<image>``), resized to ``image_size`` squares."""
    try:
        from PIL import Image
    except ImportError:
        raise DatasetError("reading an ImageFolder needs Pillow: pip install 'codesign[images]'") from None
    if not root.is_dir():
        raise DatasetError(f"ImageFolder root {root} is not a directory")
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    if len(classes) < 2:
        raise DatasetError(f"ImageFolder {root} needs at least two class sub-directories, found {len(classes)}")
    mode = "L" if channels == 1 else "RGB"
    images, labels = [], []
    for label, cls in enumerate(classes):
        for f in sorted((root / cls).iterdir()):
            if f.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(f) as im:
                    arr = np.asarray(
                        im.convert(mode).resize((image_size, image_size), Image.Resampling.BILINEAR), dtype=np.uint8
                    )
            except OSError as exc:
                raise DatasetError(f"{f}: unreadable image ({exc})") from None
            images.append(arr.reshape(image_size, image_size, channels))
            labels.append(label)
    if not images:
        raise DatasetError(f"ImageFolder {root} holds no images ({', '.join(sorted(_IMAGE_SUFFIXES))})")
    return ImageDataset(np.stack(images), np.asarray(labels, dtype=np.int64), classes, f"imagefolder:{root.name}")
