"""MMCR: Maximum Manifold Capacity Representations.

Yerxa, Kuang, Simoncelli, Chung, NeurIPS 2023 (arXiv:2303.03307). The views of one image form a manifold in the
embedding space; the loss maximises the nuclear norm of the matrix of manifold centroids, which pulls each image's
views together (a centroid of unit vectors is long only when they agree) and spreads the images over many directions.
The official ImageNet code adds a momentum encoder whose views join the centroids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ssl_hub._validation import check_non_negative, check_positive_int, check_probability
from ssl_hub.heads.mmcr import MMCRProjectionHead
from ssl_hub.losses.mmcr import MMCRLoss
from ssl_hub.methods.base import MethodConfig, Paper, SSLMethod, SSLMethodOutput
from ssl_hub.modules.ema import ema_copy
from ssl_hub.registry import register_method
from ssl_hub.transforms.mmcr import MMCRTransform
from ssl_hub.transforms.multi_view import MultiViewTransform

if TYPE_CHECKING:
    from transformers import TrainerCallback

PAPER = Paper(
    title="Learning Efficient Coding of Natural Images with Maximum Manifold Capacity Representations",
    authors="Thomas Yerxa, Yilun Kuang, Eero Simoncelli, SueYeon Chung",
    year=2023,
    url="https://arxiv.org/abs/2303.03307",
    bibtex="""@inproceedings{yerxa2023mmcr,
  title={Learning Efficient Coding of Natural Images with Maximum Manifold Capacity Representations},
  author={Yerxa, Thomas and Kuang, Yilun and Simoncelli, Eero and Chung, SueYeon},
  booktitle={Advances in Neural Information Processing Systems (NeurIPS)},
  year={2023}
}""",
)


@dataclass
class MMCRConfig(MethodConfig):
    """MMCR's hyperparameters (the official ImageNet code, ``pretrain_imagenet.py``).

    Args:
        n_views: Views of each image (2 in the official ImageNet recipe; its CIFAR recipe, without a momentum
            encoder, uses 40).
        lmda: Weight of the per-image nuclear norms of the views (0 in the official code).
        momentum_encoder: Embed the views with a momentum (EMA) copy of the backbone and projector too, as the
            official ImageNet code; ``False`` is the paper's plain objective over the online views.
        momentum_start: EMA momentum of the momentum encoder at the first step (0.99, the official ``tau``) ...
        momentum_end: ... moving on a cosine to this value at the last step (0.99: constant, as the official code).
        projection_hidden_dim: Width of the projector's hidden layers.
        projection_output_dim: Embedding width the loss sees.
        gather_distributed: Centroid matrix of the global batch under multi-process training.
        views_in_one_pass: Encode all views as one batch of ``n_views * B`` images (batch-norm statistics span
            them, as the official code); ``False`` encodes each view on its own, as LightlySSL's example.
    """

    n_views: int = 2
    lmda: float = 0.0
    momentum_encoder: bool = True
    momentum_start: float = 0.99
    momentum_end: float = 0.99
    projection_hidden_dim: int = 8192
    projection_output_dim: int = 512
    gather_distributed: bool = True
    views_in_one_pass: bool = True

    def validate(self) -> None:
        check_positive_int("n_views", self.n_views, "MMCR", minimum=2)
        check_non_negative("lmda", self.lmda, "MMCR")
        check_probability("momentum_start", self.momentum_start, "MMCR")
        check_probability("momentum_end", self.momentum_end, "MMCR")
        check_positive_int("projection_hidden_dim", self.projection_hidden_dim, "MMCR")
        check_positive_int("projection_output_dim", self.projection_output_dim, "MMCR")


@register_method
class MMCR(SSLMethod):
    """MMCR around any timm backbone; see :class:`MMCRConfig` for the hyperparameters.

    Every view goes through the online backbone and projector and, with ``momentum_encoder``, through the momentum
    encoder (``teacher_backbone`` + ``teacher_projection_head``, an EMA copy moved after every optimizer step by
    :class:`~ssl_hub.training.EMAUpdateCallback`); :class:`~ssl_hub.losses.MMCRLoss` compares them. The published
    backbone is the online one, which the official code evaluates; the momentum encoder lives in ``ssl/``.
    """

    name = "mmcr"
    display_name = "MMCR"
    config_class = MMCRConfig
    transform_class = MMCRTransform
    paper = PAPER
    config: MMCRConfig

    def __init__(self, backbone: str | nn.Module, config: MMCRConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.projection_head = MMCRProjectionHead(
            input_dim=self.feature_dim, hidden_dim=cfg.projection_hidden_dim, output_dim=cfg.projection_output_dim
        )
        self.teacher_backbone: nn.Module | None = None
        self.teacher_projection_head: nn.Module | None = None
        if cfg.momentum_encoder:
            self.teacher_backbone = ema_copy(self.backbone)
            self.teacher_projection_head = ema_copy(self.projection_head)
        self.criterion = MMCRLoss(lmda=cfg.lmda, gather_distributed=cfg.gather_distributed)

    def make_transform(self, input_size: int = 224, **kwargs: Any) -> MultiViewTransform:
        """:class:`MMCRTransform` with ``n_views`` views."""
        kwargs.setdefault("k", self.config.n_views)
        return super().make_transform(input_size, **kwargs)

    def callbacks(self) -> list[TrainerCallback]:
        from ssl_hub.training.callbacks import EMAUpdateCallback

        if self.teacher_backbone is None or self.teacher_projection_head is None:
            return []
        pairs = [(self.backbone, self.teacher_backbone), (self.projection_head, self.teacher_projection_head)]
        return [EMAUpdateCallback(pairs, self.config.momentum_start, self.config.momentum_end)]

    def forward(self, views: Sequence[torch.Tensor]) -> SSLMethodOutput:
        self.check_views(views, count=self.config.n_views)
        one_pass = self.config.views_in_one_pass
        online = torch.stack(
            self.encode_views(views, lambda x: self.projection_head(self.backbone(x)), one_pass), dim=1
        )  # (B, k, D)
        momentum = None
        if self.teacher_backbone is not None and self.teacher_projection_head is not None:
            teacher_backbone, teacher_head = self.teacher_backbone, self.teacher_projection_head
            with torch.no_grad():
                momentum = torch.stack(
                    self.encode_views(views, lambda x: teacher_head(teacher_backbone(x)), one_pass), dim=1
                )  # (B, k, D)
        return SSLMethodOutput.from_terms(self.criterion.terms(online, momentum))
