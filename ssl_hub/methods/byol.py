"""BYOL: Bootstrap Your Own Latent, a new approach to self-supervised learning.

Grill et al., NeurIPS 2020 (arXiv:2006.07733). An online network (backbone, projector, predictor) predicts the
projection that a target network, the exponential moving average of the online backbone and projector, makes of
another view of the same image. There are no negatives: the predictor and the slowly moving target prevent collapse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ssl_hub._validation import check_positive_int, check_probability
from ssl_hub.heads.byol import BYOLPredictionHead, BYOLProjectionHead
from ssl_hub.losses.negative_cosine_similarity import NegativeCosineSimilarity
from ssl_hub.methods.base import MethodConfig, Paper, SSLMethod, SSLMethodOutput
from ssl_hub.modules.collapse import std_of_l2_normalized
from ssl_hub.modules.ema import ema_copy
from ssl_hub.registry import register_method
from ssl_hub.transforms.byol import BYOLTransform

if TYPE_CHECKING:
    from transformers import TrainerCallback

PAPER = Paper(
    title="Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning",
    authors="Jean-Bastien Grill, Florian Strub, Florent Altché, Corentin Tallec, Pierre H. Richemond, Elena "
    "Buchatskaya, Carl Doersch, Bernardo Avila Pires, Zhaohan Daniel Guo, Mohammad Gheshlaghi Azar, Bilal Piot, Koray "
    "Kavukcuoglu, Rémi Munos, Michal Valko",
    year=2020,
    url="https://arxiv.org/abs/2006.07733",
    bibtex="""@inproceedings{grill2020byol,
  title={Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning},
  author={Grill, Jean-Bastien and Strub, Florian and Altch{\\'e}, Florent and Tallec, Corentin and Richemond, Pierre H.
    and Buchatskaya, Elena and Doersch, Carl and Pires, Bernardo Avila and Guo, Zhaohan Daniel and Azar, Mohammad
    Gheshlaghi and Piot, Bilal and Kavukcuoglu, Koray and Munos, R{\\'e}mi and Valko, Michal},
  booktitle={Advances in Neural Information Processing Systems (NeurIPS)},
  year={2020}
}""",
)


@dataclass
class BYOLConfig(MethodConfig):
    """BYOL's hyperparameters (paper sec. 3.3 and the official ``byol/configs/byol.py``).

    Args:
        projection_hidden_dim: Hidden width of the projector.
        projection_output_dim: Width of the projection the loss compares.
        prediction_hidden_dim: Hidden width of the predictor.
        momentum_start: Target momentum ``tau_base`` of the first step; it rises to ``momentum_end`` on a cosine
            (sec. 3.3). 0.99 is the official preset for 100-300 epochs; the paper's 1000-epoch runs use 0.996.
        momentum_end: Target momentum of the last step.
    """

    projection_hidden_dim: int = 4096
    projection_output_dim: int = 256
    prediction_hidden_dim: int = 4096
    momentum_start: float = 0.99
    momentum_end: float = 1.0

    def validate(self) -> None:
        check_positive_int("projection_hidden_dim", self.projection_hidden_dim, "BYOL")
        check_positive_int("projection_output_dim", self.projection_output_dim, "BYOL")
        check_positive_int("prediction_hidden_dim", self.prediction_hidden_dim, "BYOL")
        check_probability("momentum_start", self.momentum_start, "BYOL")
        check_probability("momentum_end", self.momentum_end, "BYOL")


@register_method
class BYOL(SSLMethod):
    """BYOL around any timm backbone; see :class:`BYOLConfig` for the hyperparameters.

    The target network (``teacher_backbone`` + ``teacher_projection_head``) is an EMA copy of the online backbone and
    projector, moved after every optimizer step by :class:`~ssl_hub.training.EMAUpdateCallback` (from
    :meth:`callbacks`). The published backbone is the online (student) ``backbone``: the encoder BYOL keeps and
    evaluates at the end of training (paper sec. 3.1); the target network lives in ``ssl/``.

    The loss is the symmetrised negative cosine similarity between each view's prediction and the target projection
    of the other view, ``-(cos(q_1, z'_2) + cos(q_2, z'_1)) / 2``; BYOL's
    ``||q_1/|q_1| - z'_2/|z'_2| ||^2 + ||q_2/|q_2| - z'_1/|z'_1| ||^2`` (eq. 2 and its symmetric term) is
    ``4 + 4 *`` it.
    """

    name = "byol"
    display_name = "BYOL"
    config_class = BYOLConfig
    transform_class = BYOLTransform
    paper = PAPER
    config: BYOLConfig

    def __init__(self, backbone: str | nn.Module, config: BYOLConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.projection_head = BYOLProjectionHead(
            self.feature_dim, cfg.projection_hidden_dim, cfg.projection_output_dim
        )
        self.prediction_head = BYOLPredictionHead(
            cfg.projection_output_dim, cfg.prediction_hidden_dim, cfg.projection_output_dim
        )
        self.teacher_backbone = ema_copy(self.backbone)
        self.teacher_projection_head = ema_copy(self.projection_head)
        self.criterion = NegativeCosineSimilarity()

    def forward(self, views: Sequence[torch.Tensor]) -> SSLMethodOutput:
        self.check_views(views, count=2)
        # One pass per view, as in the official code: batch-norm statistics are those of one view's batch.
        z0, z1 = (self.projection_head(self.backbone(v)) for v in views)  # online projections, (B, D) each
        p0, p1 = self.prediction_head(z0), self.prediction_head(z1)  # (B, D) each
        with torch.no_grad():
            t0, t1 = (self.teacher_projection_head(self.teacher_backbone(v)) for v in views)  # targets, (B, D) each
        loss = 0.5 * (self.criterion(p0, t1) + self.criterion(p1, t0))
        # SimSiam's collapse monitor on the online projection: 0 when collapsed, about 1 / sqrt(D) when healthy.
        return SSLMethodOutput(loss=loss, metrics={"l2_normalized_std": std_of_l2_normalized(z0)})

    def callbacks(self) -> list[TrainerCallback]:
        from ssl_hub.training.callbacks import EMAUpdateCallback

        pairs = [(self.backbone, self.teacher_backbone), (self.projection_head, self.teacher_projection_head)]
        return [EMAUpdateCallback(pairs, self.config.momentum_start, self.config.momentum_end)]
