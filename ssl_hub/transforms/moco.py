"""MoCo v2's augmentation "aug+" (Chen et al., 2020, arXiv:2003.04297; official ``main_moco.py --aug-plus``):
SimCLR's recipe with weaker colour jitter (0.4, 0.4, 0.4, 0.1), crops of at least 20 % and blur with probability 0.5.

MoCo v3 uses BYOL's asymmetric views instead (:class:`~ssl_hub.transforms.BYOLTransform`).
"""

from __future__ import annotations

from typing import Any

from ssl_hub.transforms.simclr import SimCLRTransform


class MoCoV2Transform(SimCLRTransform):
    """Two MoCo v2 views of one image; arguments as :class:`~ssl_hub.transforms.SimCLRViewTransform`, with MoCo v2's
    defaults.

    Args:
        input_size: Side of each view in pixels.
        cj_bright: Brightness jitter factor.
        cj_contrast: Contrast jitter factor.
        cj_sat: Saturation jitter factor.
        cj_hue: Hue jitter factor.
        min_scale: Smallest crop area, as a fraction of the image.
        gaussian_blur: Probability of Gaussian blur.
        **view_kwargs: Any other argument of :class:`~ssl_hub.transforms.SimCLRViewTransform` (same defaults).
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
        **view_kwargs: Any,
    ) -> None:
        super().__init__(
            input_size=input_size,
            cj_bright=cj_bright,
            cj_contrast=cj_contrast,
            cj_sat=cj_sat,
            cj_hue=cj_hue,
            min_scale=min_scale,
            gaussian_blur=gaussian_blur,
            **view_kwargs,
        )
