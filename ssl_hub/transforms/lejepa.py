"""LeJEPA's multi-crop augmentation (Balestriero & LeCun, 2025, arXiv:2511.08544; the official README's "GOTO
hyperparameters")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ssl_hub.transforms.smog import SMoGTransform


class LeJEPATransform(SMoGTransform):
    """2 global crops of 30-100 % of the image and 6 local crops of 5-30 %, every crop with the same flip, colour
    jitter (0.4 / 0.4 / 0.2 / 0.1 with probability 0.8), grayscale (0.2), blur (0.5) and solarization (0.2), as the
    official README; bilinear resizing, as its ``v2.RandomResizedCrop``. :class:`SMoGTransform`'s crop categories with
    these defaults; its other arguments pass through. Local crops are ``round(input_size * 96 / 224)`` px (the
    official 98 px at 224 for its 14 px patches: :meth:`ssl_hub.methods.LeJEPA.make_transform` rounds to the
    backbone's patch).

    Args:
        crop_sizes: Side of the global and the local crops; ``None`` for ``(input_size, round(input_size * 96 /
            224))``.
        crop_counts: Number of global and local crops.
        crop_min_scales: Smallest area of a global and a local crop, as a fraction of the image.
        crop_max_scales: Largest area of a global and a local crop.
        gaussian_blur_probs: Blur probability of the global and the local crops.
        solarize_probs: Solarization probability of the global and the local crops.
        cj_prob: Probability of colour jitter.
        interpolation: Resampling of the random resized crop.
        **kwargs: Other arguments of :class:`SMoGTransform` (``hf_prob``, ``cj_*``, ``random_gray_scale``,
            ``normalize``, ``input_size``...).
    """

    def __init__(
        self,
        crop_sizes: Sequence[int] | None = None,
        crop_counts: Sequence[int] = (2, 6),
        crop_min_scales: Sequence[float] = (0.3, 0.05),
        crop_max_scales: Sequence[float] = (1.0, 0.3),
        gaussian_blur_probs: Sequence[float] = (0.5, 0.5),
        solarize_probs: Sequence[float] = (0.2, 0.2),
        cj_prob: float = 0.8,
        interpolation: str = "bilinear",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            crop_sizes=crop_sizes,
            crop_counts=crop_counts,
            crop_min_scales=crop_min_scales,
            crop_max_scales=crop_max_scales,
            gaussian_blur_probs=gaussian_blur_probs,
            solarize_probs=solarize_probs,
            cj_prob=cj_prob,
            interpolation=interpolation,
            **kwargs,
        )
