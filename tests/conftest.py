"""Test setup: one torch thread per process, a local Hub instead of the internet, a private HF cache; fixtures."""

from __future__ import annotations

import os
import tempfile

from hub_server import HubServer, HubState

# Before torch / huggingface_hub are imported anywhere. All Hub traffic goes to a local server (bound now, served
# by the `hub` fixture), so no test can reach the internet; and torch's thread pool oversubscribes 2 busy cores
# badly (tiny models ran 500x slower under load).
LOCAL_HUB = HubServer()
os.environ["HF_ENDPOINT"] = LOCAL_HUB.url
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="ssl_hub-tests-hf-home-")
os.environ.pop("HF_TOKEN", None)
os.environ.pop("HF_HUB_OFFLINE", None)
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ssl_hub.modules import dense_features

torch.set_num_threads(1)

TINY_BACKBONES = ["test_resnet", "test_vit", "test_convnext"]


@pytest.fixture(scope="session")
def hub_server() -> Iterator[HubServer]:
    """The local Hub, serving for the whole session."""
    LOCAL_HUB.start()
    yield LOCAL_HUB
    LOCAL_HUB.stop()


@pytest.fixture
def hub(hub_server: HubServer) -> HubState:
    """The local Hub's state, emptied for each test (repositories, tokens, injected failures)."""
    hub_server.state.repos.clear()
    hub_server.state.requests.clear()
    hub_server.state.fail_commits.clear()
    hub_server.state.token = None
    return hub_server.state


def std_of_l2_normalized_reference(rows: list[list[float]]) -> float:
    """SimSiam's collapse monitor (Fig. 2): each row divided by its norm, the sample std of each column, their mean."""
    normalized = [[x / math.sqrt(sum(v * v for v in row)) for x in row] for row in rows]
    stds = []
    for column in zip(*normalized, strict=True):
        mean = sum(column) / len(column)
        stds.append(math.sqrt(sum((x - mean) ** 2 for x in column) / (len(column) - 1)))
    return sum(stds) / len(stds)


def one_location_warnings(
    caplog: pytest.LogCaptureFixture, method: nn.Module, views: Sequence[torch.Tensor], forwards: int = 1
) -> list[str]:
    """What ``warn_if_one_location`` logs over ``forwards`` forward passes of a dense method on ``views``, its
    once-per-process memory cleared first (earlier tests may have warned)."""
    dense_features._warn_one_location.cache_clear()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=dense_features.__name__):
        for _ in range(forwards):
            method(views=views)
    return [record.getMessage() for record in caplog.records]


def normalized_entropy_reference(logits: list[list[float]]) -> float:
    """Mean over the rows of -sum_k p_k ln p_k / ln K, p = softmax(row)."""
    probabilities = []
    for row in logits:
        exps = [math.exp(x - max(row)) for x in row]
        probabilities.append([e / sum(exps) for e in exps])
    return probability_entropy_reference(probabilities)


def probability_entropy_reference(probabilities: list[list[float]]) -> float:
    """Mean over the rows p of -sum_k p_k ln p_k / ln K, with 0 ln 0 = 0."""
    total = 0.0
    for p in probabilities:
        total += -sum(x * math.log(x) for x in p if x > 0) / math.log(len(p))
    return total / len(probabilities)


def random_images(count: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """``(count, size, size, 3)`` uint8 images with some structure (blobs), not just noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    for i in range(count):
        cy, cx = rng.uniform(0, size, 2).tolist()
        radius = rng.uniform(size / 8, size / 3)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2
        background, foreground = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        images[i] = np.where(mask[..., None], foreground, background)
    return images


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """``root/{cat,dog}/*.png``: 6 labelled RGB images, two of them one level deeper."""
    root = tmp_path / "images"
    for i, array in enumerate(random_images(6, 40)):
        label = "cat" if i % 2 else "dog"
        folder = root / label / ("nested" if i < 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(folder / f"img{i}.png")
    return root


@pytest.fixture
def views() -> list[torch.Tensor]:
    """Two fixed batches of four 32 px views."""
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(4, 3, 32, 32, generator=generator) for _ in range(2)]
