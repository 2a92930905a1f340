"""Checks shared by the multi-crop methods (DINO, SwaV, SMoG): Trainer runs on crops of several sizes, hub IO."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from conftest import random_images
from PIL import Image
from transformers import TrainerCallback

import ssl_hub
from ssl_hub.data import ArrayImageDataset, collate_views
from ssl_hub.training import PretrainResult


class ViewSizes(TrainerCallback):
    """Records the view sizes of every batch the method receives."""

    def __init__(self, method: torch.nn.Module) -> None:
        self.sizes: list[list[tuple[int, int]]] = []
        method.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module: torch.nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        views = kwargs.get("views", args[0] if args else None)
        self.sizes.append([tuple(v.shape[-2:]) for v in views])


def train(
    method: ssl_hub.SSLMethod,
    output_dir: Path,
    *,
    image_size: int = 64,
    images: int = 16,
    batch_size: int = 8,
    callbacks: Sequence[TrainerCallback] = (),
    transform: Any = None,
    **arguments: Any,
) -> PretrainResult:
    """A few Trainer steps of ``method`` on small random images through ``ssl_hub.pretrain``."""
    args = {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": batch_size,
        "learning_rate": 1e-3,
        "save_strategy": "no",
        "use_cpu": True,
        "disable_tqdm": True,
        "report_to": "none",
        **arguments,
    }
    data = ArrayImageDataset(random_images(images, image_size))
    return ssl_hub.pretrain(
        method, data, args, image_size=image_size, transform=transform, callbacks=callbacks, save=False
    )


def fixed_views(method: ssl_hub.SSLMethod, transform: Any, count: int = 4, size: int = 64) -> list[torch.Tensor]:
    torch.manual_seed(0)
    items = [{"views": transform(Image.fromarray(image))} for image in random_images(count, size, seed=1)]
    return collate_views(items)["views"]


def assert_hub_round_trip(method: ssl_hub.SSLMethod, folder: Path, views: Sequence[torch.Tensor]) -> ssl_hub.SSLMethod:
    """timm's ``local-dir:`` gives the published backbone's features on every view size; ``load_method`` restores
    the whole state and the same loss. Returns the restored method."""
    method.save_pretrained(folder)
    published = method.eval().published
    backbone = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    with torch.no_grad():
        for view in {tuple(v.shape): v for v in views}.values():  # one view of each size
            torch.testing.assert_close(backbone(view), published(view), rtol=0, atol=0)
    restored = ssl_hub.load_method(folder)
    assert type(restored) is type(method)
    original_state, restored_state = method.state_dict(), restored.state_dict()
    assert original_state.keys() == restored_state.keys()
    for key, value in original_state.items():
        torch.testing.assert_close(restored_state[key], value, rtol=0, atol=0, msg=key)
    method.train()
    restored.train()
    with torch.no_grad():
        torch.testing.assert_close(restored(views=views).loss, method(views=views).loss, rtol=0, atol=0)
    return restored
