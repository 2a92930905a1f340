"""TiCo: Transformation Invariance and Covariance Contrast.

Zhu, Moraes, Karakulak, Sobol, Canziani, LeCun, 2022 (arXiv:2206.10698). The online encoder embeds one view, a
momentum (EMA) copy of it embeds the other; the loss maximises their agreement while penalising embeddings along
the directions a running covariance matrix of past embeddings has already filled, a contrast against an implicit
memory of all earlier batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ssl_hub._validation import check_non_negative, check_positive_int, check_probability
from ssl_hub.heads import TiCoProjectionHead
from ssl_hub.losses import TiCoLoss
from ssl_hub.methods.base import MethodConfig, Paper, SSLMethod, SSLMethodOutput
from ssl_hub.modules import ema_copy
from ssl_hub.registry import register_method
from ssl_hub.training.callbacks import EMAUpdateCallback
from ssl_hub.transforms import TiCoTransform

if TYPE_CHECKING:
    from transformers import TrainerCallback

PAPER = Paper(
    title="TiCo: Transformation Invariance and Covariance Contrast for Self-Supervised Visual Representation Learning",
    authors="Jiachen Zhu, Rafael M. Moraes, Serkan Karakulak, Vlad Sobol, Alfredo Canziani, Yann LeCun",
    year=2022,
    url="https://arxiv.org/abs/2206.10698",
    bibtex="""@article{zhu2022tico,
  title={TiCo: Transformation Invariance and Covariance Contrast for Self-Supervised Visual Representation Learning},
  author={Zhu, Jiachen and Moraes, Rafael M and Karakulak, Serkan and Sobol, Vlad and Canziani, Alfredo
    and LeCun, Yann},
  journal={arXiv preprint arXiv:2206.10698},
  year={2022}
}""",
)


@dataclass
class TiCoConfig(MethodConfig):
    """TiCo's hyperparameters (paper section 5; LightlySSL's ``TiCoLoss`` and ImageNet benchmark).

    Args:
        beta: Momentum of the running covariance matrix (0.9).
        rho: Weight of the covariance contrast term (8, the paper's).
        momentum_start: EMA momentum of the momentum encoder at the first step (0.99) ...
        momentum_end: ... rising on a cosine to this value at the last step (1.0).
        projection_hidden_dim: Hidden width of the projector (4096).
        projection_output_dim: Embedding width the loss sees and size of the covariance matrix (256).
        gather_distributed: Loss and covariance over the global batch under multi-process training.
        batch_covariance_gradient: Backpropagate through the current batch's share of the covariance matrix, as
            sayannag/TiCo-pytorch does (False: a constant, as in LightlySSL; at 936 steps on Fashion-MNIST True
            scored 74.61 % kNN against 75.44 %, benchmarks/RESULTS.md).
    """

    beta: float = 0.9
    rho: float = 8.0
    momentum_start: float = 0.99
    momentum_end: float = 1.0
    projection_hidden_dim: int = 4096
    projection_output_dim: int = 256
    gather_distributed: bool = True
    batch_covariance_gradient: bool = False

    def validate(self) -> None:
        check_probability("beta", self.beta, "TiCo")
        check_non_negative("rho", self.rho, "TiCo")
        check_probability("momentum_start", self.momentum_start, "TiCo")
        check_probability("momentum_end", self.momentum_end, "TiCo")
        check_positive_int("projection_hidden_dim", self.projection_hidden_dim, "TiCo")
        check_positive_int("projection_output_dim", self.projection_output_dim, "TiCo")


@register_method
class TiCo(SSLMethod):
    """TiCo around any timm backbone; see :class:`TiCoConfig` for the hyperparameters.

    The published backbone is the online (student) one, the encoder the paper evaluates; the momentum encoder and
    the covariance matrix (``criterion.C``) live in ``ssl/``.
    """

    name = "tico"
    display_name = "TiCo"
    config_class = TiCoConfig
    transform_class = TiCoTransform
    paper = PAPER
    config: TiCoConfig

    def __init__(self, backbone: str | nn.Module, config: TiCoConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.projection_head = TiCoProjectionHead(
            input_dim=self.feature_dim, hidden_dim=cfg.projection_hidden_dim, output_dim=cfg.projection_output_dim
        )
        self.teacher_backbone = ema_copy(self.backbone)
        self.teacher_projection_head = ema_copy(self.projection_head)
        self.criterion = TiCoLoss(
            beta=cfg.beta,
            rho=cfg.rho,
            gather_distributed=cfg.gather_distributed,
            dim=cfg.projection_output_dim,
            batch_covariance_gradient=cfg.batch_covariance_gradient,
        )

    def callbacks(self) -> list[TrainerCallback]:
        pairs = [(self.backbone, self.teacher_backbone), (self.projection_head, self.teacher_projection_head)]
        return [EMAUpdateCallback(pairs, self.config.momentum_start, self.config.momentum_end)]

    @classmethod
    def default_training_arguments(cls, config: MethodConfig | None = None) -> dict[str, Any]:
        return {**super().default_training_arguments(config), "weight_decay": 1.5e-6}  # LightlySSL's ImageNet recipe

    def forward(self, views: Sequence[torch.Tensor]) -> SSLMethodOutput:
        self.check_views(views, count=2)
        z_a = self.projection_head(self.backbone(views[0]))  # (B, D_out), online encoder
        with torch.no_grad():
            z_b = self.teacher_projection_head(self.teacher_backbone(views[1]))  # (B, D_out), momentum encoder
        return SSLMethodOutput(loss=self.criterion(z_a, z_b))
