"""SimMIM's augmentation (Xie et al., 2022, arXiv:2111.09886, appendix): MAE's with larger crops."""

from __future__ import annotations

from ssl_hub.transforms.mae import MAETransform
from ssl_hub.transforms.multi_view import IMAGENET_NORMALIZE


class SimMIMTransform(MAETransform):
    """One view: random resized crop of at least 67 % of the image, horizontal flip, tensor, normalise.

    The official recipe crops with scale (0.67, 1.0) (microsoft/SimMIM, ``data/data_simmim.py``); LightlySSL's
    SimMIM example reuses ``MAETransform``.

    Args:
        input_size: Side of the view in pixels.
        min_scale: Smallest crop area, as a fraction of the image.
        normalize: ``{"mean", "std"}`` to normalise with, or ``None``.
        interpolation: Resampling of the random resized crop: ``"bicubic"``, ``"bilinear"`` or ``"nearest"``.
    """

    def __init__(
        self,
        input_size: int = 224,
        min_scale: float = 0.67,
        normalize: dict[str, tuple[float, ...]] | None = IMAGENET_NORMALIZE,
        interpolation: str = "bicubic",
    ) -> None:
        super().__init__(input_size=input_size, min_scale=min_scale, normalize=normalize, interpolation=interpolation)
