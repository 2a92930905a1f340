"""SimCLR: A Simple Framework for Contrastive Learning of Visual Representations.

Chen, Kornblith, Norouzi, Hinton, ICML 2020 (arXiv:2002.05709). Two augmented views of each image pass through
the backbone and an MLP projection head; NT-Xent pulls the two embeddings of an image together and pushes those
of all other images in the (global) batch apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ssl_hub._validation import check_non_negative, check_positive, check_positive_int
from ssl_hub.heads import SimCLRProjectionHead
from ssl_hub.losses import NTXentLoss
from ssl_hub.methods.base import MethodConfig, Paper, SSLMethod, SSLMethodOutput
from ssl_hub.registry import register_method
from ssl_hub.transforms import SimCLRTransform

PAPER = Paper(
    title="A Simple Framework for Contrastive Learning of Visual Representations",
    authors="Ting Chen, Simon Kornblith, Mohammad Norouzi, Geoffrey Hinton",
    year=2020,
    url="https://arxiv.org/abs/2002.05709",
    bibtex="""@inproceedings{chen2020simclr,
  title={A Simple Framework for Contrastive Learning of Visual Representations},
  author={Chen, Ting and Kornblith, Simon and Norouzi, Mohammad and Hinton, Geoffrey},
  booktitle={International Conference on Machine Learning (ICML)},
  year={2020}
}""",
)


@dataclass
class SimCLRConfig(MethodConfig):
    """SimCLR's hyperparameters.

    Args:
        temperature: NT-Xent temperature.
        projection_hidden_dim: Hidden width of the projection head; ``None`` for the backbone's feature width
            (the paper's choice).
        projection_output_dim: Embedding width the loss sees.
        projection_num_layers: Linear layers in the head (2 in SimCLR, 3 in SimCLR v2).
        memory_bank_size: Negatives kept from earlier batches (0: in-batch negatives only, as in the paper).
        gather_distributed: Use all ranks' embeddings as negatives under multi-process training.
        views_in_one_pass: Encode both views as one batch of 2B images, as SimCLR's implementation (batch-norm
            statistics span both views); ``False`` encodes each view on its own, as LightlySSL's examples do.
    """

    temperature: float = 0.5
    projection_hidden_dim: int | None = None
    projection_output_dim: int = 128
    projection_num_layers: int = 2
    memory_bank_size: int = 0
    gather_distributed: bool = True
    views_in_one_pass: bool = True

    def validate(self) -> None:
        check_positive("temperature", self.temperature, "SimCLR")
        if self.projection_hidden_dim is not None:
            check_positive_int("projection_hidden_dim", self.projection_hidden_dim, "SimCLR")
        check_positive_int("projection_output_dim", self.projection_output_dim, "SimCLR")
        check_positive_int("projection_num_layers", self.projection_num_layers, "SimCLR", minimum=2)
        check_non_negative("memory_bank_size", self.memory_bank_size, "SimCLR")


@register_method
class SimCLR(SSLMethod):
    """SimCLR around any timm backbone; see :class:`SimCLRConfig` for the hyperparameters."""

    name = "simclr"
    display_name = "SimCLR"
    config_class = SimCLRConfig
    transform_class = SimCLRTransform
    paper = PAPER
    config: SimCLRConfig

    def __init__(self, backbone: str | nn.Module, config: SimCLRConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.projection_head = SimCLRProjectionHead(
            input_dim=self.feature_dim,
            hidden_dim=cfg.projection_hidden_dim or self.feature_dim,
            output_dim=cfg.projection_output_dim,
            num_layers=cfg.projection_num_layers,
        )
        bank = (cfg.memory_bank_size, cfg.projection_output_dim) if cfg.memory_bank_size else 0
        self.criterion = NTXentLoss(cfg.temperature, memory_bank_size=bank, gather_distributed=cfg.gather_distributed)

    def forward(self, views: Sequence[torch.Tensor]) -> SSLMethodOutput:
        self.check_views(views, count=2)

        def embed(images: torch.Tensor) -> torch.Tensor:
            return self.projection_head(self.backbone(images))  # (N, D_out)

        z0, z1 = self.encode_views(views, embed, self.config.views_in_one_pass)  # (B, D_out) each
        return SSLMethodOutput(loss=self.criterion(z0, z1))
