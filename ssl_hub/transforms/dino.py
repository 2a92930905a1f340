"""DINO's multi-crop augmentation (Caron et al., 2021, arXiv:2104.14294, appendix and official ``main_dino.py``)."""

from __future__ import annotations

from collections.abc import Sequence

from torchvision.transforms import v2

from ssl_hub._validation import check_positive_int
from ssl_hub.transforms.multi_crop import local_crop_size as scaled_local_crop_size
from ssl_hub.transforms.multi_view import IMAGENET_NORMALIZE, MultiViewTransform
from ssl_hub.transforms.view import view_augmentation


class DINOTransform(MultiViewTransform):
    """2 global crops and ``n_local_views`` smaller local crops of one image, as DINO trains on.

    The first global crop is always blurred, the second rarely blurred and sometimes solarized, the local crops
    blurred half of the time (BYOL's asymmetric recipe). Argument names and defaults follow LightlySSL's
    ``DINOTransform`` (the official recipe: colour jitter 0.4 / 0.4 / 0.2 / 0.1 with probability 0.8).

    Args:
        global_crop_size: Side of the global crops in pixels.
        global_crop_scale: Range of the global crops' area, as fractions of the image.
        local_crop_size: Side of the local crops; ``None`` for ``round(global_crop_size * 96 / 224)`` (96 px at
            224 px, the paper's sizes).
        local_crop_scale: Range of the local crops' area, as fractions of the image.
        n_local_views: Number of local crops.
        hf_prob: Probability of a horizontal flip.
        vf_prob: Probability of a vertical flip.
        rr_prob: Probability of a rotation.
        rr_degrees: Rotation range in degrees; ``None`` rotates by exactly 90 degrees.
        cj_prob: Probability of colour jitter.
        cj_strength: Multiplier of the four jitter factors.
        cj_bright: Brightness jitter factor.
        cj_contrast: Contrast jitter factor.
        cj_sat: Saturation jitter factor.
        cj_hue: Hue jitter factor.
        random_gray_scale: Probability of converting to grayscale.
        gaussian_blur: Blur probabilities of (first global crop, second global crop, local crops).
        kernel_size: Side of a torchvision convolution kernel for the blur; ``None``: Pillow's
            ``GaussianBlur(radius=sigma)`` on PIL images, as the official code (tensors: a kernel of
            :func:`~ssl_hub.transforms.multi_view.blur_kernel_size`).
        sigmas: Range of the blur's standard deviation.
        solarization_prob: Probability of solarizing the second global crop.
        normalize: ``{"mean", "std"}`` to normalise with, or ``None``.
        interpolation: Resampling of the random resized crop: ``"bicubic"``, ``"bilinear"`` or ``"nearest"``.
        input_size: Overrides ``global_crop_size`` (what ``method.make_transform(input_size)`` passes).
    """

    def __init__(
        self,
        global_crop_size: int = 224,
        global_crop_scale: tuple[float, float] = (0.4, 1.0),
        local_crop_size: int | None = None,
        local_crop_scale: tuple[float, float] = (0.05, 0.4),
        n_local_views: int = 6,
        hf_prob: float = 0.5,
        vf_prob: float = 0.0,
        rr_prob: float = 0.0,
        rr_degrees: float | Sequence[float] | None = None,
        cj_prob: float = 0.8,
        cj_strength: float = 0.5,
        cj_bright: float = 0.8,
        cj_contrast: float = 0.8,
        cj_sat: float = 0.4,
        cj_hue: float = 0.2,
        random_gray_scale: float = 0.2,
        gaussian_blur: tuple[float, float, float] = (1.0, 0.1, 0.5),
        kernel_size: int | None = None,
        sigmas: tuple[float, float] = (0.1, 2.0),
        solarization_prob: float = 0.2,
        normalize: dict[str, tuple[float, ...]] | None = IMAGENET_NORMALIZE,
        interpolation: str = "bicubic",
        input_size: int | None = None,
    ) -> None:
        check_positive_int("n_local_views", n_local_views, type(self).__name__, minimum=0)
        if len(gaussian_blur) != 3:
            raise ValueError(
                f"DINOTransform: gaussian_blur takes 3 probabilities (global crop 1, global crop 2, local crops), "
                f"got {gaussian_blur!r}."
            )
        global_size = input_size if input_size is not None else global_crop_size
        local_size = local_crop_size if local_crop_size is not None else scaled_local_crop_size(global_size)

        def view(size: int, scale: tuple[float, float], blur: float, solarize: float) -> v2.Compose:
            return v2.Compose(
                view_augmentation(
                    type(self).__name__,
                    input_size=size,
                    cj_prob=cj_prob,
                    cj_strength=cj_strength,
                    cj_bright=cj_bright,
                    cj_contrast=cj_contrast,
                    cj_sat=cj_sat,
                    cj_hue=cj_hue,
                    min_scale=scale[0],
                    max_scale=scale[1],
                    random_gray_scale=random_gray_scale,
                    gaussian_blur=blur,
                    kernel_size=kernel_size,
                    sigmas=sigmas,
                    solarization_prob=solarize,
                    vf_prob=vf_prob,
                    hf_prob=hf_prob,
                    rr_prob=rr_prob,
                    rr_degrees=rr_degrees,
                    normalize=normalize,
                    interpolation=interpolation,
                )
            )

        global_1 = view(global_size, global_crop_scale, gaussian_blur[0], 0.0)
        global_2 = view(global_size, global_crop_scale, gaussian_blur[1], solarization_prob)
        local = view(local_size, local_crop_scale, gaussian_blur[2], 0.0)
        super().__init__([global_1, global_2, *[local] * n_local_views], input_size=global_size, normalize=normalize)
