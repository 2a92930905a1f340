"""DenseCL: Dense Contrastive Learning for Self-Supervised Visual Pre-Training.

Wang, Zhang, Shen, Kong, Li, CVPR 2021 (arXiv:2011.09157). MoCo v2 (a query encoder, its momentum copy as key
encoder, a queue of negatives) with a second, dense head next to the global one: every location of the query view's
feature map is contrasted with the most similar location of the key view's map (the positive) against a queue of
pooled dense keys of other images. Pretraining the dense map this way transfers better to detection and
segmentation, at the cost of one 1x1-conv head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ssl_hub._validation import check_one_of, check_positive, check_positive_int, check_probability
from ssl_hub.heads.densecl import DenseCLDenseProjectionHead, DenseCLProjectionHead
from ssl_hub.losses.densecl import DENSE_QUEUE_KEYS, DenseCLLoss
from ssl_hub.methods.base import MethodConfig, Paper, SSLMethod, SSLMethodOutput, sgd_training_arguments
from ssl_hub.modules.dense_features import dense_feature_dim, forward_dense_features, warn_if_one_location
from ssl_hub.modules.ema import ema_copy
from ssl_hub.modules.shuffle_bn import shuffled_batch_norm_forward, uses_batch_statistics
from ssl_hub.registry import register_method
from ssl_hub.transforms.densecl import DenseCLTransform

if TYPE_CHECKING:
    from transformers import TrainerCallback

PAPER = Paper(
    title="Dense Contrastive Learning for Self-Supervised Visual Pre-Training",
    authors="Xinlong Wang, Rufeng Zhang, Chunhua Shen, Tao Kong, Lei Li",
    year=2021,
    url="https://arxiv.org/abs/2011.09157",
    bibtex="""@inproceedings{wang2020DenseCL,
  title={Dense Contrastive Learning for Self-Supervised Visual Pre-Training},
  author={Wang, Xinlong and Zhang, Rufeng and Shen, Chunhua and Kong, Tao and Li, Lei},
  booktitle={Proc. IEEE Conf. Computer Vision and Pattern Recognition (CVPR)},
  year={2021}
}""",
)


@dataclass
class DenseCLConfig(MethodConfig):
    """DenseCL's hyperparameters (paper sec. 3-4; official ``configs/selfsup/densecl/densecl_imagenet_200ep.py``).

    Args:
        temperature: Temperature of both contrastive terms (official ``ContrastiveHead(temperature=0.2)``).
        loss_lambda: Weight ``lambda`` of the dense term; the loss is ``(1 - lambda) L_q + lambda L_r`` (paper
            eq. 3 and sec. 4.3: 0.5).
        momentum: Momentum of the key encoder's exponential moving average, constant (MoCo's 0.999).
        memory_bank_size: Length of the global queue of negative keys (65536).
        dense_memory_bank_size: Length of the dense queue of negative dense keys (65536).
        dense_queue_keys: What the dense queue receives: ``"pooled"``, one dense key per image averaged over its
            locations (the official code's ``avgpool2``), or ``"matched"``, the positive key of every query location
            (LightlySSL's example); the same on a one-location map.
        projection_hidden_dim: Hidden width of both heads; ``None`` for the backbone's width (the official neck:
            2048 hidden on ResNet-50's 2048 channels).
        projection_output_dim: Embedding width of both heads (128).
        shuffle_bn: MoCo's shuffling BN in the key encoder, as the official code (``_batch_shuffle_ddp``): across
            ranks under multi-process training, in groups of ``shuffle_bn_group_size`` shuffled images in one
            process (:func:`~ssl_hub.modules.shuffled_batch_norm_forward`), so a query and its key do not share
            batch-norm statistics. Only where the key encoder has batch norm in train mode.
        shuffle_bn_group_size: Images per key-encoder batch-norm group in one process (32: the official batch of
            256 over 8 GPUs); batches smaller than two groups are encoded whole.
        gather_distributed: Under multi-process training, write the keys of all ranks into the queues (the
            official ``concat_all_gather``), so every rank holds the same queues.
    """

    temperature: float = 0.2
    loss_lambda: float = 0.5
    momentum: float = 0.999
    memory_bank_size: int = 65536
    dense_memory_bank_size: int = 65536
    dense_queue_keys: str = "pooled"
    projection_hidden_dim: int | None = None
    projection_output_dim: int = 128
    shuffle_bn: bool = True
    shuffle_bn_group_size: int = 32
    gather_distributed: bool = True

    def validate(self) -> None:
        check_positive("temperature", self.temperature, "DenseCL")
        check_probability("loss_lambda", self.loss_lambda, "DenseCL")
        check_probability("momentum", self.momentum, "DenseCL")
        check_positive_int("memory_bank_size", self.memory_bank_size, "DenseCL")
        check_positive_int("dense_memory_bank_size", self.dense_memory_bank_size, "DenseCL")
        check_one_of("dense_queue_keys", self.dense_queue_keys, DENSE_QUEUE_KEYS, "DenseCL")
        if self.projection_hidden_dim is not None:
            check_positive_int("projection_hidden_dim", self.projection_hidden_dim, "DenseCL")
        check_positive_int("projection_output_dim", self.projection_output_dim, "DenseCL")
        check_positive_int("shuffle_bn_group_size", self.shuffle_bn_group_size, "DenseCL")


@register_method
class DenseCL(SSLMethod):
    """DenseCL around any timm backbone with a spatial feature map; see :class:`DenseCLConfig`.

    The query encoder is the ``backbone`` with ``projection_head`` (global: the backbone's own pooled features,
    ``forward_head(..., pre_logits=True)``, so what is trained is what is published) and ``dense_projection_head``
    (on the dense map of :func:`~ssl_hub.modules.dense_features.forward_dense_features`: ``(B, C, H, W)`` for CNNs
    and ConvNeXt, the patch tokens on their grid for ViTs). The key encoder is an EMA copy of all three
    (``teacher_*``), moved after every optimizer step by :class:`~ssl_hub.training.EMAUpdateCallback` with the
    constant ``momentum``. The published backbone is the query encoder's, as in the official code (its
    ``extract`` mode); the key encoder and both queues (``criterion``) live in ``ssl/``.

    As in the paper, the loss is not symmetrised: view 0 is the query, view 1 the key. The correspondence uses the
    backbone features of both encoders (paper sec. 3.3). The key encoder shuffles batch norm as MoCo's (see
    ``shuffle_bn``). Not reproduced: the official neck's Kaiming-normal init of its linear layers (the heads keep
    PyTorch's default init, as LightlySSL's).
    """

    name = "densecl"
    display_name = "DenseCL"
    config_class = DenseCLConfig
    transform_class = DenseCLTransform
    paper = PAPER
    learning_rate_scaling = "linear"
    config: DenseCLConfig

    def __init__(self, backbone: str | nn.Module, config: DenseCLConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        dense_dim = dense_feature_dim(self.backbone, "DenseCL")
        self.projection_head = DenseCLProjectionHead(
            self.feature_dim, cfg.projection_hidden_dim or self.feature_dim, cfg.projection_output_dim
        )
        self.dense_projection_head = DenseCLDenseProjectionHead(
            dense_dim, cfg.projection_hidden_dim or dense_dim, cfg.projection_output_dim
        )
        self.teacher_backbone = ema_copy(self.backbone)
        self.teacher_projection_head = ema_copy(self.projection_head)
        self.teacher_dense_projection_head = ema_copy(self.dense_projection_head)
        self.criterion = DenseCLLoss(
            temperature=cfg.temperature,
            loss_lambda=cfg.loss_lambda,
            memory_bank_size=(cfg.memory_bank_size, cfg.projection_output_dim),
            dense_memory_bank_size=(cfg.dense_memory_bank_size, cfg.projection_output_dim),
            dense_queue_keys=cfg.dense_queue_keys,
            gather_distributed=cfg.gather_distributed,
        )

    @classmethod
    def default_training_arguments(cls, config: MethodConfig | None = None) -> dict[str, Any]:
        """The official recipe, MoCo v2's: SGD at 0.03 per 256 images
        (:func:`~ssl_hub.methods.base.sgd_training_arguments`)."""
        return sgd_training_arguments(0.03)

    def encode(self, images: torch.Tensor, teacher: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Global embeddings ``(B, D)``, dense embeddings ``(B, H*W, D)`` and backbone features ``(B, H*W, C)``.

        Args:
            images: ``(B, 3, H_img, W_img)``.
            teacher: Use the key (momentum) encoder instead of the query encoder.
        """
        backbone, head, dense_head = (
            (self.teacher_backbone, self.teacher_projection_head, self.teacher_dense_projection_head)
            if teacher
            else (self.backbone, self.projection_head, self.dense_projection_head)
        )
        pooled, dense_map = forward_dense_features(backbone, images)  # (B, D_backbone), (B, C, H, W)
        dense_embedding = dense_head(dense_map)  # (B, D, H, W)
        return head(pooled), dense_embedding.flatten(2).transpose(1, 2), dense_map.flatten(2).transpose(1, 2)

    def forward(self, views: Sequence[torch.Tensor]) -> SSLMethodOutput:
        self.check_views(views, count=2)
        query, query_dense, query_features = self.encode(views[0])  # (B, D), (B, N, D), (B, N, C)
        warn_if_one_location(type(self).__name__, query_dense.shape[1], views[0].shape[-2:])
        with torch.no_grad():
            key, key_dense, key_features = self._keys(views[1])
        loss = self.criterion(query, key, query_dense, key_dense, query_features, key_features)
        return SSLMethodOutput(loss=loss)

    def _keys(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The key encoder's :meth:`encode` of ``images``, with shuffling BN where configured."""
        key_encoder = (self.teacher_backbone, self.teacher_projection_head, self.teacher_dense_projection_head)
        if self.config.shuffle_bn and uses_batch_statistics(*key_encoder):
            key, key_dense, key_features = shuffled_batch_norm_forward(
                lambda batch: self.encode(batch, teacher=True), images, self.config.shuffle_bn_group_size
            )
            return key, key_dense, key_features
        return self.encode(images, teacher=True)

    def callbacks(self) -> list[TrainerCallback]:
        from ssl_hub.training.callbacks import EMAUpdateCallback

        pairs = [
            (self.backbone, self.teacher_backbone),
            (self.projection_head, self.teacher_projection_head),
            (self.dense_projection_head, self.teacher_dense_projection_head),
        ]
        return [EMAUpdateCallback(pairs, self.config.momentum, self.config.momentum)]
