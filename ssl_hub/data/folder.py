"""A dataset over a folder of images, searched recursively, with class labels from subfolders when present."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from ssl_hub.data.images import IMAGE_EXTENSIONS, open_image


class EmptyDatasetError(ValueError):
    """A data source that holds no images."""


def _find_images(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    found: list[Path] = []
    for folder, subfolders, names in os.walk(root, followlinks=True):
        subfolders[:] = [s for s in subfolders if not s.startswith(".")]
        found.extend(Path(folder) / n for n in names if n.lower().endswith(suffixes) and not n.startswith("."))
    return sorted(found)


class ImageFolderDataset(Dataset[tuple[Image.Image, int]]):
    """Every image below ``root`` (any depth), as ``(RGB image, label)``.

    When every image lies inside a first-level subfolder, the subfolder names are the classes (sorted, like
    torchvision's ``ImageFolder``) and labels index them; otherwise the folder is unlabelled and labels are -1.
    Hidden files and folders are skipped. Files are decoded when read, so a corrupt one raises
    :class:`~ssl_hub.data.images.UnreadableImageError` naming it (``MultiViewDataset`` skips and counts those).

    Args:
        root: The folder.
        extensions: File endings counted as images (case-insensitive).
        classes: The classes labels index, when they are another folder's (a ``val/`` read with ``train/``'s, which
            may hold fewer of them); a class subfolder not among them raises ``ValueError``.
    """

    def __init__(
        self, root: str | Path, extensions: Sequence[str] = IMAGE_EXTENSIONS, classes: Sequence[str] | None = None
    ) -> None:
        self.root = Path(root).expanduser()
        if not self.root.exists():
            raise FileNotFoundError(f"Image folder {self.root} does not exist.")
        if not self.root.is_dir():
            raise NotADirectoryError(f"{self.root} is not a folder: --data takes a folder of images.")
        suffixes = tuple(e.lower() for e in extensions)
        paths = _find_images(self.root, suffixes)
        if not paths:
            raise EmptyDatasetError(
                f"No images found under {self.root} (searched all subfolders for {', '.join(suffixes)}). "
                "Point --data at a folder that holds images, or at a folder of class subfolders."
            )
        relative = [p.relative_to(self.root) for p in paths]
        labelled = all(len(r.parts) > 1 for r in relative)
        self.classes: list[str] | None = sorted({r.parts[0] for r in relative}) if labelled else None
        if self.classes is not None and classes is not None:
            unknown = [name for name in self.classes if name not in classes]
            if unknown:
                raise ValueError(
                    f"{self.root} has class folders {unknown} that the training images do not have (their classes: "
                    f"{list(classes)}). Labels index the training classes: give each held-out class its training "
                    "images, or move those folders out."
                )
            self.classes = list(classes)
        index = {name: i for i, name in enumerate(self.classes or [])}
        self.samples = [(p, index[r.parts[0]] if labelled else -1) for p, r in zip(paths, relative, strict=True)]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        path, label = self.samples[index]
        return open_image(path), label
