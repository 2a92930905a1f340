"""LeJEPA: Provable and Scalable Self-Supervised Learning Without the Heuristics.

Balestriero & LeCun, 2025 (arXiv:2511.08544). Every view of an image, global and local, is pulled towards the mean
embedding of its global views (the JEPA's prediction), and SIGReg pulls each view's embeddings towards an isotropic
Gaussian, the distribution the paper proves minimises downstream risk. One trade-off, ``lambda_param``; no teacher,
stop-gradient, predictor or schedule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ssl_hub._validation import check_positive, check_positive_int, check_probability
from ssl_hub.heads.lejepa import LeJEPAProjectionHead
from ssl_hub.losses.lejepa import LeJEPALoss
from ssl_hub.methods.base import MethodConfig, Paper, SSLMethod, SSLMethodOutput
from ssl_hub.modules.multi_crop import (
    check_input_sizes,
    check_multi_crop_views,
    crop_size_multiple,
    dynamic_size_backbone,
    multi_crop_forward,
)
from ssl_hub.registry import register_method
from ssl_hub.transforms.lejepa import LeJEPATransform
from ssl_hub.transforms.multi_crop import local_crop_size
from ssl_hub.transforms.multi_view import MultiViewTransform

PAPER = Paper(
    title="LeJEPA: Provable and Scalable Self-Supervised Learning Without the Heuristics",
    authors="Randall Balestriero, Yann LeCun",
    year=2025,
    url="https://arxiv.org/abs/2511.08544",
    bibtex="""@misc{balestriero2025lejepa,
  title={LeJEPA: Provable and Scalable Self-Supervised Learning Without the Heuristics},
  author={Balestriero, Randall and LeCun, Yann},
  year={2025},
  eprint={2511.08544},
  archivePrefix={arXiv}
}""",
)

# The official README's weight decay: 5e-2 for ViTs, 5e-4 for ResNets (and other convolutional backbones).
VIT_WEIGHT_DECAY, CNN_WEIGHT_DECAY = 5e-2, 5e-4
N_GLOBAL_CROPS = 2


@dataclass
class LeJEPAConfig(MethodConfig):
    """LeJEPA's hyperparameters (the official README and example, LightlySSL's names).

    Args:
        lambda_param: Weight of SIGReg; the invariance has ``1 - lambda_param`` (0.05).
        sigreg_num_vectors: Random directions of SIGReg per step (1024).
        sigreg_knots: Integration points of SIGReg (17).
        sigreg_t_max: End of SIGReg's integration grid (3).
        projection_hidden_dim: Width of the projector's hidden layers (2048).
        projection_output_dim: Embedding width SIGReg sees (64, LightlySSL's; the official example uses 128, and 16
            in its Imagenette recipe).
        projection_num_layers: Linear layers of the projector (3).
        gather_distributed: SIGReg over the global batch under multi-process training, as the official code.
        views_in_one_pass: Encode the crops of one size (and kind, with ``local_crops_own_pass``) as one batch
            (batch-norm statistics span them); ``False`` encodes each crop on its own.
        local_crops_own_pass: With ``views_in_one_pass``, encode the local crops in a pass apart from the global crops
            even when they are of one size (batch-norm statistics of each kind of crop): the batching the official
            multi-crop recipe has at its sizes (224 and 96 px, one pass each) and LightlySSL's example at any size.
            ``False`` puts the crops of one size in one pass, as the official minimal example's views of one size.
        center_on_all_views: Pull every view towards the mean embedding of all the views of its image, local crops
            included: the paper's algorithm 2 for non-ViT backbones ("set global_views = all_views", all crops in one
            batch, so with ``local_crops_own_pass=False`` when they are of one size). ``False`` (the default) centers
            on the global crops, as the official README's multi-crop recipe and LightlySSL's.
    """

    lambda_param: float = 0.05
    sigreg_num_vectors: int = 1024
    sigreg_knots: int = 17
    sigreg_t_max: float = 3.0
    projection_hidden_dim: int = 2048
    projection_output_dim: int = 64
    projection_num_layers: int = 3
    gather_distributed: bool = True
    views_in_one_pass: bool = True
    local_crops_own_pass: bool = True
    center_on_all_views: bool = False

    def validate(self) -> None:
        check_probability("lambda_param", self.lambda_param, "LeJEPA")
        check_positive_int("sigreg_num_vectors", self.sigreg_num_vectors, "LeJEPA")
        check_positive_int("sigreg_knots", self.sigreg_knots, "LeJEPA", minimum=2)
        check_positive("sigreg_t_max", self.sigreg_t_max, "LeJEPA")
        check_positive_int("projection_hidden_dim", self.projection_hidden_dim, "LeJEPA")
        check_positive_int("projection_output_dim", self.projection_output_dim, "LeJEPA")
        check_positive_int("projection_num_layers", self.projection_num_layers, "LeJEPA", minimum=2)


@register_method
class LeJEPA(SSLMethod):
    """LeJEPA around any timm backbone; see :class:`LeJEPAConfig` for the hyperparameters.

    ``views`` are :class:`~ssl_hub.transforms.LeJEPATransform`'s: 2 global crops of one size, then any local crops.
    Each goes through the backbone and :class:`~ssl_hub.heads.LeJEPAProjectionHead`;
    :class:`~ssl_hub.losses.LeJEPALoss` compares them: every view with the mean of the global crops' embeddings (of
    every view's with ``center_on_all_views``, the paper's rule for non-ViT backbones). The published backbone is the
    one trained.
    """

    name = "lejepa"
    display_name = "LeJEPA"
    config_class = LeJEPAConfig
    transform_class = LeJEPATransform
    paper = PAPER
    config: LeJEPAConfig

    def __init__(self, backbone: str | nn.Module, config: LeJEPAConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.backbone = dynamic_size_backbone(self.backbone)
        self.projection_head = LeJEPAProjectionHead(
            self.feature_dim, cfg.projection_hidden_dim, cfg.projection_output_dim, cfg.projection_num_layers
        )
        self.criterion = LeJEPALoss(
            lambda_param=cfg.lambda_param,
            sigreg_num_vectors=cfg.sigreg_num_vectors,
            sigreg_knots=cfg.sigreg_knots,
            sigreg_t_max=cfg.sigreg_t_max,
            gather_distributed=cfg.gather_distributed,
        )

    @classmethod
    def default_training_arguments(cls, config: MethodConfig | None = None) -> dict[str, Any]:
        """The official README's: AdamW at 5e-4, linear warm-up then cosine decay; weight decay 5e-2 on ViTs, 5e-4 on
        other backbones (:meth:`backbone_training_arguments`)."""
        return {**super().default_training_arguments(config), "learning_rate": 5e-4, "weight_decay": VIT_WEIGHT_DECAY}

    def backbone_training_arguments(self) -> dict[str, Any]:
        """Weight decay 5e-4 on a convolutional backbone (one without a ViT's ``patch_embed``), as the README."""
        return {} if hasattr(self.backbone, "patch_embed") else {"weight_decay": CNN_WEIGHT_DECAY}

    def make_transform(self, input_size: int = 224, **kwargs: Any) -> MultiViewTransform:
        """:class:`LeJEPATransform` with global crops of ``input_size`` px and local crops scaled to them, rounded to
        the backbone's patch (98 px at 224 for 14 px patches, as the official recipe)."""
        kwargs.setdefault("crop_sizes", (input_size, local_crop_size(input_size, crop_size_multiple(self.backbone))))
        return super().make_transform(input_size, **kwargs)

    def forward(self, views: Sequence[torch.Tensor]) -> SSLMethodOutput:
        check_multi_crop_views(views, type(self).__name__)
        check_input_sizes(self.backbone, views, type(self).__name__)
        embeddings = multi_crop_forward(
            lambda x: self.projection_head(self.backbone(x)),
            views,
            self.config.views_in_one_pass,
            split_at=N_GLOBAL_CROPS if self.config.local_crops_own_pass else 0,
        )  # (B, D) each
        centers = len(views) if self.config.center_on_all_views else N_GLOBAL_CROPS
        global_proj = torch.stack(embeddings[:centers])  # (V_c, B, D): the views whose mean is the center
        local_proj = torch.stack(embeddings[centers:]) if len(views) > centers else None  # (V - V_c, B, D)
        return SSLMethodOutput.from_terms(self.criterion.terms(global_proj=global_proj, local_proj=local_proj))
