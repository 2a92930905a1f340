"""SimCLR's augmentation (Chen et al., 2020, arXiv:2002.05709, appendix A), built from torchvision.transforms.v2."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torchvision.transforms import v2

from ssl_hub.transforms.multi_view import IMAGENET_NORMALIZE, MultiViewTransform
from ssl_hub.transforms.view import view_augmentation


class SimCLRViewTransform(v2.Compose):
    """One SimCLR view: random resized crop, flips, optional rotation, colour jitter, grayscale, blur.

    Argument names and defaults follow LightlySSL's ``SimCLRViewTransform`` (the paper's ImageNet recipe).

    Args:
        input_size: Side of the output crop in pixels.
        cj_prob: Probability of colour jitter.
        cj_strength: Colour jitter strength ``s``; each factor below is multiplied by it.
        cj_bright: Brightness jitter factor.
        cj_contrast: Contrast jitter factor.
        cj_sat: Saturation jitter factor.
        cj_hue: Hue jitter factor.
        min_scale: Smallest crop area, as a fraction of the image.
        random_gray_scale: Probability of converting to grayscale.
        gaussian_blur: Probability of Gaussian blur.
        kernel_size: Side of a torchvision convolution kernel for the blur; ``None``: Pillow's
            ``GaussianBlur(radius=sigma)`` on PIL images, as the official code (tensors: a kernel of
            :func:`~ssl_hub.transforms.multi_view.blur_kernel_size`).
        sigmas: Range the blur's standard deviation is drawn from.
        vf_prob: Probability of a vertical flip.
        hf_prob: Probability of a horizontal flip.
        rr_prob: Probability of a rotation.
        rr_degrees: Rotation range in degrees; ``None`` rotates by exactly 90 degrees.
        normalize: ``{"mean", "std"}`` to normalise with, or ``None``.
        interpolation: Resampling of the random resized crop: ``"bicubic"``, ``"bilinear"`` or ``"nearest"``.
    """

    def __init__(
        self,
        input_size: int = 224,
        cj_prob: float = 0.8,
        cj_strength: float = 1.0,
        cj_bright: float = 0.8,
        cj_contrast: float = 0.8,
        cj_sat: float = 0.8,
        cj_hue: float = 0.2,
        min_scale: float = 0.08,
        random_gray_scale: float = 0.2,
        gaussian_blur: float = 0.5,
        kernel_size: int | None = None,
        sigmas: Sequence[float] = (0.1, 2.0),
        vf_prob: float = 0.0,
        hf_prob: float = 0.5,
        rr_prob: float = 0.0,
        rr_degrees: float | Sequence[float] | None = None,
        normalize: dict[str, tuple[float, ...]] | None = IMAGENET_NORMALIZE,
        interpolation: str = "bicubic",
    ) -> None:
        super().__init__(
            view_augmentation(
                type(self).__name__,
                input_size=input_size,
                cj_prob=cj_prob,
                cj_strength=cj_strength,
                cj_bright=cj_bright,
                cj_contrast=cj_contrast,
                cj_sat=cj_sat,
                cj_hue=cj_hue,
                min_scale=min_scale,
                random_gray_scale=random_gray_scale,
                gaussian_blur=gaussian_blur,
                kernel_size=kernel_size,
                sigmas=sigmas,
                solarization_prob=0.0,
                vf_prob=vf_prob,
                hf_prob=hf_prob,
                rr_prob=rr_prob,
                rr_degrees=rr_degrees,
                normalize=normalize,
                interpolation=interpolation,
            )
        )


class SimCLRTransform(MultiViewTransform):
    """Two SimCLR views of one image.

    Args:
        input_size: Side of each view in pixels.
        **view_kwargs: Any argument of :class:`SimCLRViewTransform` (same names and defaults).
    """

    def __init__(self, input_size: int = 224, **view_kwargs: Any) -> None:
        view = SimCLRViewTransform(input_size=input_size, **view_kwargs)
        normalize = view_kwargs.get("normalize", IMAGENET_NORMALIZE)
        super().__init__([view, view], input_size=input_size, normalize=normalize)
