"""From images to the lists of views SSL methods train on, and batching them for the Trainer."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from ssl_hub.data.images import UnreadableImageError
from ssl_hub.data.sources import ImageDataset

logger = logging.getLogger(__name__)


class MultiViewDataset(Dataset[dict[str, Any]]):
    """Items ``{"views": transform(image), "label": label}`` from any image source.

    An unreadable image (corrupt or truncated file) never stops an epoch: it is logged once, counted in
    :attr:`skipped`, and the next readable image takes its place. Only when no image at all can be read does this
    raise.

    Args:
        source: Anything :class:`~ssl_hub.data.sources.ImageDataset` accepts.
        transform: Image -> list of view tensors (a method's ``make_transform()``).
    """

    def __init__(self, source: Any, transform: Callable[[Any], Sequence[torch.Tensor]]) -> None:
        self.images = source if isinstance(source, ImageDataset) else ImageDataset(source)
        self.transform = transform
        self.skipped: dict[str, str] = {}  # unreadable source -> reason, in this process

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        for attempt in range(len(self.images)):
            try:
                image, label = self.images[(index + attempt) % len(self.images)]
            except UnreadableImageError as error:
                if error.source not in self.skipped:
                    self.skipped[error.source] = error.reason
                    logger.warning("Skipping unreadable image %s (%s)", error.source, error.reason)
                continue
            return {"views": list(self.transform(image)), "label": label}
        raise UnreadableImageError("dataset", f"none of its {len(self.images)} images can be read")


def collate_views(items: Sequence[dict[str, Any]]) -> dict[str, list[torch.Tensor]]:
    """Stack each view position over the batch: ``{"views": [(B, C, H_i, W_i) for each view i]}``.

    Views of one position share a size, so views of different sizes (multi-crop) are batched per size, never padded.
    Labels are left out: pretraining does not see them.
    """
    num_views = len(items[0]["views"])
    if any(len(item["views"]) != num_views for item in items):
        raise ValueError("Every item of a batch must have the same number of views.")
    return {"views": [torch.stack([item["views"][i] for item in items]) for i in range(num_views)]}
