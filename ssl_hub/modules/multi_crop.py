"""Multi-crop training on any timm backbone (Caron et al., SwAV 2020 and DINO 2021): views of several sizes.

Multi-crop methods see 2 global crops and several smaller local crops of each image. :func:`collate_views` batches
each view position, so a batch holds view tensors of different sizes; :func:`multi_crop_forward` runs each size group
through the network as one batch, as the official ``MultiCropWrapper`` of DINO does (or each view alone, as LightlySSL's
examples do). Backbones built for one input size (timm ViTs at 224 px) are made to accept every size with timm's own
``dynamic_img_size`` (:func:`dynamic_size_backbone`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import timm
import torch
from timm.models import get_model_args, get_model_input_config
from torch import nn

# Construction arguments timm's get_model_args leaves out as training-time settings (with any "*_drop_rate").
RUNTIME_ARGS = ("drop_rate", "drop_path_rate", "drop_block_rate")


def check_multi_crop_views(views: Sequence[torch.Tensor], owner: str) -> None:
    """Raise a clear error unless ``views`` holds 2 global crops of one size, then any local crops.

    Every view is a ``(B, C, H, W)`` batch of the same ``B`` images; local crops may have any size.
    """
    if isinstance(views, torch.Tensor) or len(views) < 2:
        got = "a single tensor" if isinstance(views, torch.Tensor) else f"{len(views)} view(s)"
        raise ValueError(
            f"{owner} takes 2 global crops followed by local crops of each image, got {got}: build the data with "
            "method.make_transform(), which returns the views the method expects."
        )
    shapes = [tuple(v.shape) for v in views]
    if any(v.ndim != 4 or v.shape[:2] != views[0].shape[:2] for v in views):
        raise ValueError(f"{owner} takes (B, C, H, W) views of the same B images, got shapes {shapes}.")
    if views[0].shape != views[1].shape:
        raise ValueError(f"{owner}: the first 2 views are the global crops and must share one size, got {shapes[:2]}.")


def multi_crop_forward(
    network: Callable[[torch.Tensor], torch.Tensor],
    views: Sequence[torch.Tensor],
    one_pass_per_size: bool = True,
    split_at: int = 0,
) -> list[torch.Tensor]:
    """``network`` applied to every view, one forward pass per view size (or per view).

    Views of one size are concatenated and embedded together (batch-norm statistics span them, as in the official
    SwAV / DINO code); the outputs come back split per view, in the order of ``views``. With ``one_pass_per_size``
    false every view is embedded on its own (batch-norm statistics of one view), as LightlySSL's examples do.
    ``split_at`` keeps the views before it out of the passes of the views after it, even at one size: ``split_at=2``
    embeds the 2 global crops in one pass and the local crops in another, as LightlySSL's LeJEPA example.

    Args:
        network: Maps a ``(N, C, H, W)`` batch to ``(N, ...)`` outputs (backbone, then heads).
        views: ``(B, C, H_i, W_i)`` batches.
        one_pass_per_size: One pass over the views of each size; false: one pass per view.
        split_at: Views ``[:split_at]`` and ``[split_at:]`` never share a pass (0: no split).

    Returns:
        One ``(B, ...)`` output per view.
    """
    if not one_pass_per_size:
        return [network(view) for view in views]
    groups: dict[tuple[bool, tuple[int, ...]], list[int]] = {}
    for index, view in enumerate(views):
        groups.setdefault((index >= split_at, tuple(view.shape)), []).append(index)
    outputs: dict[int, torch.Tensor] = {}
    for indices in groups.values():
        embedded = network(torch.cat([views[i] for i in indices]))  # (len(indices) * B, ...)
        outputs.update(zip(indices, embedded.chunk(len(indices)), strict=True))
    return [outputs[i] for i in range(len(views))]


def dynamic_size_backbone(backbone: nn.Module) -> nn.Module:
    """``backbone`` made to accept every input size, with its weights; models that already do are returned as is.

    CNNs take any size. A timm model fixed to one size whose class supports ``dynamic_img_size`` (ViT, DeiT, EVA,
    ...) is rebuilt with ``dynamic_img_size=True`` from timm's record of its construction arguments
    (``timm.models.get_model_args``) and given the same weights: position embeddings are then interpolated to each
    input's patch grid in the forward pass. timm records the argument, so the published ``config.json`` rebuilds
    the same model. Other fixed-size models are returned unchanged; :func:`check_input_sizes` then explains.
    """
    if not get_model_input_config(backbone)["fixed_input_size"]:
        return backbone
    architecture = getattr(backbone, "pretrained_cfg", {}).get("architecture")
    if architecture is None or "dynamic_img_size" not in inspect.signature(type(backbone)).parameters:
        return backbone
    # Drop rates are training-time arguments that get_model_args leaves out; the factory's record keeps them.
    recorded = getattr(backbone, "_model_args", {})
    drop_rates = {k: v for k, v in recorded.items() if k in RUNTIME_ARGS or k.endswith("_drop_rate")}
    arguments = {**get_model_args(backbone), **drop_rates, "dynamic_img_size": True}
    rebuilt = timm.create_model(architecture, pretrained=False, **arguments)
    rebuilt.load_state_dict(backbone.state_dict())
    rebuilt.pretrained_cfg = rebuilt.default_cfg = backbone.pretrained_cfg
    return rebuilt.train(backbone.training)


def crop_size_multiple(backbone: nn.Module) -> int:
    """The output stride of a timm backbone (16 for a ViT-/16, 32 for ResNets and ConvNeXts), 1 if unknown.

    A crop whose side is a multiple of it fits every architecture: a ViT needs whole patches, a ConvNeXt's
    unpadded downsampling needs at least one cell at the last stage.
    """
    feature_info = getattr(backbone, "feature_info", None)
    if isinstance(feature_info, list) and feature_info and isinstance(feature_info[-1], dict):
        return int(feature_info[-1].get("reduction", 1))
    return 1


def check_input_sizes(backbone: nn.Module, views: Sequence[torch.Tensor], owner: str) -> None:
    """Raise a clear error when ``backbone`` accepts one input size only and some views have another."""
    config = get_model_input_config(backbone)
    if not config["fixed_input_size"]:
        return
    size = tuple(config["input_size"][1:])
    other = sorted({tuple(v.shape[-2:]) for v in views} - {size})
    if other:
        raise ValueError(
            f"{owner}: the backbone {type(backbone).__name__} only accepts {size} px images and timm cannot make it "
            f"take other sizes (no dynamic_img_size), but views of {other} px came: use local crops of the global "
            "size, no local crops, or a backbone that takes any size (CNNs, timm ViTs)."
        )
