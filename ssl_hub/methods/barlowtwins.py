"""Barlow Twins: Self-Supervised Learning via Redundancy Reduction.

Zbontar, Jing, Misra, LeCun, Deny, ICML 2021 (arXiv:2103.03230). Two augmented views of each image pass through
the same backbone and a wide projector; the loss drives the cross-correlation matrix of the two batches of
embeddings towards the identity: invariance on the diagonal, decorrelated dimensions off it. No negatives, no
momentum encoder, no predictor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ssl_hub._validation import check_non_negative, check_positive_int
from ssl_hub.heads import BarlowTwinsProjectionHead
from ssl_hub.losses import BarlowTwinsLoss
from ssl_hub.methods.base import MethodConfig, Paper, SSLMethod, SSLMethodOutput
from ssl_hub.registry import register_method
from ssl_hub.transforms import BYOLTransform

PAPER = Paper(
    title="Barlow Twins: Self-Supervised Learning via Redundancy Reduction",
    authors="Jure Zbontar, Li Jing, Ishan Misra, Yann LeCun, Stéphane Deny",
    year=2021,
    url="https://arxiv.org/abs/2103.03230",
    bibtex="""@inproceedings{zbontar2021barlow,
  title={Barlow Twins: Self-Supervised Learning via Redundancy Reduction},
  author={Zbontar, Jure and Jing, Li and Misra, Ishan and LeCun, Yann and Deny, St{\\'e}phane},
  booktitle={International Conference on Machine Learning (ICML)},
  year={2021}
}""",
)


@dataclass
class BarlowTwinsConfig(MethodConfig):
    """Barlow Twins' hyperparameters (paper section 2 and 4).

    Args:
        lambda_param: Weight of the redundancy-reduction term (the paper's 5e-3).
        projection_hidden_dim: Width of the projector's two hidden layers (8192).
        projection_output_dim: Embedding width the loss sees (8192).
        gather_distributed: Batch statistics and cross-correlation over all ranks under multi-process training,
            as the official code does.
    """

    lambda_param: float = 5e-3
    projection_hidden_dim: int = 8192
    projection_output_dim: int = 8192
    gather_distributed: bool = True

    def validate(self) -> None:
        check_non_negative("lambda_param", self.lambda_param, "BarlowTwins")
        check_positive_int("projection_hidden_dim", self.projection_hidden_dim, "BarlowTwins")
        check_positive_int("projection_output_dim", self.projection_output_dim, "BarlowTwins")


@register_method
class BarlowTwins(SSLMethod):
    """Barlow Twins around any timm backbone; see :class:`BarlowTwinsConfig` for the hyperparameters.

    The default augmentation is BYOL's asymmetric pair of views, the one the paper uses (section 4).
    """

    name = "barlowtwins"
    display_name = "Barlow Twins"
    config_class = BarlowTwinsConfig
    transform_class = BYOLTransform
    paper = PAPER
    config: BarlowTwinsConfig

    def __init__(self, backbone: str | nn.Module, config: BarlowTwinsConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.projection_head = BarlowTwinsProjectionHead(
            input_dim=self.feature_dim, hidden_dim=cfg.projection_hidden_dim, output_dim=cfg.projection_output_dim
        )
        self.criterion = BarlowTwinsLoss(lambda_param=cfg.lambda_param, gather_distributed=cfg.gather_distributed)

    @classmethod
    def default_training_arguments(cls, config: MethodConfig | None = None) -> dict[str, Any]:
        # The paper's weight decay (section 4). Its optimizer is LARS (timm's, through timm_optimizer); on Fashion-MNIST
        # the shared AdamW recipe at 3e-4 learned more than at 1e-3 (95 and 936 steps) and than LARS with trust-ratio
        # clipping at solo-learn's CIFAR rate of 0.3 (936 steps; benchmarks/RESULTS.md).
        return {**super().default_training_arguments(config), "learning_rate": 3e-4, "weight_decay": 1.5e-6}

    def forward(self, views: Sequence[torch.Tensor]) -> SSLMethodOutput:
        self.check_views(views, count=2)
        # One pass per view, as the official code: batch-norm statistics are those of one view.
        z_a = self.projection_head(self.backbone(views[0]))  # (B, D_out)
        z_b = self.projection_head(self.backbone(views[1]))  # (B, D_out)
        return SSLMethodOutput.from_terms(self.criterion.terms(z_a, z_b))
