"""MSN's augmentation: random views and small focal views (Assran et al., 2022, arXiv:2204.07141, section 3;
official ``src/data_manager.py: make_transforms`` and ``configs/pretrain/msn_vits16.yaml``)."""

from __future__ import annotations

from torchvision.transforms import v2

from ssl_hub._validation import check_positive_int
from ssl_hub.transforms.multi_crop import local_crop_size
from ssl_hub.transforms.multi_view import IMAGENET_NORMALIZE, MultiViewTransform
from ssl_hub.transforms.view import view_augmentation


class MSNTransform(MultiViewTransform):
    """``random_views`` random views, then ``focal_views`` small focal views of one image.

    The first random view is MSN's target view; the other random views are anchors, randomly masked by the method;
    the focal views are anchors too (focal masking: a small crop of the image). Every view gets SimCLR's colour
    distortion and a Gaussian blur half of the time; no solarization. Argument names follow LightlySSL's
    ``MSNTransform``; the defaults are the official ViT-S/16 recipe (``msn_vits16.yaml``: colour jitter strength
    0.5, where LightlySSL uses 1.0).

    Args:
        random_size: Side of the random views in pixels.
        focal_size: Side of the focal views; ``None`` for ``round(random_size * 96 / 224)`` (96 px at 224 px).
        random_views: Number of random views (1 target + anchors).
        focal_views: Number of focal views.
        random_crop_scale: Range of the random views' area, as fractions of the image.
        focal_crop_scale: Range of the focal views' area, as fractions of the image.
        cj_prob: Probability of colour jitter.
        cj_strength: Multiplier of the four jitter factors.
        cj_bright: Brightness jitter factor.
        cj_contrast: Contrast jitter factor.
        cj_sat: Saturation jitter factor.
        cj_hue: Hue jitter factor.
        gaussian_blur: Probability of Gaussian blur.
        kernel_size: Side of a torchvision convolution kernel for the blur; ``None``: Pillow's
            ``GaussianBlur(radius=sigma)`` on PIL images, as the official code (tensors: a kernel of
            :func:`~ssl_hub.transforms.multi_view.blur_kernel_size`).
        sigmas: Range of the blur's standard deviation.
        random_gray_scale: Probability of converting to grayscale.
        hf_prob: Probability of a horizontal flip.
        vf_prob: Probability of a vertical flip.
        normalize: ``{"mean", "std"}`` to normalise with, or ``None``.
        interpolation: Resampling of the random resized crop: ``"bicubic"``, ``"bilinear"`` or ``"nearest"``.
        input_size: Overrides ``random_size`` (what ``method.make_transform(input_size)`` passes).
    """

    def __init__(
        self,
        random_size: int = 224,
        focal_size: int | None = None,
        random_views: int = 2,
        focal_views: int = 10,
        random_crop_scale: tuple[float, float] = (0.3, 1.0),
        focal_crop_scale: tuple[float, float] = (0.05, 0.3),
        cj_prob: float = 0.8,
        cj_strength: float = 0.5,
        cj_bright: float = 0.8,
        cj_contrast: float = 0.8,
        cj_sat: float = 0.8,
        cj_hue: float = 0.2,
        gaussian_blur: float = 0.5,
        kernel_size: int | None = None,
        sigmas: tuple[float, float] = (0.1, 2.0),
        random_gray_scale: float = 0.2,
        hf_prob: float = 0.5,
        vf_prob: float = 0.0,
        normalize: dict[str, tuple[float, ...]] | None = IMAGENET_NORMALIZE,
        interpolation: str = "bicubic",
        input_size: int | None = None,
    ) -> None:
        owner = type(self).__name__
        check_positive_int("random_views", random_views, owner)
        check_positive_int("focal_views", focal_views, owner, minimum=0)
        if random_views + focal_views < 2:
            raise ValueError(
                f"{owner}: needs a target view and at least one anchor view (random_views + focal_views >= 2)."
            )
        random_size = input_size if input_size is not None else random_size
        focal_size = focal_size if focal_size is not None else local_crop_size(random_size)

        def view(size: int, scale: tuple[float, float]) -> v2.Compose:
            return v2.Compose(
                view_augmentation(
                    owner,
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
                    gaussian_blur=gaussian_blur,
                    kernel_size=kernel_size,
                    sigmas=sigmas,
                    solarization_prob=0.0,
                    vf_prob=vf_prob,
                    hf_prob=hf_prob,
                    rr_prob=0.0,
                    rr_degrees=None,
                    normalize=normalize,
                    interpolation=interpolation,
                )
            )

        random_view = view(random_size, random_crop_scale)
        focal_view = view(focal_size, focal_crop_scale)
        super().__init__(
            [*[random_view] * random_views, *[focal_view] * focal_views], input_size=random_size, normalize=normalize
        )
