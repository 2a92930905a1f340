"""SimSiam: Exploring Simple Siamese Representation Learning.

Chen & He, CVPR 2021 (arXiv:2011.10566). One encoder (backbone + projector) sees two views; a predictor maps one
view's projection to the other's, whose gradient is stopped. No negatives, no momentum encoder: the stop-gradient
alone prevents collapse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ssl_hub._validation import check_positive_int
from ssl_hub.heads.byol import SimSiamPredictionHead, SimSiamProjectionHead
from ssl_hub.losses.negative_cosine_similarity import NegativeCosineSimilarity
from ssl_hub.methods.base import MethodConfig, Paper, SSLMethod, SSLMethodOutput, sgd_training_arguments
from ssl_hub.modules.collapse import std_of_l2_normalized
from ssl_hub.registry import register_method
from ssl_hub.transforms.simsiam import SimSiamTransform

if TYPE_CHECKING:
    from transformers import TrainerCallback

PAPER = Paper(
    title="Exploring Simple Siamese Representation Learning",
    authors="Xinlei Chen, Kaiming He",
    year=2021,
    url="https://arxiv.org/abs/2011.10566",
    bibtex="""@inproceedings{chen2021simsiam,
  title={Exploring Simple Siamese Representation Learning},
  author={Chen, Xinlei and He, Kaiming},
  booktitle={IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year={2021}
}""",
)


@dataclass
class SimSiamConfig(MethodConfig):
    """SimSiam's hyperparameters (paper, "Baseline settings").

    Args:
        projection_hidden_dim: Hidden width of the 3-layer projector.
        projection_output_dim: Width of the projection ``z``.
        prediction_hidden_dim: Bottleneck width of the predictor (a quarter of ``projection_output_dim``).
        fixed_prediction_learning_rate: Train the predictor at the run's initial learning rate, without the
            schedule's decay (paper Table 1c; ``--fix-pred-lr`` in the official code's recommended command).
    """

    projection_hidden_dim: int = 2048
    projection_output_dim: int = 2048
    prediction_hidden_dim: int = 512
    fixed_prediction_learning_rate: bool = True

    def validate(self) -> None:
        check_positive_int("projection_hidden_dim", self.projection_hidden_dim, "SimSiam")
        check_positive_int("projection_output_dim", self.projection_output_dim, "SimSiam")
        check_positive_int("prediction_hidden_dim", self.prediction_hidden_dim, "SimSiam")


@register_method
class SimSiam(SSLMethod):
    """SimSiam around any timm backbone; see :class:`SimSiamConfig` for the hyperparameters.

    The loss is ``(D(p_1, sg(z_2)) + D(p_2, sg(z_1))) / 2`` with ``D`` the negative cosine similarity and ``sg`` the
    stop-gradient (paper eq. 3-4). There is no teacher: the published backbone is the one encoder, ``backbone``.
    The recipe is the paper's: SGD with momentum 0.9, lr 0.05 per 256 images, weight decay 1e-4, cosine decay (the
    predictor's rate fixed, :class:`~ssl_hub.training.FixedLearningRateCallback`).
    """

    name = "simsiam"
    display_name = "SimSiam"
    config_class = SimSiamConfig
    transform_class = SimSiamTransform
    paper = PAPER
    learning_rate_scaling = "linear"  # lr x BatchSize / 256
    config: SimSiamConfig

    def __init__(self, backbone: str | nn.Module, config: SimSiamConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.projection_head = SimSiamProjectionHead(
            self.feature_dim, cfg.projection_hidden_dim, cfg.projection_output_dim
        )
        self.prediction_head = SimSiamPredictionHead(
            cfg.projection_output_dim, cfg.prediction_hidden_dim, cfg.projection_output_dim
        )
        self.criterion = NegativeCosineSimilarity()

    def forward(self, views: Sequence[torch.Tensor]) -> SSLMethodOutput:
        self.check_views(views, count=2)
        # One pass per view, as in the official code: batch-norm statistics are those of one view's batch.
        z0, z1 = (self.projection_head(self.backbone(v)) for v in views)  # (B, D) each
        p0, p1 = self.prediction_head(z0), self.prediction_head(z1)  # (B, D) each
        loss = 0.5 * (self.criterion(p0, z1.detach()) + self.criterion(p1, z0.detach()))
        # The paper's collapse monitor (Fig. 2): 0 when collapsed, about 1 / sqrt(D) when healthy.
        return SSLMethodOutput(loss=loss, metrics={"l2_normalized_std": std_of_l2_normalized(z0)})

    @classmethod
    def default_training_arguments(cls, config: MethodConfig | None = None) -> dict[str, Any]:
        """The paper's recipe ("Baseline settings"): SGD at 0.05 per 256 images, momentum 0.9, weight decay 1e-4,
        cosine decay (:func:`~ssl_hub.methods.base.sgd_training_arguments`)."""
        return sgd_training_arguments(0.05)

    def parameter_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """As every method's, with the predictor's parameters in groups of their own at a fixed rate when
        ``fixed_prediction_learning_rate`` (:func:`~ssl_hub.training.callbacks.with_fixed_learning_rate`)."""
        from ssl_hub.training.callbacks import with_fixed_learning_rate

        groups = super().parameter_groups(weight_decay)
        if not self.config.fixed_prediction_learning_rate:
            return groups
        return with_fixed_learning_rate(groups, self.prediction_head.parameters())

    def callbacks(self) -> list[TrainerCallback]:
        from ssl_hub.training.callbacks import FixedLearningRateCallback

        return [FixedLearningRateCallback()] if self.config.fixed_prediction_learning_rate else []
