"""VICRegL's multi-crop views with their locations (Bardes, Ponce, LeCun, NeurIPS 2022, arXiv:2210.01571; official
``transforms.py``, ``MultiCropTrainDataTransform`` with ``return_location_masks``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ssl_hub._validation import check_positive_int
from ssl_hub.transforms.located_crop import LocatedViewTransform, RandomResizedCropAndFlip
from ssl_hub.transforms.multi_crop import check_crop_categories, default_crop_sizes
from ssl_hub.transforms.multi_view import IMAGENET_NORMALIZE, MultiViewTransform
from ssl_hub.transforms.view import photometric_augmentation


class VICRegLTransform(MultiViewTransform):
    """Multi-crop views and where each lies in the image: ``[*views, *locations]``.

    ``crop_counts[i]`` crops of side ``crop_sizes[i]`` per category, the first category the global crops (2 in
    VICRegL). Each view is cropped and flipped by :class:`~ssl_hub.transforms.RandomResizedCropAndFlip`, which gives
    its ``(5,)`` location; the method turns it into the image coordinates of each cell of the view's feature map
    (:func:`~ssl_hub.modules.location_grid`), whatever the backbone's stride. Within each category, crops alternate
    BYOL's first view (always blurred) and second (blurred with probability 0.1, solarized with probability 0.2), as
    the official ``get_color_distortion``. Defaults are the official code's: 2 x 224 px crops of 40-100 % of the image
    and 6 x 96 px of 8-40 %. The official default leaves a flipped view's grid unflipped (``--no-flip-grid 1``); here
    the grid follows the flip. LightlySSL's ``VICRegLTransform`` returns views then grids too, of a fixed grid size.

    Args:
        crop_sizes: Side of the crops of each category in pixels; ``None`` for ``(input_size, round(input_size *
            96 / 224))``, i.e. ``(224, 96)``.
        crop_counts: Number of crops of each category.
        crop_min_scales: Smallest crop area of each category, as a fraction of the image.
        crop_max_scales: Largest crop area of each category, as a fraction of the image.
        hf_prob: Probability of a horizontal flip.
        cj_prob: Probability of colour jitter.
        cj_strength: Multiplier of the four jitter factors.
        cj_bright: Brightness jitter factor.
        cj_contrast: Contrast jitter factor.
        cj_sat: Saturation jitter factor.
        cj_hue: Hue jitter factor.
        random_gray_scale: Probability of converting to grayscale.
        gaussian_blur: Probability of Gaussian blur of the first, third, ... crop of each category and of the others;
            one number for all crops.
        solarization_prob: Probability of solarization of the first, third, ... crop of each category and of the
            others; one number for all crops.
        kernel_size: Side of a torchvision convolution kernel for the blur; ``None``: Pillow's
            ``GaussianBlur(radius=sigma)`` on PIL images, as the official code (tensors: a kernel of
            :func:`~ssl_hub.transforms.multi_view.blur_kernel_size`).
        sigmas: Range of the blur's standard deviation.
        normalize: ``{"mean", "std"}`` to normalise with, or ``None``.
        interpolation: Resampling of the random resized crop: ``"bicubic"``, ``"bilinear"`` or ``"nearest"``.
        input_size: Side of the global crops when ``crop_sizes`` is not given (what ``method.make_transform``
            passes).
    """

    def __init__(
        self,
        crop_sizes: Sequence[int] | None = None,
        crop_counts: Sequence[int] = (2, 6),
        crop_min_scales: Sequence[float] = (0.4, 0.08),
        crop_max_scales: Sequence[float] = (1.0, 0.4),
        hf_prob: float = 0.5,
        cj_prob: float = 0.8,
        cj_strength: float = 1.0,
        cj_bright: float = 0.4,
        cj_contrast: float = 0.4,
        cj_sat: float = 0.2,
        cj_hue: float = 0.1,
        random_gray_scale: float = 0.2,
        gaussian_blur: float | Sequence[float] = (1.0, 0.1),
        solarization_prob: float | Sequence[float] = (0.0, 0.2),
        kernel_size: int | None = None,
        sigmas: tuple[float, float] = (0.1, 2.0),
        normalize: dict[str, tuple[float, ...]] | None = IMAGENET_NORMALIZE,
        interpolation: str = "bicubic",
        input_size: int | None = None,
    ) -> None:
        owner = type(self).__name__
        sizes = tuple(crop_sizes) if crop_sizes is not None else default_crop_sizes(input_size)
        check_crop_categories(
            owner,
            crop_sizes=sizes,
            crop_counts=crop_counts,
            crop_min_scales=crop_min_scales,
            crop_max_scales=crop_max_scales,
        )
        blurs, solarizations = (
            _per_view(owner, name, value)
            for name, value in [("gaussian_blur", gaussian_blur), ("solarization_prob", solarization_prob)]
        )
        views: list[LocatedViewTransform] = []
        for size, count, min_scale, max_scale in zip(sizes, crop_counts, crop_min_scales, crop_max_scales, strict=True):
            check_positive_int("crop_counts", count, owner, minimum=0)
            crop_and_flip = RandomResizedCropAndFlip(
                size, scale=(min_scale, max_scale), hf_prob=hf_prob, interpolation=interpolation
            )
            first, second = (
                LocatedViewTransform(
                    crop_and_flip,
                    photometric_augmentation(
                        owner,
                        input_size=size,
                        cj_prob=cj_prob,
                        cj_strength=cj_strength,
                        cj_bright=cj_bright,
                        cj_contrast=cj_contrast,
                        cj_sat=cj_sat,
                        cj_hue=cj_hue,
                        random_gray_scale=random_gray_scale,
                        gaussian_blur=blur,
                        kernel_size=kernel_size,
                        sigmas=sigmas,
                        solarization_prob=solarization,
                        normalize=normalize,
                    ),
                )
                for blur, solarization in zip(blurs, solarizations, strict=True)
            )
            views.extend(first if index % 2 == 0 else second for index in range(count))
        super().__init__(views, input_size=sizes[0], normalize=normalize)

    def __call__(self, image: Any) -> list[torch.Tensor]:
        located = [view(image) for view in self.transforms]  # (view (C, H, W), location (5,)) each
        return [view for view, _ in located] + [location for _, location in located]


def _per_view(owner: str, name: str, value: float | Sequence[float]) -> tuple[float, float]:
    """``value`` as (first view, second view) probabilities: one number for both, or two."""
    values = (value, value) if isinstance(value, int | float) else tuple(value)
    if len(values) != 2:
        raise ValueError(f"{owner}: {name} takes one probability or two (first view, second view), got {value}.")
    return float(values[0]), float(values[1])
