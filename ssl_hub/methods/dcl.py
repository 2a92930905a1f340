"""DCL: Decoupled Contrastive Learning.

Yeh, Hong, Hsu, Liu, Chen, LeCun, ECCV 2022 (arXiv:2110.06848). SimCLR's architecture and augmentation, trained
with a contrastive loss whose denominator leaves out the positive pair (eq. 6): removing this "negative-positive
coupling" makes training much less dependent on large batches. See :mod:`ssl_hub.methods.dclw` for the weighted
variant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ssl_hub._validation import check_positive, check_positive_int
from ssl_hub.heads import SimCLRProjectionHead
from ssl_hub.losses import DCLLoss
from ssl_hub.methods.base import MethodConfig, Paper, SSLMethod, SSLMethodOutput
from ssl_hub.registry import register_method
from ssl_hub.transforms import SimCLRTransform

PAPER = Paper(
    title="Decoupled Contrastive Learning",
    authors="Chun-Hsiao Yeh, Cheng-Yao Hong, Yen-Chi Hsu, Tyng-Luh Liu, Yubei Chen, Yann LeCun",
    year=2022,
    url="https://arxiv.org/abs/2110.06848",
    bibtex="""@inproceedings{yeh2022dcl,
  title={Decoupled Contrastive Learning},
  author={Yeh, Chun-Hsiao and Hong, Cheng-Yao and Hsu, Yen-Chi and Liu, Tyng-Luh and Chen, Yubei and LeCun, Yann},
  booktitle={European Conference on Computer Vision (ECCV)},
  year={2022}
}""",
)


@dataclass
class DCLConfig(MethodConfig):
    """DCL's hyperparameters.

    Args:
        temperature: Softmax temperature of the loss (0.1, as LightlySSL's ``DCLLoss``).
        projection_hidden_dim: Hidden width of SimCLR's projection head; ``None`` for the backbone's feature width.
        projection_output_dim: Embedding width the loss sees (SimCLR's 128).
        projection_num_layers: Linear layers in the head (2, SimCLR's).
        gather_distributed: Use all ranks' embeddings as negatives under multi-process training.
        views_in_one_pass: Encode both views as one batch of 2B images, as SimCLR's implementation (batch-norm
            statistics span both views); ``False`` encodes each view on its own, as LightlySSL's examples do.
    """

    temperature: float = 0.1
    projection_hidden_dim: int | None = None
    projection_output_dim: int = 128
    projection_num_layers: int = 2
    gather_distributed: bool = True
    views_in_one_pass: bool = True

    def validate(self) -> None:
        owner = type(self).__name__.removesuffix("Config")
        check_positive("temperature", self.temperature, owner)
        if self.projection_hidden_dim is not None:
            check_positive_int("projection_hidden_dim", self.projection_hidden_dim, owner)
        check_positive_int("projection_output_dim", self.projection_output_dim, owner)
        check_positive_int("projection_num_layers", self.projection_num_layers, owner, minimum=2)


@register_method
class DCL(SSLMethod):
    """DCL around any timm backbone; see :class:`DCLConfig` for the hyperparameters."""

    name = "dcl"
    display_name = "DCL"
    config_class = DCLConfig
    transform_class = SimCLRTransform
    paper = PAPER
    config: DCLConfig

    def __init__(self, backbone: str | nn.Module, config: DCLConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.projection_head = SimCLRProjectionHead(
            input_dim=self.feature_dim,
            hidden_dim=cfg.projection_hidden_dim or self.feature_dim,
            output_dim=cfg.projection_output_dim,
            num_layers=cfg.projection_num_layers,
        )
        self.criterion = self.build_criterion()

    def build_criterion(self) -> nn.Module:
        """The loss this method trains with."""
        return DCLLoss(self.config.temperature, gather_distributed=self.config.gather_distributed)

    def forward(self, views: Sequence[torch.Tensor]) -> SSLMethodOutput:
        self.check_views(views, count=2)

        def embed(images: torch.Tensor) -> torch.Tensor:
            return self.projection_head(self.backbone(images))  # (N, D_out)

        z0, z1 = self.encode_views(views, embed, self.config.views_in_one_pass)  # (B, D_out) each
        return SSLMethodOutput(loss=self.criterion(z0, z1))
