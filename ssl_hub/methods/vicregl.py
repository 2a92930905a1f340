"""VICRegL: Self-Supervised Learning of Local Visual Features.

Bardes, Ponce, LeCun, NeurIPS 2022 (arXiv:2210.01571). VICReg on the pooled features of multi-crop views (global)
plus VICReg on matched locations of their feature maps (local): each location is paired with its nearest location
in the other view, by the distance of their embeddings and by the distance of where they lie in the image. The local
term trains the feature map that detection and segmentation heads read, with little cost to the pooled features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ssl_hub._validation import check_non_negative, check_one_of, check_positive_int, check_probability
from ssl_hub.heads import VICRegProjectionHead
from ssl_hub.losses.vicregl import VICRegLLoss
from ssl_hub.methods.base import MethodConfig, Paper, SSLMethod, SSLMethodOutput
from ssl_hub.modules.dense_features import (
    dense_feature_dim,
    forward_dense_features,
    location_grid,
    warn_if_one_location,
)
from ssl_hub.modules.multi_crop import (
    check_input_sizes,
    check_multi_crop_views,
    crop_size_multiple,
    dynamic_size_backbone,
)
from ssl_hub.registry import register_method
from ssl_hub.transforms.located_crop import LOCATION_SIZE
from ssl_hub.transforms.multi_crop import local_crop_size
from ssl_hub.transforms.multi_view import MultiViewTransform
from ssl_hub.transforms.vicregl import VICRegLTransform

PROJECTION_NORMS = ("auto", "batch", "layer")

PAPER = Paper(
    title="VICRegL: Self-Supervised Learning of Local Visual Features",
    authors="Adrien Bardes, Jean Ponce, Yann LeCun",
    year=2022,
    url="https://arxiv.org/abs/2210.01571",
    bibtex="""@inproceedings{bardes2022vicregl,
  title={VICRegL: Self-Supervised Learning of Local Visual Features},
  author={Bardes, Adrien and Ponce, Jean and LeCun, Yann},
  booktitle={Advances in Neural Information Processing Systems (NeurIPS)},
  year={2022}
}""",
)


@dataclass
class VICRegLConfig(MethodConfig):
    """VICRegL's hyperparameters (official ``main_vicregl.py``).

    Args:
        lambda_param: Weight of the invariance terms (25).
        mu_param: Weight of the variance terms (25).
        nu_param: Weight of the covariance terms (1).
        alpha: Weight of the global loss; the local loss has 1 - alpha (0.75; the paper also publishes 0.9).
        eps: Added to the variance before its square root (1e-4).
        global_view_matches: Locations of a global view kept per pair when matching by image position: those nearest
            to a location of the other view (official num_matches[0], 20 of 7 x 7).
        other_view_matches: The same for the other view of the pair (official num_matches[1], 4).
        projection_hidden_dim: Width of the hidden layers of the expander of the pooled features (8192).
        projection_output_dim: Embedding width of the global loss (8192).
        projection_num_layers: Linear layers of that expander (3).
        local_projection_hidden_dim: Width of the hidden layers of the expander applied at each location of the
            feature map (512).
        local_projection_output_dim: Embedding width of the local loss (512).
        local_projection_num_layers: Linear layers of that expander (3).
        projection_norm: Normalisation of both expanders' hidden layers: ``"batch"``, ``"layer"`` or ``"auto"``
            (the default: layer norm for a backbone that normalises with layer norm only, as ConvNeXt and ViTs, batch
            norm otherwise, as the official code chooses for ConvNeXt and ResNets).
        gather_distributed: Variance and covariance over all ranks under multi-process training, as the official
            code does.
    """

    lambda_param: float = 25.0
    mu_param: float = 25.0
    nu_param: float = 1.0
    alpha: float = 0.75
    eps: float = 1e-4
    global_view_matches: int = 20
    other_view_matches: int = 4
    projection_hidden_dim: int = 8192
    projection_output_dim: int = 8192
    projection_num_layers: int = 3
    local_projection_hidden_dim: int = 512
    local_projection_output_dim: int = 512
    local_projection_num_layers: int = 3
    projection_norm: str = "auto"
    gather_distributed: bool = True

    def validate(self) -> None:
        for name in ("lambda_param", "mu_param", "nu_param", "eps"):
            check_non_negative(name, getattr(self, name), "VICRegL")
        check_probability("alpha", self.alpha, "VICRegL")
        for name in (
            "global_view_matches",
            "other_view_matches",
            "projection_hidden_dim",
            "projection_output_dim",
            "local_projection_hidden_dim",
            "local_projection_output_dim",
        ):
            check_positive_int(name, getattr(self, name), "VICRegL")
        check_positive_int("projection_num_layers", self.projection_num_layers, "VICRegL", minimum=2)
        check_positive_int("local_projection_num_layers", self.local_projection_num_layers, "VICRegL", minimum=2)
        check_one_of("projection_norm", self.projection_norm, PROJECTION_NORMS, "VICRegL")


@register_method
class VICRegL(SSLMethod):
    """VICRegL around any timm backbone with a spatial feature map; see :class:`VICRegLConfig`.

    ``views`` are :class:`~ssl_hub.transforms.VICRegLTransform`'s: 2 global crops of one size, any smaller crops,
    then each view's ``(B, 5)`` location. Each view passes alone through the backbone (as the official code), giving
    its pooled features (what the published model returns) and its feature map (``forward_dense_features``: CNNs,
    ConvNeXt, the patch tokens of ViTs). ``projection_head`` embeds the pooled features, ``local_projection_head``
    each location of the map; :func:`~ssl_hub.modules.location_grid` places the map's cells in the image.
    A head whose loss has no weight (``alpha`` 0 or 1) is not built, as in the official code. (The official
    ``--maps-lr-ratio`` lowers the rate of parameters named ``maps_classifier``, which its model does not have: the
    local expander trains at the rate of the rest, here too.)
    """

    name = "vicregl"
    display_name = "VICRegL"
    config_class = VICRegLConfig
    transform_class = VICRegLTransform
    paper = PAPER
    config: VICRegLConfig

    def __init__(self, backbone: str | nn.Module, config: VICRegLConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.backbone = dynamic_size_backbone(self.backbone)
        dense_dim = dense_feature_dim(self.backbone, "VICRegL")
        norm_layer = {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}[resolve_projection_norm(cfg, self.backbone)]
        self.projection_head = (
            VICRegProjectionHead(
                self.feature_dim,
                cfg.projection_hidden_dim,
                cfg.projection_output_dim,
                cfg.projection_num_layers,
                norm_layer,
            )
            if cfg.alpha > 0
            else None
        )
        self.local_projection_head = (
            VICRegProjectionHead(
                dense_dim,
                cfg.local_projection_hidden_dim,
                cfg.local_projection_output_dim,
                cfg.local_projection_num_layers,
                norm_layer,
            )
            if cfg.alpha < 1
            else None
        )
        self.criterion = VICRegLLoss(
            lambda_param=cfg.lambda_param,
            mu_param=cfg.mu_param,
            nu_param=cfg.nu_param,
            alpha=cfg.alpha,
            num_matches=(cfg.global_view_matches, cfg.other_view_matches),
            gather_distributed=cfg.gather_distributed,
            eps=cfg.eps,
        )

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The view's embedding ``(B, D)`` and its map's embeddings ``(B, H, W, D')`` (the pooled features and the
        map themselves where a head is not built)."""
        pooled, dense_map = forward_dense_features(self.backbone, images)  # (B, D_backbone), (B, C, H, W)
        cells = dense_map.permute(0, 2, 3, 1)  # (B, H, W, C)
        embedding = pooled if self.projection_head is None else self.projection_head(pooled)
        if self.local_projection_head is not None:  # batch norm: over every location of the batch, as officially
            cells = self.local_projection_head(cells.flatten(0, 2)).unflatten(0, cells.shape[:3])  # (B, H, W, D')
        return embedding, cells

    def forward(self, views: Sequence[torch.Tensor]) -> SSLMethodOutput:
        images, locations = split_located_views(views, type(self).__name__)
        check_multi_crop_views(images, type(self).__name__)
        check_input_sizes(self.backbone, images, type(self).__name__)
        features = [self.encode(view) for view in images]  # ((B, D), (B, H_v, W_v, D')) each
        _, first_map = features[0]  # a global view's (B, H, W, D')
        warn_if_one_location(type(self).__name__, first_map.shape[1] * first_map.shape[2], images[0].shape[-2:])
        grids = [
            location_grid(location, *maps.shape[1:3])  # (B, H_v, W_v, 2)
            for location, (_, maps) in zip(locations, features, strict=True)
        ]
        terms = self.criterion.terms(features[:2], grids[:2], features[2:], grids[2:])
        return SSLMethodOutput.from_terms(terms)

    def make_transform(self, input_size: int = 224, **kwargs: Any) -> MultiViewTransform:
        """:class:`VICRegLTransform` with global crops of ``input_size`` px and local crops scaled to them."""
        kwargs.setdefault("crop_sizes", (input_size, local_crop_size(input_size, crop_size_multiple(self.backbone))))
        return super().make_transform(input_size, **kwargs)


def resolve_projection_norm(config: VICRegLConfig, backbone: nn.Module) -> str:
    """``config.projection_norm``, with ``"auto"`` resolved for ``backbone``: ``"layer"`` if it normalises with layer
    norm and never with batch norm (ConvNeXt, ViTs), else ``"batch"`` (ResNets, EfficientNets...)."""
    if config.projection_norm != "auto":
        return config.projection_norm
    norms = [m for m in backbone.modules() if isinstance(m, nn.LayerNorm | _BatchNorm)]
    layer_norm_only = bool(norms) and all(isinstance(m, nn.LayerNorm) for m in norms)
    return "layer" if layer_norm_only else "batch"


def split_located_views(
    views: Sequence[torch.Tensor], owner: str
) -> tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]]:
    """``[*views, *locations]`` (:class:`VICRegLTransform`'s output, batched) split into the views and their
    ``(B, 5)`` locations; a clear error for anything else."""
    count = len(views) // 2
    if (
        isinstance(views, torch.Tensor)
        or len(views) % 2
        or any(v.ndim != 2 or v.shape[1] != LOCATION_SIZE for v in views[count:])
    ):
        shapes = "a single tensor" if isinstance(views, torch.Tensor) else [tuple(v.shape) for v in views]
        raise ValueError(
            f"{owner} takes views followed by their (B, {LOCATION_SIZE}) locations, got {shapes}: build the data with "
            "method.make_transform() (VICRegLTransform), which returns both."
        )
    return views[:count], views[count:]
