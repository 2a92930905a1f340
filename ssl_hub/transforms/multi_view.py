"""Turn one image into a list of views, one transform per view."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision.transforms import v2

IMAGENET_NORMALIZE: dict[str, tuple[float, ...]] = {"mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD}


class MultiViewTransform:
    """Apply each of ``transforms`` to the same image and return the views in that order.

    Args:
        transforms: One callable per view: image -> view tensor (or, for located views, ``(view, location)``,
            which :class:`~ssl_hub.transforms.VICRegLTransform` returns as views then locations).
        input_size: Side of the (largest) view in pixels; recorded as the model's input size when published.
        normalize: ``{"mean": ..., "std": ...}`` the views are normalised with, or ``None``.
    """

    def __init__(
        self,
        transforms: Sequence[Callable[[Any], Any]],
        input_size: int | None = None,
        normalize: dict[str, tuple[float, ...]] | None = None,
    ) -> None:
        if not transforms:
            raise ValueError("MultiViewTransform needs at least one transform.")
        self.transforms = list(transforms)
        self.input_size = input_size
        self.normalize = normalize

    def __call__(self, image: Any) -> list[torch.Tensor]:
        return [transform(image) for transform in self.transforms]

    def __repr__(self) -> str:
        lines = []
        for transform in dict.fromkeys(self.transforms):  # each distinct transform once, with its view indices
            indices = ", ".join(str(i) for i, t in enumerate(self.transforms) if t is transform)
            lines.append(f"  views {indices}: {transform!r}".replace("\n", "\n  "))
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"


def to_normalized_tensor(normalize: dict[str, tuple[float, ...]] | None) -> list[v2.Transform]:
    """The closing steps of every view: float tensor in [0, 1], then ``normalize`` if given."""
    steps: list[v2.Transform] = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if normalize is not None:
        steps.append(v2.Normalize(mean=list(normalize["mean"]), std=list(normalize["std"])))
    return steps


def blur_kernel_size(input_size: int, max_sigma: float = 2.0) -> int:
    """The kernel side of the Gaussian blur of tensor images (PIL images are blurred by Pillow, which needs none):
    odd, 10 % of the image side (SimCLR's rule: 23 px at 224 px), and at least ``6 * max_sigma + 1`` so that a small
    image is blurred by the whole Gaussian of the drawn sigma, as Pillow's ``GaussianBlur(radius=sigma)`` of the
    official code blurs at every size. Below twice the image side, as reflect padding requires."""
    side = max(int(0.1 * input_size), 2 * math.ceil(3 * max_sigma)) // 2 * 2 + 1
    return min(side, 2 * input_size - 1)
