"""VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning.

Bardes, Ponce, LeCun, ICLR 2022 (arXiv:2105.04906). Two augmented views pass through the same backbone and a wide
expander; the loss pulls paired embeddings together (invariance) while keeping every embedding dimension's standard
deviation above 1 over the batch (variance) and decorrelating the dimensions (covariance), which prevents collapse
without negatives, momentum encoder or batch-normalised outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ssl_hub._validation import check_non_negative, check_positive_int
from ssl_hub.heads import VICRegProjectionHead
from ssl_hub.losses import VICRegLoss
from ssl_hub.methods.base import MethodConfig, Paper, SSLMethod, SSLMethodOutput
from ssl_hub.registry import register_method
from ssl_hub.transforms import VICRegTransform

PAPER = Paper(
    title="VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning",
    authors="Adrien Bardes, Jean Ponce, Yann LeCun",
    year=2022,
    url="https://arxiv.org/abs/2105.04906",
    bibtex="""@inproceedings{bardes2022vicreg,
  title={VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning},
  author={Bardes, Adrien and Ponce, Jean and LeCun, Yann},
  booktitle={International Conference on Learning Representations (ICLR)},
  year={2022}
}""",
)


@dataclass
class VICRegConfig(MethodConfig):
    """VICReg's hyperparameters (paper section 4.2, official ``main_vicreg.py``).

    Args:
        lambda_param: Weight of the invariance term (25).
        mu_param: Weight of the variance term (25).
        nu_param: Weight of the covariance term (1).
        eps: Added to the variance before its square root (1e-4).
        projection_hidden_dim: Width of the expander's hidden layers (8192).
        projection_output_dim: Embedding width the loss sees (8192).
        projection_num_layers: Linear layers in the expander (3).
        gather_distributed: Variance and covariance over all ranks under multi-process training, as the official
            code does.
    """

    lambda_param: float = 25.0
    mu_param: float = 25.0
    nu_param: float = 1.0
    eps: float = 1e-4
    projection_hidden_dim: int = 8192
    projection_output_dim: int = 8192
    projection_num_layers: int = 3
    gather_distributed: bool = True

    def validate(self) -> None:
        for name in ("lambda_param", "mu_param", "nu_param", "eps"):
            check_non_negative(name, getattr(self, name), "VICReg")
        check_positive_int("projection_hidden_dim", self.projection_hidden_dim, "VICReg")
        check_positive_int("projection_output_dim", self.projection_output_dim, "VICReg")
        check_positive_int("projection_num_layers", self.projection_num_layers, "VICReg", minimum=2)


@register_method
class VICReg(SSLMethod):
    """VICReg around any timm backbone; see :class:`VICRegConfig` for the hyperparameters."""

    name = "vicreg"
    display_name = "VICReg"
    config_class = VICRegConfig
    transform_class = VICRegTransform
    paper = PAPER
    config: VICRegConfig

    def __init__(self, backbone: str | nn.Module, config: VICRegConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.projection_head = VICRegProjectionHead(
            input_dim=self.feature_dim,
            hidden_dim=cfg.projection_hidden_dim,
            output_dim=cfg.projection_output_dim,
            num_layers=cfg.projection_num_layers,
        )
        self.criterion = VICRegLoss(
            lambda_param=cfg.lambda_param,
            mu_param=cfg.mu_param,
            nu_param=cfg.nu_param,
            gather_distributed=cfg.gather_distributed,
            eps=cfg.eps,
        )

    def forward(self, views: Sequence[torch.Tensor]) -> SSLMethodOutput:
        self.check_views(views, count=2)
        # One pass per view, as the official code: batch-norm statistics are those of one view.
        z_a = self.projection_head(self.backbone(views[0]))  # (B, D_out)
        z_b = self.projection_head(self.backbone(views[1]))  # (B, D_out)
        # embedding_std: the mean standard deviation of a dimension, which the variance term pushes to 1
        return SSLMethodOutput.from_terms(self.criterion.terms(z_a, z_b), embedding_std=z_a.std(dim=0).mean())
