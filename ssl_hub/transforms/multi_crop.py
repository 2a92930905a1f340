"""Crop sizes of multi-crop augmentations (SwAV, Caron et al. 2020, arXiv:2006.09882, section 3.2)."""

from __future__ import annotations

from collections.abc import Sequence

from ssl_hub._validation import check_positive_int

# SwAV's and DINO's multi-crop: 96 px local crops next to 224 px global crops.
LOCAL_TO_GLOBAL_RATIO = 96 / 224


def local_crop_size(global_crop_size: int, multiple: int = 1) -> int:
    """The papers' local crop side for global crops of ``global_crop_size`` px: 96 px at 224 px, scaled linearly.

    Args:
        global_crop_size: Side of the global crops in pixels.
        multiple: Round to a multiple of this (at least one), e.g. a ViT's patch size so every crop is whole patches.
    """
    check_positive_int("global_crop_size", global_crop_size, "local_crop_size")
    check_positive_int("multiple", multiple, "local_crop_size")
    return max(multiple, round(global_crop_size * LOCAL_TO_GLOBAL_RATIO / multiple) * multiple)


def default_crop_sizes(input_size: int | None) -> tuple[int, int]:
    """SwAV's (global, local) crop sides, ``(224, 96)``, for global crops of ``input_size`` px (224 if ``None``)."""
    global_size = 224 if input_size is None else input_size
    return global_size, local_crop_size(global_size)


def check_crop_categories(owner: str, **per_category: Sequence[float]) -> None:
    """Raise unless every per-category sequence has one value per crop category (and there is a category)."""
    lengths = {name: len(values) for name, values in per_category.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{owner}: give one value per crop category in each of {lengths} (lengths differ).")
    if not next(iter(lengths.values())):
        raise ValueError(f"{owner}: needs at least one crop category.")
