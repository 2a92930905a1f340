"""NNCLR: Nearest-Neighbor Contrastive Learning of Visual Representations.

Dwibedi, Aytar, Tompson, Sermanet, Zisserman, ICCV 2021 (arXiv:2104.14548). SimCLR-like two views, but the anchor
of each positive pair is the nearest neighbour of one view's embedding in a support set of embeddings from earlier
batches, which brings semantic variation no augmentation provides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ssl_hub import distributed
from ssl_hub._validation import check_positive, check_positive_int
from ssl_hub.heads.nnclr import NNCLRPredictionHead, NNCLRProjectionHead
from ssl_hub.losses.info_nce import InfoNCELoss
from ssl_hub.methods.base import MethodConfig, Paper, SSLMethod, SSLMethodOutput, lars_training_arguments
from ssl_hub.modules.nn_memory_bank import NNMemoryBankModule
from ssl_hub.registry import register_method
from ssl_hub.transforms.simclr import SimCLRTransform

PAPER = Paper(
    title="With a Little Help from My Friends: Nearest-Neighbor Contrastive Learning of Visual Representations",
    authors="Debidatta Dwibedi, Yusuf Aytar, Jonathan Tompson, Pierre Sermanet, Andrew Zisserman",
    year=2021,
    url="https://arxiv.org/abs/2104.14548",
    bibtex="""@inproceedings{dwibedi2021nnclr,
  title={With a Little Help from My Friends: Nearest-Neighbor Contrastive Learning of Visual Representations},
  author={Dwibedi, Debidatta and Aytar, Yusuf and Tompson, Jonathan and Sermanet, Pierre and Zisserman, Andrew},
  booktitle={IEEE/CVF International Conference on Computer Vision (ICCV)},
  year={2021}
}""",
)


@dataclass
class NNCLRConfig(MethodConfig):
    """NNCLR's hyperparameters (paper, "Implementation details").

    Args:
        temperature: Softmax temperature ``tau`` of the loss.
        projection_hidden_dim: Hidden width of the 3-layer projector.
        projection_output_dim: Embedding width ``d``.
        prediction_hidden_dim: Hidden width of the predictor.
        memory_bank_size: Size of the support set ``Q`` (98304 in the paper). It must hold at least one global
            batch (checked at the first forward, when the batch size is known): each step writes the embeddings of
            the global batch into it.
        gather_distributed: Use the predictions of all ranks as negatives, and write the embeddings of all ranks
            into the support set (keeps it identical on every rank).
    """

    temperature: float = 0.1
    projection_hidden_dim: int = 2048
    projection_output_dim: int = 256
    prediction_hidden_dim: int = 4096
    memory_bank_size: int = 98304
    gather_distributed: bool = True

    def validate(self) -> None:
        check_positive("temperature", self.temperature, "NNCLR")
        check_positive_int("projection_hidden_dim", self.projection_hidden_dim, "NNCLR")
        check_positive_int("projection_output_dim", self.projection_output_dim, "NNCLR")
        check_positive_int("prediction_hidden_dim", self.prediction_hidden_dim, "NNCLR")
        check_positive_int("memory_bank_size", self.memory_bank_size, "NNCLR")


@register_method
class NNCLR(SSLMethod):
    """NNCLR around any timm backbone; see :class:`NNCLRConfig` for the hyperparameters.

    With ``z`` the projections, ``p`` the predictions, ``NN(z, Q)`` the nearest neighbour of ``z`` in the support set
    (no gradient) and all vectors l2-normalised, the loss of image ``i`` is the paper's
    ``-log exp(NN(z_i, Q) . p+_i / tau) / sum_k exp(NN(z_i, Q) . p+_k / tau)`` (:class:`~ssl_hub.losses.InfoNCELoss`),
    averaged over the images and symmetrised by swapping the views (which gives ``z``, which ``p+``), as LightlySSL
    and solo-learn do. Both views' neighbours are searched before the support set receives the first view's
    projections of the global batch. There is no teacher: the published backbone is ``backbone``; the support set
    lives in ``ssl/``.
    """

    name = "nnclr"
    display_name = "NNCLR"
    config_class = NNCLRConfig
    transform_class = SimCLRTransform
    paper = PAPER
    learning_rate_scaling = "linear"
    config: NNCLRConfig

    def __init__(self, backbone: str | nn.Module, config: NNCLRConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.projection_head = NNCLRProjectionHead(
            self.feature_dim, cfg.projection_hidden_dim, cfg.projection_output_dim
        )
        self.prediction_head = NNCLRPredictionHead(
            cfg.projection_output_dim, cfg.prediction_hidden_dim, cfg.projection_output_dim
        )
        self.memory_bank = NNMemoryBankModule(
            cfg.memory_bank_size, cfg.projection_output_dim, gather_distributed=cfg.gather_distributed
        )
        self.criterion = InfoNCELoss(cfg.temperature, gather_distributed=cfg.gather_distributed)

    def forward(self, views: Sequence[torch.Tensor]) -> SSLMethodOutput:
        self.check_views(views, count=2)
        self._check_support_set_holds_a_batch(views[0].shape[0])
        z0, z1 = (self.projection_head(self.backbone(v)) for v in views)  # (B, D) each
        p0, p1 = self.prediction_head(z0), self.prediction_head(z1)  # (B, D) each
        nn1 = self.memory_bank(z1.detach())  # (B, D)
        nn0 = self.memory_bank(z0.detach(), update=True)  # (B, D), searched before z0 is written
        loss = 0.5 * (self.criterion(nn0, p1) + self.criterion(nn1, p0))
        return SSLMethodOutput(loss=loss)

    @classmethod
    def default_training_arguments(cls, config: MethodConfig | None = None) -> dict[str, Any]:
        """LARS, as the paper trains, at 0.4 per 256 images, scaled linearly (solo-learn's CIFAR NNCLR settings,
        :func:`~ssl_hub.methods.base.lars_training_arguments`), over the shared schedule and weight decay. On
        Fashion-MNIST at 936 steps it reached 79.27 % kNN over three seeds against 78.05 % with the shared AdamW
        recipe (``benchmarks/RESULTS.md``)."""
        return {**super().default_training_arguments(config), **lars_training_arguments(0.4)}

    def _check_support_set_holds_a_batch(self, batch_size: int) -> None:
        ranks = distributed.world_size() if self.config.gather_distributed else 1
        if self.config.memory_bank_size < batch_size * ranks:
            raise ValueError(
                f"NNCLR: memory_bank_size ({self.config.memory_bank_size}) is smaller than the batch it receives "
                f"each step ({batch_size} images x {ranks} process(es) = {batch_size * ranks}), so the support set "
                "would hold only part of the last batch. Raise memory_bank_size or lower per_device_train_batch_size."
            )
