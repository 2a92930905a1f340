"""Any source of images (a torch Dataset, a Hugging Face ``datasets`` dataset, arrays) as ``(RGB image, label)``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from ssl_hub.data.images import as_rgb_image

IMAGE_KEYS = ("image", "img", "images", "picture", "pixel_values")
LABEL_KEYS = ("label", "labels", "fine_label", "class", "target")


def _is_hf_dataset(source: Any) -> bool:
    return hasattr(source, "features") and hasattr(source, "column_names") and hasattr(source, "cast_column")


class ArrayImageDataset(Dataset[tuple[Image.Image, int]]):
    """Images held as one uint8 array, ``(N, H, W)`` or ``(N, H, W, C)``, with integer labels.

    Args:
        images: The pixels.
        labels: ``(N,)`` class indices, or ``None`` for unlabelled images.
        classes: Class names, indexed by label.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray | None = None, classes: Sequence[str] | None = None):
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"ArrayImageDataset: {len(images)} images but {len(labels)} labels.")
        self.images = images
        self.labels = labels
        self.classes = list(classes) if classes is not None else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        label = int(self.labels[index]) if self.labels is not None else -1
        return as_rgb_image(self.images[index]), label


class ImageDataset(Dataset[tuple[Image.Image, int]]):
    """A uniform view of any image source: items become ``(RGB PIL image, int label)``, label -1 when unlabelled.

    Items of ``source`` may be images, ``(image, label, ...)`` tuples, or dicts (Hugging Face ``datasets`` rows).
    For dicts the image / label keys are found by name (``image``, ``img``... / ``label``, ``fine_label``...) or
    given explicitly. A Hugging Face dataset is read with image decoding off, so a corrupt image raises
    :class:`~ssl_hub.data.images.UnreadableImageError` like a corrupt file in a folder does.

    Args:
        source: The dataset.
        image_key: Column / key holding the image (dict items only).
        label_key: Column / key holding the label (dict items only); ``None`` to detect, ``""`` for none.
    """

    def __init__(self, source: Any, image_key: str | None = None, label_key: str | None = None) -> None:
        self.source: Any = source
        self.image_key = image_key
        self.label_key = label_key
        self.classes: list[str] | None = getattr(source, "classes", None)
        if isinstance(source, ImageDataset):  # already wrapped: keep its columns
            self.source, self.image_key, self.label_key = source.source, source.image_key, source.label_key
        elif _is_hf_dataset(source):
            self.source, self.image_key, self.label_key, self.classes = _prepare_hf_dataset(
                source, image_key, label_key
            )

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        image, label = self._split(self.source[index])
        return as_rgb_image(image), label

    @property
    def has_labels(self) -> bool:
        """Whether items carry class labels (needed for kNN / linear-probe evaluation): the first item's label is a
        class index. A split that declares classes but holds no labels (ImageNet's test split on the Hub labels
        every image -1) has none."""
        if len(self) == 0:
            return False
        return self._split(self.source[0])[1] >= 0

    def _split(self, item: Any) -> tuple[Any, int]:
        if isinstance(item, dict):
            image_key = self.image_key or next((k for k in IMAGE_KEYS if k in item), None)
            if image_key is None:
                raise KeyError(f"No image in dataset item with keys {sorted(item)}: pass image_key=...")
            label_key = self.label_key if self.label_key is not None else next((k for k in LABEL_KEYS if k in item), "")
            return item[image_key], int(item[label_key]) if label_key else -1
        if isinstance(item, (tuple, list)):
            label = item[1] if len(item) > 1 else -1
            return item[0], int(label) if isinstance(label, (int, np.integer)) or _is_scalar_tensor(label) else -1
        return item, -1


def _is_scalar_tensor(value: Any) -> bool:
    return hasattr(value, "ndim") and value.ndim == 0


def _prepare_hf_dataset(
    source: Any, image_key: str | None, label_key: str | None
) -> tuple[Any, str, str, list[str] | None]:
    """Pick the image and label columns of a ``datasets.Dataset`` and turn image decoding off."""
    from datasets import ClassLabel
    from datasets import Image as ImageFeature

    features = source.features
    if image_key is None:
        image_key = next((name for name, f in features.items() if isinstance(f, ImageFeature)), None)
        image_key = image_key or next((k for k in IMAGE_KEYS if k in features), None)
    if image_key is None or image_key not in features:
        raise ValueError(
            f"The dataset has no image column (columns: {', '.join(source.column_names)}): pass image_key=..."
        )
    if label_key is None:
        label_key = next((name for name, f in features.items() if isinstance(f, ClassLabel)), None)
        label_key = label_key or next((k for k in LABEL_KEYS if k in features), "")
    classes = features[label_key].names if label_key and isinstance(features[label_key], ClassLabel) else None
    if isinstance(features[image_key], ImageFeature):
        source = source.cast_column(image_key, ImageFeature(decode=False))
    keep = [image_key] + ([label_key] if label_key else [])
    source = source.select_columns(keep)
    return source, image_key, label_key, classes
