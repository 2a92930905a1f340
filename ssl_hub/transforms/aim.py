"""AIM's augmentation (El-Nouby et al., 2024, arXiv:2401.08541): MAE's with larger crops."""

from __future__ import annotations

from ssl_hub.transforms.mae import MAETransform
from ssl_hub.transforms.multi_view import IMAGENET_NORMALIZE


class AIMTransform(MAETransform):
    """One view: random resized crop of at least 40 % of the image, horizontal flip, tensor, normalise.

    LightlySSL's ``AIMTransform`` (MAE's augmentation with ``min_scale=0.4``), following the paper's pretraining
    recipe.

    Args:
        input_size: Side of the view in pixels.
        min_scale: Smallest crop area, as a fraction of the image.
        normalize: ``{"mean", "std"}`` to normalise with, or ``None``.
        interpolation: Resampling of the random resized crop: ``"bicubic"``, ``"bilinear"`` or ``"nearest"``.
    """

    def __init__(
        self,
        input_size: int = 224,
        min_scale: float = 0.4,
        normalize: dict[str, tuple[float, ...]] | None = IMAGENET_NORMALIZE,
        interpolation: str = "bicubic",
    ) -> None:
        super().__init__(input_size=input_size, min_scale=min_scale, normalize=normalize, interpolation=interpolation)
