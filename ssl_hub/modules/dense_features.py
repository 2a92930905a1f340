"""Dense (per-location) feature maps of any timm backbone, and matching locations between two maps.

Dense SSL methods (DenseCL, Wang et al., CVPR 2021, arXiv:2011.09157) need the backbone's last feature map as
``(B, C, H, W)`` next to the pooled features the published model returns. timm's ``forward_features`` gives that map
in each family's own layout: ``(B, C, H, W)`` for CNNs and ConvNeXt, ``(B, H, W, C)`` for Swin-like models
(``output_fmt = "NHWC"``), ``(B, prefix + H * W, C)`` tokens for ViTs. timm's ``forward_intermediates`` exists on
every timm model and returns the same final features plus the last stage as an ``NCHW`` map, computing the token grid
itself (patch size, dynamic image size, prefix tokens). :func:`forward_dense_features` runs it once and reads the
dense map from the final features, so the map is exactly what ``forward_head`` pools.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

logger = logging.getLogger(__name__)

_FITTING_BACKBONES = (
    "timm models with a spatial feature map and forward_intermediates(): CNNs (ResNet, RegNet, EfficientNet...), "
    "ConvNeXt, ViT / DeiT / EVA / BEiT, Swin and other hierarchical transformers"
)


class DenseFeaturesError(ValueError):
    """A backbone that has no dense feature map."""


def dense_feature_dim(backbone: nn.Module, owner: str) -> int:
    """Width ``C`` of the dense map :func:`forward_dense_features` returns; raise if the backbone has no dense map.

    timm's ``num_features`` is the width of ``forward_features``, per location for spatial maps and tokens alike.

    Args:
        backbone: A timm model.
        owner: Who asks, for the error message.

    Raises:
        DenseFeaturesError: The backbone lacks ``forward_intermediates`` / ``forward_head`` or ``num_features``.
    """
    missing = [
        name for name in ("forward_intermediates", "forward_head") if not callable(getattr(backbone, name, None))
    ]
    width = getattr(backbone, "num_features", None)
    if missing or not isinstance(width, int) or width < 1:
        what = ", ".join(missing) or "num_features"
        raise DenseFeaturesError(
            f"{owner} needs the backbone's dense feature map (B, C, H, W), but {type(backbone).__name__} has no "
            f"{what}. Backbones that fit: {_FITTING_BACKBONES}; e.g. backbone='resnet50' or 'vit_small_patch16_224'."
        )
    return width


def forward_dense_features(backbone: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass giving the backbone's pooled features and its dense map.

    Args:
        backbone: A timm model (see :func:`dense_feature_dim`).
        images: ``(B, 3, H_img, W_img)``.

    Returns:
        The pooled features ``(B, D)``, ``backbone.forward_head(backbone.forward_features(images), pre_logits=True)``
        (what the published model returns), and the dense map ``(B, C, H, W)`` with ``C = backbone.num_features``:
        the final features themselves for CNNs, permuted for channels-last models, the patch tokens laid on their
        grid for ViTs (prefix tokens dropped). Models whose final features are not spatial (e.g. PiT's class tokens)
        give their last stage's map instead.

    Raises:
        DenseFeaturesError: The backbone has no dense map, or no map of ``num_features`` channels can be read.
    """
    channels = dense_feature_dim(backbone, type(backbone).__name__)
    forward_intermediates = cast(
        "Callable[..., tuple[torch.Tensor, list[torch.Tensor]]]", backbone.forward_intermediates
    )
    forward_head = cast("Callable[..., torch.Tensor]", backbone.forward_head)
    features, intermediates = forward_intermediates(images, indices=1, output_fmt="NCHW", intermediates_only=False)
    last_stage = intermediates[-1]  # (B, C', H, W), timm's own NCHW layout of the last stage
    height, width = last_stage.shape[-2:]
    for dense in (_as_map(backbone, features, height, width), last_stage):
        if dense is not None and dense.shape[1] == channels:
            return forward_head(features, pre_logits=True), dense
    shapes = ", ".join(str(tuple(t.shape)) for t in (features, last_stage))
    raise DenseFeaturesError(
        f"Cannot read a dense map of {channels} channels from {type(backbone).__name__}: its final features and "
        f"last stage have shapes {shapes}. Backbones that fit: {_FITTING_BACKBONES}."
    )


def warn_if_one_location(owner: str, locations: int, image_size: Sequence[int]) -> None:
    """Warn, once per method and image size, when the backbone's last map has a single location for these images.

    The loss terms that match locations then see each view's pooled features once more: e.g. a ResNet's stride-32 map
    of a 32 px image (CIFAR's size) is 1 x 1.

    Args:
        owner: The method, for the message.
        locations: ``H * W`` of the map of a global view.
        image_size: ``(H_img, W_img)`` of that view.
    """
    if locations == 1 and not torch.compiler.is_compiling():  # a warning is no part of a compiled graph
        _warn_one_location(owner, *(int(size) for size in image_size))


@functools.cache
def _warn_one_location(owner: str, height: int, width: int) -> None:
    logger.warning(
        f"{owner} matches locations of the backbone's last feature map, but for {height} x {width} px views that map "
        "is 1 x 1: the dense loss compares each view's pooled features once more. Train on larger images, or keep a "
        "larger map: timm CNNs take output_stride=16 or 8 (backbone_kwargs={'output_stride': 16}; on the command "
        "line --backbone_kwargs '{\"output_stride\": 16}'), dilating their last stages instead of striding them; ViTs "
        "a smaller patch_size."
    )


def _as_map(backbone: nn.Module, features: torch.Tensor, height: int, width: int) -> torch.Tensor | None:
    """``forward_features`` output as ``(B, C, H, W)``, or ``None`` when it is not a map on the ``H x W`` grid."""
    if features.ndim == 4:
        channels_last = getattr(backbone, "output_fmt", "NCHW") == "NHWC"
        return features.permute(0, 3, 1, 2) if channels_last else features  # (B, C, H, W)
    if features.ndim != 3:
        return None
    batch_size, num_tokens, channels = features.shape
    num_prefix = num_tokens - height * width  # class / register / distillation tokens come first in timm
    if num_prefix < 0 or num_prefix != getattr(backbone, "num_prefix_tokens", num_prefix):
        return None
    patches = features[:, num_prefix:]  # (B, H * W, C), row-major over the grid
    return patches.reshape(batch_size, height, width, channels).permute(0, 3, 1, 2)  # (B, C, H, W)


def select_most_similar(x: torch.Tensor, y: torch.Tensor, y_values: torch.Tensor) -> torch.Tensor:
    """For each location of ``x``, the value of the most similar location of ``y`` (DenseCL's correspondence).

    Similarity is the cosine of the features; ties go to the first location, as ``argmax``.

    Args:
        x: ``(B, N, C)`` features of the query locations.
        y: ``(B, M, C)`` features of the key locations.
        y_values: ``(B, M, D)`` what to pick at the key locations.

    Returns:
        ``(B, N, D)``: row ``[b, n]`` is ``y_values[b, m*]`` with ``m* = argmax_m cos(x[b, n], y[b, m])``.
    """
    if x.ndim != 3 or y.ndim != 3 or x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        raise ValueError(f"select_most_similar expects (B, N, C) and (B, M, C), got {x.shape} and {y.shape}.")
    if y_values.ndim != 3 or y_values.shape[:2] != y.shape[:2]:
        raise ValueError(
            f"select_most_similar expects y_values (B, M, D) with (B, M) = {tuple(y.shape[:2])}, got {y_values.shape}."
        )
    similarity = F.normalize(x, dim=2) @ F.normalize(y, dim=2).transpose(1, 2)  # (B, N, M)
    index = similarity.argmax(dim=2)  # (B, N)
    return torch.gather(y_values, 1, index.unsqueeze(2).expand(-1, -1, y_values.shape[2]))  # (B, N, D)


def location_grid(locations: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Where the cells of a ``height x width`` feature map of each located view lie in its image (VICRegL's grid).

    Args:
        locations: ``(B, 5)`` view locations from :class:`~ssl_hub.transforms.RandomResizedCropAndFlip`: the crop's
            top, left, height and width in pixels of the image, and 1.0 for a flipped view.
        height: Rows of the feature map.
        width: Columns of the feature map.

    Returns:
        ``(B, height, width, 2)``: the (row, column) image coordinates of each cell's centre, the crop split into
        equal cells; a flipped view's columns mirrored, since its map sees the crop mirrored.
    """
    if locations.ndim != 2 or locations.shape[1] != 5:
        raise ValueError(f"location_grid expects (B, 5) view locations, got {tuple(locations.shape)}.")
    top, left, crop_height, crop_width, flipped = locations.unbind(dim=1)  # (B,) each
    rows = (torch.arange(height, device=locations.device, dtype=locations.dtype) + 0.5) / height  # (H,)
    columns = (torch.arange(width, device=locations.device, dtype=locations.dtype) + 0.5) / width  # (W,)
    columns = torch.where(flipped[:, None] > 0.5, 1.0 - columns, columns)  # (B, W)
    y = top[:, None] + crop_height[:, None] * rows  # (B, H)
    x = left[:, None] + crop_width[:, None] * columns  # (B, W)
    y, x = torch.broadcast_tensors(y[:, :, None], x[:, None, :])  # (B, H, W) each
    return torch.stack([y, x], dim=-1)  # (B, H, W, 2)
