"""SMoG: Unsupervised Visual Representation Learning by Synchronous Momentum Grouping.

Pang, Zhang, Li, Cai, Lu, ECCV 2022 (arXiv:2207.06167). Contrastive learning whose units are groups, not instances:
a momentum encoder assigns each global crop to the nearest of a set of group features, the group features follow
their members by momentum in the same step (synchronous grouping, no clustering epochs behind), and the online
network's prediction of every other crop is contrasted against all group features with the assigned group as the
positive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import TrainerCallback

from ssl_hub import distributed
from ssl_hub._validation import check_positive, check_positive_int, check_probability
from ssl_hub.heads.smog import SMoGPredictionHead, SMoGProjectionHead, SMoGPrototypes
from ssl_hub.losses.smog import SMoGLoss
from ssl_hub.methods.base import MethodConfig, Paper, SSLMethod, SSLMethodOutput
from ssl_hub.modules.ema import ema_copy
from ssl_hub.modules.memory_bank import MemoryBankModule
from ssl_hub.modules.multi_crop import (
    check_input_sizes,
    check_multi_crop_views,
    crop_size_multiple,
    dynamic_size_backbone,
    multi_crop_forward,
)
from ssl_hub.registry import register_method
from ssl_hub.transforms.multi_crop import local_crop_size
from ssl_hub.transforms.smog import SMoGTransform

if TYPE_CHECKING:
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from ssl_hub.transforms.multi_view import MultiViewTransform

PAPER = Paper(
    title="Unsupervised Visual Representation Learning by Synchronous Momentum Grouping",
    authors="Bo Pang, Yifan Zhang, Yaoyi Li, Jia Cai, Cewu Lu",
    year=2022,
    url="https://arxiv.org/abs/2207.06167",
    bibtex="""@inproceedings{pang2022smog,
  title={Unsupervised Visual Representation Learning by Synchronous Momentum Grouping},
  author={Pang, Bo and Zhang, Yifan and Li, Yaoyi and Cai, Jia and Lu, Cewu},
  booktitle={European Conference on Computer Vision (ECCV)},
  pages={265--282},
  year={2022}
}""",
)

# The two global crops are assigned to groups (like SwaV's crops_for_assign = [0, 1]); every other crop predicts them.
N_GLOBAL_CROPS = 2
# Rows of features compared with all group features at once during k-means (bounds the memory of a reset).
KMEANS_CHUNK = 8192


@dataclass
class SMoGConfig(MethodConfig):
    """SMoG's hyperparameters.

    Args:
        projection_hidden_dim: Hidden width of the projector.
        projection_output_dim: Width of the projections and of the group features.
        prediction_hidden_dim: Hidden width of the predictor.
        n_groups: Number of group features (3000 for ImageNet-scale data, as SwaV's prototypes; LightlySSL's
            CIFAR-10 example uses 300).
        beta: Momentum of the group features.
        temperature: Softmax temperature of the group-level contrastive loss.
        momentum_start: Momentum of the momentum encoder at the first step; it follows a cosine to
            ``momentum_end`` (LightlySSL's example: 0.99, constant).
        momentum_end: Momentum of the momentum encoder at the last step.
        group_reset_interval: Every so many optimizer steps, the group features are re-initialised by k-means over
            the memory bank and the momentum encoder by the online one (LightlySSL's example, citing the paper's
            table 7b; 0: never).
        memory_bank_size: Momentum-encoder features kept for the k-means reset (LightlySSL's example: 300 steps
            at batch 256).
        kmeans_iterations: Lloyd iterations of the (spherical) k-means of a reset.
        views_in_one_pass: Encode the crops of each size as one batch (batch-norm statistics span them, as the
            official code); ``False`` encodes each crop on its own, as LightlySSL's examples do.
    """

    projection_hidden_dim: int = 2048
    projection_output_dim: int = 128
    prediction_hidden_dim: int = 2048
    n_groups: int = 3000
    beta: float = 0.99
    temperature: float = 0.1
    momentum_start: float = 0.99
    momentum_end: float = 0.99
    group_reset_interval: int = 300
    memory_bank_size: int = 76800
    kmeans_iterations: int = 10
    views_in_one_pass: bool = True

    def validate(self) -> None:
        for name in ("projection_hidden_dim", "projection_output_dim", "prediction_hidden_dim", "n_groups"):
            check_positive_int(name, getattr(self, name), "SMoG")
        for name in ("group_reset_interval", "kmeans_iterations"):
            check_positive_int(name, getattr(self, name), "SMoG", minimum=0)
        for name in ("beta", "momentum_start", "momentum_end"):
            check_probability(name, getattr(self, name), "SMoG")
        check_positive("temperature", self.temperature, "SMoG")
        if self.group_reset_interval:
            check_positive_int("memory_bank_size", self.memory_bank_size, "SMoG", minimum=self.n_groups)


@torch.no_grad()
def spherical_kmeans(features: torch.Tensor, n_clusters: int, iterations: int) -> torch.Tensor:
    """Unit-norm centers ``(n_clusters, D)`` of ``features`` ``(N, D)`` by k-means on cosine similarity.

    The centers start from evenly spaced rows, so every process computes the same centers from the same features.
    A center that loses all its members keeps its place.
    """
    points = F.normalize(features, dim=1)  # (N, D)
    centers = points[torch.linspace(0, points.shape[0] - 1, n_clusters, device=points.device).long()]  # (C, D)
    for _ in range(iterations):
        assignments = torch.cat([(chunk @ centers.T).argmax(dim=1) for chunk in points.split(KMEANS_CHUNK)])  # (N,)
        sums = torch.zeros_like(centers).index_add_(0, assignments, points)  # (C, D)
        counts = torch.bincount(assignments, minlength=n_clusters).unsqueeze(1)  # (C, 1)
        centers = torch.where(counts > 0, F.normalize(sums, dim=1), centers)
    return centers


class SMoGResetCallback(TrainerCallback):
    """Every ``group_reset_interval`` optimizer steps, before the step: k-means group features, fresh momentum encoder.

    Args:
        method: The SMoG method to reset.
    """

    def __init__(self, method: SMoG) -> None:
        self.method = method

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        interval = self.method.config.group_reset_interval
        if state.global_step > 0 and state.global_step % interval == 0:
            self.method.reset_group_features()
            self.method.reset_momentum_weights()


@register_method
class SMoG(SSLMethod):
    """SMoG around any timm backbone; see :class:`SMoGConfig` for the hyperparameters.

    ``views`` are 2 global crops of one size followed by any number of other crops (:class:`SMoGTransform`; a
    transform with more large crops predicts the extra ones like the small crops). Each size group goes through the
    backbone as one batch (each crop alone with ``views_in_one_pass=False``). Per training step:

    1. the momentum encoder (``teacher_backbone`` + ``teacher_projection_head``, an EMA copy of the online backbone and
       projector) embeds the 2 global crops; each L2-normalised embedding is assigned to its most cosine-similar
       group feature;
    2. the group features move towards the mean of their newly assigned members with momentum ``beta`` (the
       features of all processes, so every process keeps the same groups);
    3. the online network (backbone, projector, predictor) predicts every crop, and :class:`SMoGLoss` contrasts each
       prediction with the updated group features, the positive being the group of each other global crop.

    Readings of the paper this implementation chose (the paper leaves them open or LightlySSL's example differs):
    the grouping uses the momentum encoder's embeddings for both the assignment and the group update (LightlySSL's
    example updates the groups with the online projections, letting gradients through the update); the loss is
    symmetric in the global crops every step (LightlySSL's example alternates the direction between steps); the group
    features start uniformly on the unit sphere; the periodic reset (table 7b) runs a spherical k-means over a memory
    bank of recent momentum-encoder embeddings and copies the online network into the momentum encoder, as
    LightlySSL's example does every 300 steps.

    The published backbone is the online ``backbone``; the heads, momentum encoder, group features and memory bank
    live in ``ssl/``.
    """

    name = "smog"
    display_name = "SMoG"
    config_class = SMoGConfig
    transform_class = SMoGTransform
    paper = PAPER
    config: SMoGConfig
    memory_bank_count: torch.Tensor

    def __init__(self, backbone: str | nn.Module, config: SMoGConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.backbone = dynamic_size_backbone(self.backbone)
        self.projection_head = SMoGProjectionHead(
            self.feature_dim, cfg.projection_hidden_dim, cfg.projection_output_dim
        )
        self.prediction_head = SMoGPredictionHead(
            cfg.projection_output_dim, cfg.prediction_hidden_dim, cfg.projection_output_dim
        )
        self.teacher_backbone = ema_copy(self.backbone)
        self.teacher_projection_head = ema_copy(self.projection_head)
        initial_groups = F.normalize(torch.randn(cfg.n_groups, cfg.projection_output_dim), dim=1)
        self.prototypes = SMoGPrototypes(initial_groups, beta=cfg.beta)
        self.criterion = SMoGLoss(temperature=cfg.temperature)
        self.memory_bank = (
            MemoryBankModule(cfg.memory_bank_size, cfg.projection_output_dim, gather_distributed=True)
            if cfg.group_reset_interval
            else None
        )
        self.register_buffer("memory_bank_count", torch.zeros((), dtype=torch.long))  # features written so far

    def forward(self, views: Sequence[torch.Tensor]) -> SSLMethodOutput:
        check_multi_crop_views(views, type(self).__name__)
        check_input_sizes(self.backbone, views, type(self).__name__)
        one_pass = self.config.views_in_one_pass
        predictions = multi_crop_forward(
            lambda x: self.prediction_head(self.projection_head(self.backbone(x))), views, one_pass
        )  # (B, D) each
        with torch.no_grad():
            targets = multi_crop_forward(
                lambda x: F.normalize(self.teacher_projection_head(self.teacher_backbone(x)), dim=1),
                views[:N_GLOBAL_CROPS],
                one_pass,
            )  # (B, D) each, unit norm
            assignments = [self.prototypes.assign_groups(t) for t in targets]  # (B,) each, before the update
            if self.training:
                self._update_groups(torch.cat(targets))
        loss = self.criterion(predictions, assignments, self.prototypes.group_features)
        return SSLMethodOutput(loss=loss)

    @torch.no_grad()
    def _update_groups(self, features: torch.Tensor) -> None:
        """Momentum-update the groups with the momentum-encoder features ``(N, D)`` of all processes; bank them."""
        everywhere = distributed.gather_no_grad(features)  # (W * N, D)
        self.prototypes.set_group_features(self.prototypes.get_updated_group_features(everywhere))
        if self.memory_bank is not None:
            self.memory_bank.enqueue(features)
            self.memory_bank_count.fill_(min(int(self.memory_bank_count) + everywhere.shape[0], self.memory_bank.size))

    @torch.no_grad()
    def reset_group_features(self) -> None:
        """Re-initialise the group features by k-means over the memory bank (once it holds ``n_groups`` features)."""
        filled = int(self.memory_bank_count)
        if self.memory_bank is None or filled < self.config.n_groups:
            return
        features = self.memory_bank.memory[:filled]  # written from the start, wrapping once full
        groups = spherical_kmeans(features, self.config.n_groups, self.config.kmeans_iterations)
        self.prototypes.set_group_features(groups.to(self.prototypes.group_features.dtype))

    @torch.no_grad()
    def reset_momentum_weights(self) -> None:
        """Copy the online backbone and projector into the momentum encoder."""
        self.teacher_backbone.load_state_dict(self.backbone.state_dict())
        self.teacher_projection_head.load_state_dict(self.projection_head.state_dict())

    def make_transform(self, input_size: int = 224, **kwargs: Any) -> MultiViewTransform:
        """:class:`SMoGTransform` with large crops of ``input_size`` px and small crops scaled to them."""
        kwargs.setdefault("crop_sizes", (input_size, local_crop_size(input_size, crop_size_multiple(self.backbone))))
        return super().make_transform(input_size, **kwargs)

    def callbacks(self) -> list[TrainerCallback]:
        from ssl_hub.training.callbacks import EMAUpdateCallback

        cfg = self.config
        pairs = [(self.backbone, self.teacher_backbone), (self.projection_head, self.teacher_projection_head)]
        callbacks: list[TrainerCallback] = [EMAUpdateCallback(pairs, cfg.momentum_start, cfg.momentum_end)]
        if cfg.group_reset_interval:
            callbacks.append(SMoGResetCallback(self))
        return callbacks
