"""Augmentation time per image of each method's transform against LightlySSL's, in one run.

    python benchmarks/transform_time.py --image-size 224 [--lightly] [--methods simclr dino ...]

The data pipeline's cost, which bounds a multi-crop run once the accelerator is fast enough: DataLoader workers run
each decoded image through the method's transform (image -> list of views), one torch thread each. For every method,
the same decoded RGB images (PIL, ImageNet's typical 500 x 375, smooth random content; decoding is left out, as it is
the same for every transform) go through ``method.make_transform(image_size)``; with ``--lightly`` (the ``lightly``
package installed), through the transform of LightlySSL's implementation too (benchmarks/lightly_reference.py), the
two alternating pass by pass so that drift in machine load hits both alike. Reports the median over passes of the
time per image, the views per image and the pixels of those views (the work their augmentations scale with). Prints a
markdown table.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

import ssl_hub

sys.path.insert(0, str(Path(__file__).parent))  # lightly_reference.py, next to this script


def source_images(count: int, width: int, height: int) -> list[Image.Image]:
    """``count`` RGB images of ``width`` x ``height`` px: random colours at 1/16 of the size, resized bicubically, so
    that they hold smooth content rather than noise (which no augmentation's cost depends on, but JPEG-like data is
    what workers see)."""
    rng = np.random.default_rng(0)
    small = (max(1, width // 16), max(1, height // 16))
    return [
        Image.fromarray(rng.integers(0, 256, (small[1], small[0], 3), dtype=np.uint8)).resize(
            (width, height), Image.Resampling.BICUBIC
        )
        for _ in range(count)
    ]


def view_pixels(views: Sequence[Any]) -> tuple[int, int]:
    """The number of image views (a view may come with its location grid: VICRegL) and their pixels."""
    tensors = [view for view in views if isinstance(view, torch.Tensor) and view.ndim == 3]
    return len(tensors), sum(view.shape[-2] * view.shape[-1] for view in tensors)


def time_pass(transform: Callable[[Any], Any], images: list[Image.Image]) -> float:
    start = time.perf_counter()
    for image in images:
        transform(image)
    return (time.perf_counter() - start) / len(images)


def backbone_for(name: str, args: argparse.Namespace) -> str:
    """The backbone both implementations of ``name`` are built with: a ViT for the methods that need one."""
    return str(args.vit_backbone if ssl_hub.get_method_class(name).requires_vit else args.backbone)


def reference_transform(name: str, args: argparse.Namespace) -> Callable[[Any], Any] | None:
    """LightlySSL's transform for ``name``; ``None`` when ``--lightly`` is off or LightlySSL lacks the method."""
    if not args.lightly:
        return None
    from lightly_reference import LIGHTLY_METHODS

    if name not in LIGHTLY_METHODS:
        return None
    transform: Callable[[Any], Any] = LIGHTLY_METHODS[name](backbone_for(name, args)).make_transform(
        input_size=args.image_size
    )
    return transform


def benchmark(name: str, images: list[Image.Image], args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    transforms: dict[str, Callable[[Any], Any]] = {
        "ssl_hub": ssl_hub.create_method(name, backbone=backbone_for(name, args)).make_transform(
            input_size=args.image_size
        )
    }
    reference = reference_transform(name, args)
    if reference is not None:
        transforms["lightly"] = reference
    sizes = {key: view_pixels(transform(images[0])) for key, transform in transforms.items()}
    for transform in transforms.values():  # warm-up: first-call costs (imports, caches)
        time_pass(transform, images[: args.warmup])
    times: dict[str, list[float]] = {key: [] for key in transforms}
    for _ in range(args.passes):  # alternating, so that drift in machine load hits both alike
        for key, transform in transforms.items():
            times[key].append(time_pass(transform, images))
    return {key: (1000 * statistics.median(times[key]), *sizes[key]) for key in transforms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="*", default=ssl_hub.list_methods())
    parser.add_argument("--image-size", type=int, default=224, help="the methods' input size (global crops)")
    parser.add_argument("--source-size", type=int, nargs=2, default=(500, 375), metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--images", type=int, default=32, help="images per pass")
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=4, help="images per transform before timing")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--vit-backbone", default="vit_small_patch16_224", help="for the methods that need a ViT")
    parser.add_argument("--lightly", action="store_true", help="also time LightlySSL's transforms (if installed)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in a DataLoader worker
    images = source_images(args.images, *args.source_size)
    print(
        f"{args.image_size} px views of {args.source_size[0]} x {args.source_size[1]} RGB images, one thread, "
        f"CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}, median of {args.passes} "
        f"passes over {args.images} images\n"
    )
    header = "| method | views | megapixels of views | ssl_hub (ms / image) |"
    print(header + (" LightlySSL views | LightlySSL (ms / image) | ssl_hub / LightlySSL |" if args.lightly else ""))
    print("|---" * (header.count("|") - 1 + (3 if args.lightly else 0)) + "|")
    for name in args.methods:
        result = benchmark(name, images, args)
        ms, views, pixels = result["ssl_hub"]
        row = f"| {name} | {views} | {pixels / 1e6:.3f} | {ms:.2f} |"
        if args.lightly:
            lightly = result.get("lightly")
            row += f" {lightly[1]} | {lightly[0]:.2f} | {ms / lightly[0]:.3f} |" if lightly else " n/a | n/a | n/a |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
