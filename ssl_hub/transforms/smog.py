"""SMoG's multi-crop augmentation (Pang et al., 2022, arXiv:2207.06167), with LightlySSL's ``SMoGTransform`` names."""

from __future__ import annotations

from collections.abc import Sequence

from torchvision.transforms import v2

from ssl_hub._validation import check_positive_int
from ssl_hub.transforms.multi_crop import check_crop_categories, default_crop_sizes
from ssl_hub.transforms.multi_view import IMAGENET_NORMALIZE, MultiViewTransform
from ssl_hub.transforms.view import view_augmentation


class SMoGTransform(MultiViewTransform):
    """Multi-crop views of one image: ``crop_counts[i]`` crops of side ``crop_sizes[i]`` for each crop category.

    Each category has its own blur and solarization probability (BYOL's asymmetric recipe); argument names and
    defaults follow LightlySSL's ``SMoGTransform`` (4 x 224 + 4 x 96 px). The first category holds the global crops.

    Args:
        crop_sizes: Side of the crops of each category in pixels; ``None`` for ``(input_size, round(input_size *
            96 / 224))``, i.e. ``(224, 96)``.
        crop_counts: Number of crops of each category.
        crop_min_scales: Smallest crop area of each category, as a fraction of the image.
        crop_max_scales: Largest crop area of each category, as a fraction of the image.
        gaussian_blur_probs: Probability of Gaussian blur for each category.
        gaussian_blur_sigmas: Range of the blur's standard deviation.
        solarize_probs: Probability of solarization for each category.
        hf_prob: Probability of a horizontal flip.
        cj_prob: Probability of colour jitter.
        cj_strength: Multiplier of the four jitter factors.
        cj_bright: Brightness jitter factor.
        cj_contrast: Contrast jitter factor.
        cj_sat: Saturation jitter factor.
        cj_hue: Hue jitter factor.
        random_gray_scale: Probability of converting to grayscale.
        kernel_size: Side of a torchvision convolution kernel for the blur; ``None``: Pillow's
            ``GaussianBlur(radius=sigma)`` on PIL images, as the official code (tensors: a kernel of
            :func:`~ssl_hub.transforms.multi_view.blur_kernel_size`).
        normalize: ``{"mean", "std"}`` to normalise with, or ``None``.
        interpolation: Resampling of the random resized crop: ``"bicubic"``, ``"bilinear"`` or ``"nearest"``.
        input_size: Side of the global crops when ``crop_sizes`` is not given (what ``method.make_transform``
            passes).
    """

    def __init__(
        self,
        crop_sizes: Sequence[int] | None = None,
        crop_counts: Sequence[int] = (4, 4),
        crop_min_scales: Sequence[float] = (0.2, 0.05),
        crop_max_scales: Sequence[float] = (1.0, 0.2),
        gaussian_blur_probs: Sequence[float] = (0.5, 0.1),
        gaussian_blur_sigmas: tuple[float, float] = (0.1, 2.0),
        solarize_probs: Sequence[float] = (0.0, 0.2),
        hf_prob: float = 0.5,
        cj_prob: float = 1.0,
        cj_strength: float = 0.5,
        cj_bright: float = 0.8,
        cj_contrast: float = 0.8,
        cj_sat: float = 0.4,
        cj_hue: float = 0.2,
        random_gray_scale: float = 0.2,
        kernel_size: int | None = None,
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
            gaussian_blur_probs=gaussian_blur_probs,
            solarize_probs=solarize_probs,
        )
        views: list[v2.Transform] = []
        for size, count, min_scale, max_scale, blur, solarize in zip(
            sizes, crop_counts, crop_min_scales, crop_max_scales, gaussian_blur_probs, solarize_probs, strict=True
        ):
            check_positive_int("crop_counts", count, owner, minimum=0)
            view = v2.Compose(
                view_augmentation(
                    owner,
                    input_size=size,
                    cj_prob=cj_prob,
                    cj_strength=cj_strength,
                    cj_bright=cj_bright,
                    cj_contrast=cj_contrast,
                    cj_sat=cj_sat,
                    cj_hue=cj_hue,
                    min_scale=min_scale,
                    max_scale=max_scale,
                    random_gray_scale=random_gray_scale,
                    gaussian_blur=blur,
                    kernel_size=kernel_size,
                    sigmas=gaussian_blur_sigmas,
                    solarization_prob=solarize,
                    vf_prob=0.0,
                    hf_prob=hf_prob,
                    rr_prob=0.0,
                    rr_degrees=None,
                    normalize=normalize,
                    interpolation=interpolation,
                )
            )
            views.extend([view] * count)
        super().__init__(views, input_size=sizes[0], normalize=normalize)
