"""BYOL's asymmetric augmentation (Grill et al., 2020, arXiv:2006.07733, table 6), also used by Barlow Twins."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torchvision.transforms import v2

from ssl_hub.transforms.multi_view import IMAGENET_NORMALIZE, MultiViewTransform
from ssl_hub.transforms.view import view_augmentation


class BYOLView1Transform(v2.Compose):
    """BYOL's first view: always blurred, never solarized. Arguments as LightlySSL's ``BYOLView1Transform``.

    Args:
        input_size: Side of the output crop in pixels.
        cj_prob: Probability of colour jitter.
        cj_strength: Multiplier of the four jitter factors.
        cj_bright: Brightness jitter factor.
        cj_contrast: Contrast jitter factor.
        cj_sat: Saturation jitter factor.
        cj_hue: Hue jitter factor.
        min_scale: Smallest crop area, as a fraction of the image.
        random_gray_scale: Probability of converting to grayscale.
        gaussian_blur: Probability of Gaussian blur.
        solarization_prob: Probability of solarization.
        kernel_size: Side of a torchvision convolution kernel for the blur; ``None``: Pillow's
            ``GaussianBlur(radius=sigma)`` on PIL images, as the official code (tensors: a kernel of
            :func:`~ssl_hub.transforms.multi_view.blur_kernel_size`).
        sigmas: Range of the blur's standard deviation.
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
        cj_bright: float = 0.4,
        cj_contrast: float = 0.4,
        cj_sat: float = 0.2,
        cj_hue: float = 0.1,
        min_scale: float = 0.08,
        random_gray_scale: float = 0.2,
        gaussian_blur: float = 1.0,
        solarization_prob: float = 0.0,
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
                solarization_prob=solarization_prob,
                vf_prob=vf_prob,
                hf_prob=hf_prob,
                rr_prob=rr_prob,
                rr_degrees=rr_degrees,
                normalize=normalize,
                interpolation=interpolation,
            )
        )


class BYOLView2Transform(BYOLView1Transform):
    """BYOL's second view: blurred with probability 0.1, solarized with probability 0.2; other arguments as
    :class:`BYOLView1Transform`."""

    def __init__(
        self, input_size: int = 224, gaussian_blur: float = 0.1, solarization_prob: float = 0.2, **kwargs: Any
    ):
        super().__init__(
            input_size=input_size, gaussian_blur=gaussian_blur, solarization_prob=solarization_prob, **kwargs
        )


class BYOLTransform(MultiViewTransform):
    """The two BYOL views of one image.

    Args:
        input_size: Side of both views, used when a view transform is not given.
        view_1_transform: The first view's transform (default ``BYOLView1Transform(input_size)``).
        view_2_transform: The second view's transform (default ``BYOLView2Transform(input_size)``).
        view_kwargs: Arguments of both default view transforms, on top of each one's own defaults, e.g.
            ``gaussian_blur=0.0`` to switch blur off in both views, as CIFAR-sized recipes do. Not with a given view
            transform: give it its own arguments.
    """

    def __init__(
        self,
        input_size: int = 224,
        view_1_transform: v2.Transform | None = None,
        view_2_transform: v2.Transform | None = None,
        **view_kwargs: Any,
    ) -> None:
        if view_kwargs and (view_1_transform is not None or view_2_transform is not None):
            raise ValueError(
                f"{type(self).__name__}: the view arguments {sorted(view_kwargs)} apply to the default view transforms "
                "only; pass them to the view transforms you give instead."
            )
        view_1 = view_1_transform or BYOLView1Transform(input_size=input_size, **view_kwargs)
        view_2 = view_2_transform or BYOLView2Transform(input_size=input_size, **view_kwargs)
        super().__init__([view_1, view_2], input_size=input_size, normalize=IMAGENET_NORMALIZE)
