"""SimSiam's augmentation (Chen & He, 2021, arXiv:2011.10566 and official ``main_simsiam.py``): MoCo v2's
recipe, i.e. SimCLR's with weaker colour jitter and larger crops, resized bilinearly as torchvision's
``RandomResizedCrop`` in the official code."""

from __future__ import annotations

from typing import Any

from ssl_hub.transforms.multi_view import IMAGENET_NORMALIZE, MultiViewTransform
from ssl_hub.transforms.simclr import SimCLRViewTransform


class SimSiamViewTransform(SimCLRViewTransform):
    """One SimSiam view; arguments and their meaning as :class:`SimCLRViewTransform`, with SimSiam's defaults.

    Args:
        input_size: Side of the output crop in pixels.
        cj_bright: Brightness jitter factor.
        cj_contrast: Contrast jitter factor.
        cj_sat: Saturation jitter factor.
        cj_hue: Hue jitter factor.
        min_scale: Smallest crop area, as a fraction of the image.
        gaussian_blur: Probability of Gaussian blur.
        interpolation: Resampling of the random resized crop. Bilinear, as the official code: with SimCLR's
            bicubic, ResNet-18 on Fashion-MNIST at 32 px reached 67.60 and 72.33 % kNN top-1 in 936 steps (seeds 0
            and 1), with bilinear 74.20 % (seed 0; ``benchmarks/RESULTS.md``).
        **kwargs: Any other argument of :class:`SimCLRViewTransform` (same defaults).
    """

    def __init__(
        self,
        input_size: int = 224,
        cj_bright: float = 0.4,
        cj_contrast: float = 0.4,
        cj_sat: float = 0.4,
        cj_hue: float = 0.1,
        min_scale: float = 0.2,
        gaussian_blur: float = 0.5,
        interpolation: str = "bilinear",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            input_size=input_size,
            cj_bright=cj_bright,
            cj_contrast=cj_contrast,
            cj_sat=cj_sat,
            cj_hue=cj_hue,
            min_scale=min_scale,
            gaussian_blur=gaussian_blur,
            interpolation=interpolation,
            **kwargs,
        )


class SimSiamTransform(MultiViewTransform):
    """Two SimSiam views of one image.

    Args:
        input_size: Side of each view in pixels.
        **view_kwargs: Any argument of :class:`SimSiamViewTransform` (same names and defaults).
    """

    def __init__(self, input_size: int = 224, **view_kwargs: Any) -> None:
        view = SimSiamViewTransform(input_size=input_size, **view_kwargs)
        normalize = view_kwargs.get("normalize", IMAGENET_NORMALIZE)
        super().__init__([view, view], input_size=input_size, normalize=normalize)
