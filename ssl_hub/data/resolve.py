"""What ``--data`` / ``pretrain(dataset=...)`` may name, turned into a training split and an optional test split."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssl_hub.data.demo import DEMO_HUB_ID, DEMO_NAME, load_demo
from ssl_hub.data.folder import EmptyDatasetError, ImageFolderDataset
from ssl_hub.data.sources import ImageDataset

TRAIN_SPLITS = ("train",)
TEST_SPLITS = ("test", "validation", "val", "valid")


@dataclass
class DataSplits:
    """The images to pretrain on, an optional labelled held-out split for kNN, and what to call the data."""

    train: ImageDataset
    test: ImageDataset | None
    info: dict[str, Any] = field(default_factory=dict)


def labelled_first(held_out: list[ImageDataset]) -> ImageDataset | None:
    """The held-out split to evaluate on: the first in :data:`TEST_SPLITS` order that has labels, else the first."""
    return next((split for split in held_out if split.has_labels), held_out[0] if held_out else None)


def _is_saved_hf_dataset(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def _hf_splits(splits: Any, name: str, hub_id: str | None) -> DataSplits:
    if hasattr(splits, "features"):  # a single datasets.Dataset
        return DataSplits(ImageDataset(splits), None, {"name": name, "hub_id": hub_id})
    train_name = next((s for s in TRAIN_SPLITS if s in splits), None) or next(iter(splits), None)
    if train_name is None:
        raise EmptyDatasetError(f"The dataset {name} has no splits.")
    held_out = [ImageDataset(splits[s]) for s in TEST_SPLITS if s in splits and s != train_name]
    return DataSplits(
        ImageDataset(splits[train_name]),
        labelled_first(held_out),
        {"name": name, "hub_id": hub_id, "split": train_name},
    )


def _load_hf(name_or_path: str, from_disk: bool) -> Any:
    try:
        import datasets
    except ImportError as error:
        raise ImportError(
            f"Reading {name_or_path} needs the Hugging Face datasets library: pip install 'ssl-hub[datasets]'."
        ) from error
    return datasets.load_from_disk(name_or_path) if from_disk else datasets.load_dataset(name_or_path)


def _folder_splits(folder: Path) -> DataSplits:
    if _is_saved_hf_dataset(folder):
        return _hf_splits(_load_hf(str(folder), from_disk=True), folder.name, None)
    subfolders = {p.name for p in folder.iterdir() if p.is_dir()}
    train_name = next((s for s in TRAIN_SPLITS if s in subfolders), None)
    test_names = [s for s in TEST_SPLITS if s in subfolders]
    if train_name and test_names:  # an ImageNet-style train/ + val/ layout
        train = ImageFolderDataset(folder / train_name)
        held_out = [ImageDataset(ImageFolderDataset(folder / s, classes=train.classes)) for s in test_names]
        return DataSplits(ImageDataset(train), labelled_first(held_out), {"name": folder.name, "split": train_name})
    return DataSplits(ImageDataset(ImageFolderDataset(folder)), None, {"name": folder.name})


def resolve_data(data: Any = None, eval_data: Any = None) -> DataSplits:
    """Turn a data argument into :class:`DataSplits`.

    Args:
        data: ``None`` for the shipped demo set; a folder of images (``train/`` + ``val/`` or ``test/`` subfolders
            become the two splits; a folder saved by ``datasets.save_to_disk`` works too); a Hugging Face dataset id;
            a ``datasets.Dataset`` / ``DatasetDict``; or any torch Dataset of images.
        eval_data: A labelled held-out split for kNN, overriding the one found in ``data``.
    """
    if data is None:
        splits = DataSplits(
            ImageDataset(load_demo("train")),
            ImageDataset(load_demo("test")),
            {"name": DEMO_NAME, "hub_id": DEMO_HUB_ID, "split": "train"},
        )
    elif isinstance(data, (str, Path)):
        path = Path(data).expanduser()
        if path.is_dir():
            splits = _folder_splits(path)
        elif path.exists():
            raise NotADirectoryError(f"{path} is a file: data must be a folder of images or a dataset id.")
        elif str(data).startswith((".", "/", "~")) or str(data).count("/") > 1:
            raise FileNotFoundError(f"Data folder {path} does not exist.")
        else:
            splits = _hf_splits(_load_hf(str(data), from_disk=False), str(data), str(data))
    elif hasattr(data, "features") or (hasattr(data, "keys") and hasattr(data, "values")):
        name = getattr(getattr(data, "info", None), "dataset_name", None) or "dataset"
        splits = _hf_splits(data, name, None)
    else:
        splits = DataSplits(ImageDataset(data), None, {"name": type(data).__name__})
    if eval_data is not None:
        splits.test = ImageDataset(eval_data)
    if len(splits.train) == 0:
        raise EmptyDatasetError(f"The training data {splits.info.get('name')} holds no images.")
    splits.info["num_images"] = len(splits.train)
    return splits
