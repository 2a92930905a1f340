"""Image sources -> (RGB image, label) -> views: folders, HF datasets, torch datasets, odd and broken images."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import random_images
from PIL import Image

from ssl_hub.data import (
    ArrayImageDataset,
    EmptyDatasetError,
    ImageDataset,
    ImageFolderDataset,
    MultiViewDataset,
    UnreadableImageError,
    collate_views,
    load_demo,
    to_rgb,
)
from ssl_hub.data.resolve import resolve_data
from ssl_hub.transforms import SimCLRTransform


def test_folder_is_searched_recursively_with_labels_from_subfolders(image_folder: Path) -> None:
    dataset = ImageFolderDataset(image_folder)
    assert len(dataset) == 6
    assert dataset.classes == ["cat", "dog"]
    labels = sorted(label for _, label in (dataset[i] for i in range(len(dataset))))
    assert labels == [0, 0, 0, 1, 1, 1]
    image, _ = dataset[0]
    assert image.mode == "RGB"
    assert image.size == (40, 40)


def test_folder_with_images_at_its_root_is_unlabelled(tmp_path: Path) -> None:
    Image.fromarray(random_images(1)[0]).save(tmp_path / "a.jpg")
    (tmp_path / "sub").mkdir()
    Image.fromarray(random_images(1)[0]).save(tmp_path / "sub" / "b.JPEG")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"")
    dataset = ImageFolderDataset(tmp_path)
    assert dataset.classes is None
    assert [label for _, label in dataset.samples] == [-1, -1]
    assert not ImageDataset(dataset).has_labels


def test_empty_folder_fails_clearly(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "readme.txt").write_text("no images here")
    with pytest.raises(EmptyDatasetError, match=r"No images found under .*\.png"):
        ImageFolderDataset(tmp_path)


def test_missing_folder_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderDataset(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_data(str(tmp_path / "nope"))


def _odd_images(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rgb = random_images(1, 24)[0]
    Image.fromarray(rgb[:, :, 0]).save(folder / "gray.png")
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])
    Image.fromarray(rgba).save(folder / "rgba.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257).save(folder / "deep.png")
    Image.fromarray(rgb).convert("P").save(folder / "palette.gif")


def test_grayscale_rgba_cmyk_16bit_and_palette_images_become_rgb(tmp_path: Path) -> None:
    _odd_images(tmp_path)
    dataset = ImageFolderDataset(tmp_path)
    modes = {path.name: Image.open(path).mode for path, _ in dataset.samples}
    assert modes == {"gray.png": "L", "rgba.png": "RGBA", "cmyk.jpg": "CMYK", "deep.png": "I;16", "palette.gif": "P"}
    for index in range(len(dataset)):
        image, _ = dataset[index]
        assert image.mode == "RGB"
        assert image.size == (24, 24)


def test_transparent_pixels_are_composited_over_white() -> None:
    transparent = Image.new("RGBA", (2, 2), (0, 0, 0, 0))
    assert to_rgb(transparent).getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_grayscale_keeps_its_range() -> None:
    deep = Image.fromarray(np.array([[0, 65535]], dtype=np.uint16))
    assert np.asarray(to_rgb(deep))[0, :, 0].tolist() == [0, 255]


def _broken_images(folder: Path) -> None:
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    good = folder / "good.jpg"
    Image.fromarray(random_images(1, 64)[0]).save(good, quality=95)
    (folder / "truncated.jpg").write_bytes(good.read_bytes()[:300])


def test_corrupt_and_truncated_images_raise_naming_the_file(tmp_path: Path) -> None:
    _broken_images(tmp_path)
    dataset = ImageFolderDataset(tmp_path)
    names = [path.name for path, _ in dataset.samples]
    for name in ("corrupt.png", "truncated.jpg"):
        with pytest.raises(UnreadableImageError, match=name):
            dataset[names.index(name)]


def test_views_dataset_skips_and_counts_unreadable_images(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _broken_images(tmp_path)
    _odd_images(tmp_path / "odd")
    views = MultiViewDataset(ImageFolderDataset(tmp_path), SimCLRTransform(input_size=16))
    with caplog.at_level(logging.WARNING):
        items = [views[i] for i in range(len(views))]  # a whole epoch, never interrupted
    assert len(items) == len(views) == 8
    assert sorted(Path(source).name for source in views.skipped) == ["corrupt.png", "truncated.jpg"]
    assert all(len(item["views"]) == 2 and item["views"][0].shape == (3, 16, 16) for item in items)
    assert "corrupt.png" in caplog.text


def test_views_dataset_fails_clearly_when_nothing_is_readable(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"garbage")
    (tmp_path / "b.jpg").write_bytes(b"garbage")
    views = MultiViewDataset(ImageFolderDataset(tmp_path), SimCLRTransform(input_size=16))
    with pytest.raises(UnreadableImageError, match="none of its 2 images"):
        views[0]


class DrawsFromEveryGenerator:
    """SimCLR's views (torch's generator) shifted by a draw of NumPy's and of Python's global generators, as other
    augmentation libraries draw."""

    def __init__(self) -> None:
        self.simclr = SimCLRTransform(input_size=16)

    def __call__(self, image: Image.Image) -> list[torch.Tensor]:
        shift = float(np.random.random()) + random.random()
        return [view + shift for view in self.simclr(image)]


def seeded_views(seed: int | None = 3) -> MultiViewDataset:
    same_image = np.repeat(random_images(1, 16), 3, axis=0)  # three copies: only the index tells them apart
    return MultiViewDataset(ArrayImageDataset(same_image), DrawsFromEveryGenerator(), seed=seed)


def test_seeded_views_follow_seed_epoch_and_index_only_and_leave_torchs_generator_alone() -> None:
    views = seeded_views()
    torch.manual_seed(0)
    first = views[1]["views"]
    state = torch.get_rng_state()
    _ = views[0], views[2]  # other draws in between
    assert torch.equal(torch.get_rng_state(), state)  # dropout and masks draw on from where they were
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    assert all(torch.equal(a, b) for a, b in zip(views[1]["views"], first, strict=True))
    assert not torch.equal(views[0]["views"][0], first[0])  # the same image at another index
    assert not torch.equal(seeded_views(seed=4)[1]["views"][0], first[0])
    views.set_epoch(1)
    assert not torch.equal(views[1]["views"][0], first[0])
    unseeded = seeded_views(seed=None)  # draws from the process's generators, as before seeds existed
    torch.manual_seed(0)
    assert not torch.equal(unseeded[1]["views"][0], unseeded[1]["views"][0])


def test_set_epoch_reaches_persistent_dataloader_workers() -> None:
    """A persistent worker keeps its copy of the dataset across epochs; the epoch is shared memory, so the views it
    draws after ``set_epoch`` are the epoch's, the same as drawn in this process."""
    views = seeded_views()
    expected = []
    for epoch in (0, 1):
        views.set_epoch(epoch)
        expected.append(collate_views([views[i] for i in range(len(views))])["views"])
    views.set_epoch(0)
    loader = torch.utils.data.DataLoader(
        views,
        batch_size=len(views),
        num_workers=1,
        persistent_workers=True,
        multiprocessing_context="spawn",  # forking after torch started its threads deadlocks here
        collate_fn=collate_views,
    )
    drawn = []
    for epoch in (0, 1):
        views.set_epoch(epoch)
        drawn.append(next(iter(loader))["views"])
    for batch, reference in zip(drawn, expected, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(batch, reference, strict=True))
    assert not torch.equal(expected[0][0], expected[1][0])


def test_hf_dataset_with_image_column_and_a_corrupt_row() -> None:
    datasets = pytest.importorskip("datasets")
    images = [Image.fromarray(a) for a in random_images(3, 20)]
    table = datasets.Dataset.from_dict(
        {"img": images, "fine_label": [2, 0, 1], "caption": ["a", "b", "c"]},
        features=datasets.Features(
            {
                "img": datasets.Image(),
                "fine_label": datasets.ClassLabel(names=["x", "y", "z"]),
                "caption": datasets.Value("string"),
            }
        ),
    )
    dataset = ImageDataset(table)
    assert dataset.classes == ["x", "y", "z"]
    assert dataset.has_labels
    image, label = dataset[0]
    assert image.mode == "RGB"
    assert image.size == (20, 20)
    assert label == 2

    broken = datasets.Dataset.from_dict(
        {"image": [{"bytes": b"not an image", "path": None}, {"bytes": None, "path": None}]},
    ).cast_column("image", datasets.Image())
    broken = datasets.concatenate_datasets(
        [broken.select([0]), table.rename_column("img", "image").select_columns(["image"])]
    )
    views = MultiViewDataset(broken, SimCLRTransform(input_size=8))
    assert len(views[0]["views"]) == 2
    assert len(views.skipped) == 1


def test_torch_dataset_of_tuples_and_of_bare_tensors() -> None:
    tuples = [(torch.rand(3, 12, 12), torch.tensor(4)), (torch.rand(3, 12, 12), 1)]
    dataset = ImageDataset(tuples)
    assert dataset.has_labels
    assert [dataset[i][1] for i in range(2)] == [4, 1]
    bare = ImageDataset([torch.rand(1, 12, 12)])
    image, label = bare[0]
    assert (image.mode, image.size, label) == ("RGB", (12, 12), -1)
    assert not bare.has_labels


def test_collate_stacks_each_view_position_and_drops_labels() -> None:
    items = [{"views": [torch.zeros(3, 8, 8), torch.ones(3, 4, 4)], "label": i} for i in range(5)]
    batch = collate_views(items)
    assert list(batch) == ["views"]
    assert [tuple(v.shape) for v in batch["views"]] == [(5, 3, 8, 8), (5, 3, 4, 4)]


def test_demo_set_is_class_balanced_and_labelled() -> None:
    train, test = load_demo("train"), load_demo("test")
    assert (len(train), len(test)) == (3000, 1000)
    assert np.bincount(train.labels).tolist() == [300] * 10
    assert np.bincount(test.labels).tolist() == [100] * 10
    image, label = train[0]
    assert (image.mode, image.size) == ("RGB", (28, 28))
    assert train.classes is not None
    assert train.classes[label]


def test_train_and_val_subfolders_become_the_two_splits(tmp_path: Path) -> None:
    for split, count in [("train", 4), ("val", 2)]:
        for i, array in enumerate(random_images(count)):
            folder = tmp_path / split / f"class{i % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(folder / f"{i}.png")
    splits = resolve_data(str(tmp_path))
    assert splits.test is not None
    assert (len(splits.train), len(splits.test)) == (4, 2)
    assert splits.train.has_labels
    assert splits.test.has_labels
    assert splits.info["num_images"] == 4


def test_the_held_out_split_is_the_first_with_labels(tmp_path: Path) -> None:
    """A test split without labels (ImageNet's on the Hub labels every image -1; a flat test/ folder) gives way to a
    labelled validation split, so the card's kNN is not measured against no labels."""
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    images = [Image.fromarray(a) for a in random_images(4, 8)]

    def split(labels: list[int]) -> Any:
        return datasets.Dataset.from_dict({"image": images[: len(labels)], "label": labels}, features=features)

    table = datasets.DatasetDict({"train": split([0, 1, 0, 1]), "test": split([-1, -1]), "validation": split([1, 0])})
    splits = resolve_data(table)
    assert splits.test is not None
    assert [label for _, label in splits.test] == [1, 0]
    only_unlabelled = resolve_data(datasets.DatasetDict({"train": split([0, 1]), "test": split([-1, -1])}))
    assert only_unlabelled.test is not None
    assert not only_unlabelled.test.has_labels  # kept, but no kNN is run on it

    for folder, count in [("train/a", 2), ("train/b", 2), ("val/a", 1), ("val/b", 1), ("test", 3)]:
        (tmp_path / folder).mkdir(parents=True)
        for i, array in enumerate(random_images(count, 8)):
            Image.fromarray(array).save(tmp_path / folder / f"{i}.png")
    splits = resolve_data(str(tmp_path))
    assert splits.test is not None
    assert (len(splits.test), splits.test.has_labels) == (2, True)


def test_val_labels_index_the_training_classes_when_val_lacks_one(tmp_path: Path) -> None:
    """val/ without "bag" keeps train's numbering: its "coat" images are label 1, not 0."""
    for split, classes in [("train", ["bag", "coat", "dress"]), ("val", ["coat", "dress"])]:
        for name in classes:
            (tmp_path / split / name).mkdir(parents=True)
            Image.fromarray(random_images(1)[0]).save(tmp_path / split / name / "0.png")
    splits = resolve_data(str(tmp_path))
    assert splits.test is not None
    assert [label for _, label in splits.test] == [1, 2]
    assert [label for _, label in splits.train] == [0, 1, 2]

    (tmp_path / "val" / "shirt").mkdir()
    Image.fromarray(random_images(1)[0]).save(tmp_path / "val" / "shirt" / "0.png")
    with pytest.raises(ValueError, match=r"class folders \['shirt'\] that the training images do not have"):
        resolve_data(str(tmp_path))
