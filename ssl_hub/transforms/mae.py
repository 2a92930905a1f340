"""MAE's augmentation (He et al., 2021, arXiv:2111.06377, appendix A.1): random resized crop and flip only."""

from __future__ import annotations

from torchvision.transforms import v2

from ssl_hub._validation import check_positive_int, check_probability
from ssl_hub.transforms.multi_view import IMAGENET_NORMALIZE, MultiViewTransform, to_normalized_tensor
from ssl_hub.transforms.view import crop_interpolation


class MAETransform(MultiViewTransform):
    """One view: random resized crop, horizontal flip, tensor, normalise. LightlySSL's ``MAETransform``.

    Masked-image models need no colour augmentation (MAE, appendix A.1: "RandomResizedCrop ... scale (0.2, 1.0)
    ... RandomHorizontalFlip"; facebookresearch/mae, ``main_pretrain.py``).

    Args:
        input_size: Side of the view in pixels.
        min_scale: Smallest crop area, as a fraction of the image.
        normalize: ``{"mean", "std"}`` to normalise with, or ``None``.
        interpolation: Resampling of the random resized crop: ``"bicubic"`` (the official code's), ``"bilinear"`` or
            ``"nearest"``.
    """

    def __init__(
        self,
        input_size: int = 224,
        min_scale: float = 0.2,
        normalize: dict[str, tuple[float, ...]] | None = IMAGENET_NORMALIZE,
        interpolation: str = "bicubic",
    ) -> None:
        owner = type(self).__name__
        check_positive_int("input_size", input_size, owner)
        check_probability("min_scale", min_scale, owner)
        resampling = crop_interpolation(interpolation, owner)
        view = v2.Compose(
            [
                v2.RandomResizedCrop(input_size, scale=(min_scale, 1.0), interpolation=resampling, antialias=True),
                v2.RandomHorizontalFlip(),
                *to_normalized_tensor(normalize),
            ]
        )
        super().__init__([view], input_size=input_size, normalize=normalize)
