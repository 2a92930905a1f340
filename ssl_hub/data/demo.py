"""The demo set shipped in the package: a class-balanced subset of Fashion-MNIST, so the quick start runs offline.

Built by ``benchmarks/make_demo_set.py``; see ``ssl_hub/data/demo_set/README.md`` for its licence and contents.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

from ssl_hub.data.fashion_mnist import FASHION_MNIST_CLASSES
from ssl_hub.data.sources import ArrayImageDataset

DEMO_FILE = "fashion_mnist_demo.npz"
DEMO_NAME = "Fashion-MNIST demo subset (ssl_hub)"
DEMO_HUB_ID = "zalando-datasets/fashion_mnist"


def load_demo(split: str = "train") -> ArrayImageDataset:
    """The demo set's ``"train"`` (300 images per class) or ``"test"`` (100 per class) split."""
    if split not in ("train", "test"):
        raise ValueError(f"The demo set has splits 'train' and 'test', got {split!r}.")
    with resources.as_file(resources.files("ssl_hub.data") / "demo_set" / DEMO_FILE) as path, np.load(path) as arrays:
        return ArrayImageDataset(arrays[f"{split}_images"], arrays[f"{split}_labels"], FASHION_MNIST_CLASSES)
