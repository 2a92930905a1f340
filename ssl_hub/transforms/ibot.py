"""iBOT's multi-crop augmentation (Zhou et al., 2022, arXiv:2111.07832; official ``main_ibot.py`` and the ViT-S/B
pretraining commands of its README)."""

from __future__ import annotations

from typing import Any

from ssl_hub.transforms.dino import DINOTransform


class IBOTTransform(DINOTransform):
    """:class:`DINOTransform` with iBOT's crops: 2 global crops of 25-100 % and 10 local crops of 5-25 % of the
    image (DINO: 40-100 % and 6 of 5-40 %). LightlySSL's name and defaults.

    Args:
        global_crop_size: Side of the global crops in pixels.
        global_crop_scale: Range of the global crops' area, as fractions of the image.
        local_crop_size: Side of the local crops; ``None`` for ``round(global_crop_size * 96 / 224)``.
        local_crop_scale: Range of the local crops' area, as fractions of the image.
        n_local_views: Number of local crops.
        **kwargs: The other arguments of :class:`DINOTransform` (colour jitter, blur, solarization, ``input_size``).
    """

    def __init__(
        self,
        global_crop_size: int = 224,
        global_crop_scale: tuple[float, float] = (0.25, 1.0),
        local_crop_size: int | None = None,
        local_crop_scale: tuple[float, float] = (0.05, 0.25),
        n_local_views: int = 10,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            global_crop_size=global_crop_size,
            global_crop_scale=global_crop_scale,
            local_crop_size=local_crop_size,
            local_crop_scale=local_crop_scale,
            n_local_views=n_local_views,
            **kwargs,
        )
