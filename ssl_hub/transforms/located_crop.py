"""Views that remember where they came from: a random resized crop and flip that also returns its location in the
image, for methods matching the locations of two views' feature maps (VICRegL, Bardes, Ponce, LeCun, NeurIPS 2022,
arXiv:2210.01571)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ssl_hub._validation import check_positive_int, check_probability
from ssl_hub.transforms.view import crop_interpolation

# A view's location: (5,) = top, left, height, width of its crop in pixels of the image, and 1.0 if flipped else 0.0.
LOCATION_SIZE = 5


class RandomResizedCropAndFlip:
    """torchvision's random resized crop, then a random horizontal flip, returning ``(view, location)``.

    ``location`` is a float ``(5,)`` tensor: the crop's top, left, height and width in pixels of the input image, and
    whether the view was flipped (1.0) or not (0.0). :func:`~ssl_hub.modules.location_grid` turns it into the image
    coordinates of each cell of a feature map of the view. Name as LightlySSL's ``RandomResizedCropAndFlip``.

    Args:
        size: Side of the output view in pixels.
        scale: Range of the crop's area, as a fraction of the image's.
        ratio: Range of the crop's aspect ratio.
        hf_prob: Probability of a horizontal flip.
        interpolation: Resampling: ``"bicubic"``, ``"bilinear"`` or ``"nearest"``.
    """

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hf_prob: float = 0.5,
        interpolation: str = "bicubic",
    ) -> None:
        owner = type(self).__name__
        check_positive_int("size", size, owner)
        for value in scale:
            check_probability("scale", value, owner)
        if scale[0] > scale[1]:
            raise ValueError(f"{owner}: scale must be (min, max), got {scale}.")
        check_probability("hf_prob", hf_prob, owner)
        self.crop = v2.RandomResizedCrop(
            size, scale=scale, ratio=ratio, interpolation=crop_interpolation(interpolation, owner), antialias=True
        )
        self.hf_prob = hf_prob

    def __call__(self, image: Any) -> tuple[Any, torch.Tensor]:
        box = self.crop.make_params([image])  # {"top", "left", "height", "width"} in pixels of the image
        view = F.resized_crop(
            image, **box, size=list(self.crop.size), interpolation=self.crop.interpolation, antialias=True
        )
        flipped = bool(torch.rand(()) < self.hf_prob)
        if flipped:
            view = F.horizontal_flip(view)
        location = torch.tensor([box["top"], box["left"], box["height"], box["width"], float(flipped)])
        return view, location

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.crop.extra_repr()}, hf_prob={self.hf_prob})"


class LocatedViewTransform:
    """One located view: :class:`RandomResizedCropAndFlip`, then ``augmentation`` on the view; returns
    ``(view, location)``.

    Args:
        crop_and_flip: The geometric step, which also gives the location.
        augmentation: The remaining steps (colour, blur, tensor, normalize), e.g.
            :func:`~ssl_hub.transforms.view.photometric_augmentation`.
    """

    def __init__(self, crop_and_flip: RandomResizedCropAndFlip, augmentation: Sequence[Callable[[Any], Any]]) -> None:
        self.crop_and_flip = crop_and_flip
        self.augmentation = v2.Compose(list(augmentation))

    @property
    def transforms(self) -> list[Callable[[Any], Any]]:
        """Every step in order, as ``v2.Compose.transforms``."""
        return [self.crop_and_flip, *self.augmentation.transforms]

    def __call__(self, image: Any) -> tuple[torch.Tensor, torch.Tensor]:
        view, location = self.crop_and_flip(image)
        tensor: torch.Tensor = self.augmentation(view)
        return tensor, location

    def __repr__(self) -> str:
        return f"{type(self).__name__}(\n" + "\n".join(f"    {step!r}" for step in self.transforms) + "\n)"
