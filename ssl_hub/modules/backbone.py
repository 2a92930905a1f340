"""Build the timm backbone a method wraps, and read what a method needs to know about it."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import timm
from timm.models import get_model_input_config, parse_model_name, split_model_name_tag
from torch import nn


class UnknownBackboneError(ValueError):
    """A backbone name timm does not know."""


def create_backbone(backbone: str | nn.Module, **timm_kwargs: Any) -> nn.Module:
    """A timm model without classifier (``num_classes=0``): ``model(x)`` returns pooled ``(B, D)`` features.

    Args:
        backbone: A timm architecture (``"resnet18"``, random weights unless ``pretrained=True``), a published
            backbone (``"hf-hub:user/repo"`` or ``"local-dir:path"``, loaded with its weights), or a model instance
            (its classifier is removed in place).
        **timm_kwargs: Passed to ``timm.create_model`` (``pretrained``, ``img_size``, ``drop_path_rate``...).
    """
    if isinstance(backbone, nn.Module):
        if getattr(backbone, "num_classes", 0):
            reset_classifier = getattr(backbone, "reset_classifier", None)
            if not callable(reset_classifier):
                raise ValueError(
                    f"The backbone {type(backbone).__name__} has a classifier and no reset_classifier(): "
                    "pass it without its classifier (timm: num_classes=0)."
                )
            reset_classifier(0)
        return backbone
    if not isinstance(backbone, str):
        raise TypeError(f"backbone must be a timm model name or an nn.Module, got {type(backbone).__name__}.")
    source, model_id = parse_model_name(backbone)
    if source is None:
        architecture, _ = split_model_name_tag(model_id)
        if not timm.is_model(architecture):
            raise UnknownBackboneError(_unknown_backbone_message(backbone, architecture))
    elif source == "local-dir":
        from ssl_hub.hub.folder import check_backbone_folder

        check_backbone_folder(Path(model_id))
    timm_kwargs.setdefault("pretrained", source is not None)  # a published backbone comes with its weights
    try:
        return timm.create_model(backbone, num_classes=0, **timm_kwargs)
    except RuntimeError as error:
        if "Unknown model" in str(error):  # a published folder naming an architecture this timm lacks
            raise UnknownBackboneError(f"{backbone}: {error}. Upgrade timm or check config.json.") from error
        raise


def _unknown_backbone_message(name: str, architecture: str) -> str:
    close = difflib.get_close_matches(architecture, timm.list_models(), n=5, cutoff=0.6)
    hint = f" Close matches: {', '.join(close)}." if close else ""
    return (
        f"Unknown backbone {name!r}: timm {timm.__version__} has no architecture {architecture!r}.{hint} "
        "List them with timm.list_models('*pattern*'), or pass 'hf-hub:REPO' / 'local-dir:PATH' for a published one."
    )


def feature_dim(backbone: nn.Module) -> int:
    """Width ``D`` of the pooled features ``backbone(x)`` returns, read from the model."""
    for attribute in ("head_hidden_size", "num_features"):
        value = getattr(backbone, attribute, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ValueError(
        f"Cannot read the feature width of backbone {type(backbone).__name__}: it has no num_features attribute "
        "(every timm model has one). Set backbone.num_features to the width of backbone(x)."
    )


def fit_input_size(backbone: nn.Module, image_size: int) -> None:
    """Adapt a backbone built for one fixed input size (e.g. a ViT at 224 px) to ``image_size``.

    Uses timm's own ``set_input_size`` (resampling position embeddings), which also records the new size so that the
    published ``config.json`` rebuilds the same model. Backbones that accept any size are left alone.
    """
    input_config = get_model_input_config(backbone)
    if not input_config["fixed_input_size"] or tuple(input_config["input_size"][1:]) == (image_size, image_size):
        return
    set_input_size = getattr(backbone, "set_input_size", None)
    if set_input_size is None:
        raise ValueError(
            f"{type(backbone).__name__} only accepts {input_config['input_size'][1:]} px images and cannot be "
            f"resized to {image_size} px: pick that image size, or build it with img_size={image_size}."
        )
    set_input_size(img_size=(image_size, image_size))
