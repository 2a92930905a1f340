"""Build ssl_hub/data/demo_set/fashion_mnist_demo.npz: a class-balanced Fashion-MNIST subset shipped in the package.

    python benchmarks/make_demo_set.py --fashion-mnist ../shared/data/fashion-mnist

300 training and 100 test images per class, drawn with a fixed seed from the official train / test splits.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ssl_hub.data.fashion_mnist import read_fashion_mnist

PER_CLASS = {"train": 300, "test": 100}


def balanced_subset(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    chosen = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)]
    return np.sort(np.concatenate(chosen))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fashion-mnist", required=True, help="folder with the four Fashion-MNIST IDX files")
    parser.add_argument("--output", default=Path(__file__).parents[1] / "ssl_hub/data/demo_set/fashion_mnist_demo.npz")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    arrays = {}
    for split, per_class in PER_CLASS.items():
        images, labels = read_fashion_mnist(args.fashion_mnist, split)
        keep = balanced_subset(labels, per_class, rng)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images[keep], labels[keep]
    np.savez_compressed(args.output, **arrays)
    print(f"wrote {args.output} ({Path(args.output).stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
