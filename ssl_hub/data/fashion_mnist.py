"""Fashion-MNIST (Xiao et al., 2017, arXiv:1708.07747; MIT licence) read from its four IDX files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ssl_hub.data.sources import ArrayImageDataset

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
_FILES = {"train": "train", "test": "t10k"}


def read_fashion_mnist(root: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Read one split as ``(images (N, 28, 28) uint8, labels (N,) uint8)``.

    Args:
        root: Folder with ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` (e.g. Debian's
            ``/usr/share/datasets/fashion-mnist``).
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
    """
    if split not in _FILES:
        raise ValueError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}.")
    prefix = Path(root).expanduser() / _FILES[split]

    def read(kind: str, header_bytes: int) -> np.ndarray:
        for path in (Path(f"{prefix}-{kind}-ubyte.gz"), Path(f"{prefix}-{kind}-ubyte")):
            if path.is_file():
                data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
                return np.frombuffer(data, dtype=np.uint8, offset=header_bytes)
        raise FileNotFoundError(f"Fashion-MNIST file {prefix}-{kind}-ubyte(.gz) not found.")

    images = read("images-idx3", 16).reshape(-1, 28, 28)
    labels = read("labels-idx1", 8)
    if len(images) != len(labels):
        raise ValueError(f"Fashion-MNIST {split}: {len(images)} images but {len(labels)} labels (truncated file?).")
    return images, labels


def fashion_mnist(root: str | Path, split: str = "train") -> ArrayImageDataset:
    """One split of Fashion-MNIST as a dataset of ``(RGB image, label)``."""
    images, labels = read_fashion_mnist(root, split)
    return ArrayImageDataset(images, labels, FASHION_MNIST_CLASSES)
