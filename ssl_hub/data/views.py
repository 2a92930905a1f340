"""From images to the lists of views SSL methods train on, and batching them for the Trainer."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
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

    With a ``seed``, each item's augmentation draws from the global generators (torch's, NumPy's, Python's) seeded
    from (seed, epoch, index) (:func:`seeded_global_generators`): an image's views in an epoch are the same whichever
    process, DataLoader worker or order draws them, so a run resumed mid-epoch sees the views of the run it continues,
    and any number of workers or ranks the same views. :meth:`set_epoch` (called by
    :class:`~ssl_hub.training.callbacks.DatasetEpochCallback`) reaches workers already started, persistent ones too.

    Args:
        source: Anything :class:`~ssl_hub.data.sources.ImageDataset` accepts.
        transform: Image -> list of view tensors (a method's ``make_transform()``), drawing its randomness from
            the global generators of torch (as torchvision's transforms do), NumPy or Python.
        seed: Seed of the augmentations; ``None`` draws them from the process's generators as they stand.
    """

    def __init__(
        self, source: Any, transform: Callable[[Any], Sequence[torch.Tensor]], seed: int | None = None
    ) -> None:
        self.images = source if isinstance(source, ImageDataset) else ImageDataset(source)
        self.transform = transform
        self.seed = seed
        self.epoch = torch.zeros((), dtype=torch.int64).share_memory_()  # shared with DataLoader workers
        self.skipped: dict[str, str] = {}  # unreadable source -> reason, in this process

    def set_epoch(self, epoch: int) -> None:
        """The epoch of the items drawn from now on, in this process and its DataLoader workers."""
        self.epoch.fill_(epoch)

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
            return {"views": self.views(image, index), "label": label}
        raise UnreadableImageError("dataset", f"none of its {len(self.images)} images can be read")

    def views(self, image: Any, index: int) -> list[torch.Tensor]:
        """``transform(image)``, drawn from (seed, epoch, index) when the dataset has a seed."""
        if self.seed is None:
            return list(self.transform(image))
        with seeded_global_generators([self.seed, int(self.epoch), index]):
            return list(self.transform(image))


@contextmanager
def seeded_global_generators(entropy: Sequence[int]) -> Iterator[None]:
    """Seed, from ``entropy``, the global generators a transform may draw from: torch's on the CPU (torchvision's
    transforms), restored on exit, since dropout and masks draw from it too; NumPy's and Python's (other augmentation
    libraries), left at the seed's sequence, as ssl_hub draws nothing from them (restoring NumPy's state would cost
    more than a small image's augmentation). CUDA's generators are left alone."""
    torch_seed, numpy_seed, python_seed = np.random.SeedSequence(list(entropy)).generate_state(3)  # uint32 each
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(torch_seed))
        np.random.seed(numpy_seed)
        random.seed(int(python_seed))
        yield


def collate_views(items: Sequence[dict[str, Any]]) -> dict[str, list[torch.Tensor]]:
    """Stack each view position over the batch: ``{"views": [(B, C, H_i, W_i) for each view i]}``.

    Views of one position share a size, so views of different sizes (multi-crop) are batched per size, never padded.
    Labels are left out: pretraining does not see them.
    """
    num_views = len(items[0]["views"])
    if any(len(item["views"]) != num_views for item in items):
        raise ValueError("Every item of a batch must have the same number of views.")
    return {"views": [torch.stack([item["views"][i] for item in items]) for i in range(num_views)]}
