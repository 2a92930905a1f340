"""MoCo: momentum contrast, versions 2 and 3.

MoCo v2 (Chen, Fan, Girshick, He, 2020, arXiv:2003.04297) is MoCo (He et al., CVPR 2020, arXiv:1911.05722) with an
MLP projection head, stronger augmentation and a cosine learning rate: queries from the backbone + projector are
contrasted with keys from its momentum (EMA) copy, the negatives being a queue of the keys of earlier batches.

MoCo v3 (Chen, Xie, He, ICCV 2021, arXiv:2104.02057) drops the queue: a prediction head on the query side, a
symmetrised InfoNCE whose negatives are the other keys of the (global) batch, BYOL's augmentation and BYOL's cosine
momentum schedule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import nn

from ssl_hub import distributed
from ssl_hub._validation import check_positive, check_positive_int, check_probability
from ssl_hub.heads.moco import MoCoProjectionHead
from ssl_hub.losses.info_nce import InfoNCELoss
from ssl_hub.losses.ntxent import NTXentLoss
from ssl_hub.methods.base import (
    RECIPE_BATCH_SIZE,
    MethodConfig,
    Paper,
    SSLMethod,
    SSLMethodOutput,
    lars_training_arguments,
    sgd_training_arguments,
)
from ssl_hub.modules.ema import ema_copy
from ssl_hub.modules.shuffle_bn import shuffled_batch_norm_forward, uses_batch_statistics
from ssl_hub.registry import register_method
from ssl_hub.transforms.byol import BYOLTransform
from ssl_hub.transforms.moco import MoCoV2Transform
from ssl_hub.transforms.multi_view import MultiViewTransform

if TYPE_CHECKING:
    from transformers import TrainerCallback

PAPER = Paper(
    title="Improved Baselines with Momentum Contrastive Learning",
    authors="Xinlei Chen, Haoqi Fan, Ross Girshick, Kaiming He",
    year=2020,
    url="https://arxiv.org/abs/2003.04297",
    bibtex="""@inproceedings{he2020moco,
  title={Momentum Contrast for Unsupervised Visual Representation Learning},
  author={He, Kaiming and Fan, Haoqi and Wu, Yuxin and Xie, Saining and Girshick, Ross},
  booktitle={IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year={2020}
}
@article{chen2020mocov2,
  title={Improved Baselines with Momentum Contrastive Learning},
  author={Chen, Xinlei and Fan, Haoqi and Girshick, Ross and He, Kaiming},
  journal={arXiv preprint arXiv:2003.04297},
  year={2020}
}
@inproceedings{chen2021mocov3,
  title={An Empirical Study of Training Self-Supervised Vision Transformers},
  author={Chen, Xinlei and Xie, Saining and He, Kaiming},
  booktitle={IEEE/CVF International Conference on Computer Vision (ICCV)},
  year={2021}
}""",
)

# The papers' values of the version-dependent fields MoCoConfig leaves at None. v2: official facebookresearch/moco
# README ("--mlp --moco-t 0.2 --aug-plus --cos") and moco/builder.py; v3: the paper's implementation details and
# facebookresearch/moco-v3 main_moco.py / moco/builder.py.
VERSION_DEFAULTS: dict[int, dict[str, Any]] = {
    2: {
        "memory_bank_size": 65536,
        "momentum_start": 0.999,
        "projection_output_dim": 128,
        "projection_num_layers": 2,
        "projection_batch_norm": False,
        "shuffle_bn": True,
    },
    3: {
        "memory_bank_size": 0,
        "momentum_start": 0.99,
        "momentum_end": 1.0,
        "projection_hidden_dim": 4096,
        "projection_output_dim": 256,
        "projection_num_layers": 3,
        "projection_batch_norm": True,
        "prediction_hidden_dim": 4096,
        "shuffle_bn": False,
    },
}

# v3's AdamW weight decay on ViTs (the official CONFIG.md's ViT recipes, --weight-decay=.1).
VIT_WEIGHT_DECAY = 0.1

T = TypeVar("T")


def _given(value: T | None, name: str) -> T:
    if value is None:
        raise ValueError(
            f"MoCo: {name} is None. MoCoConfig replaces None by the version's value when it is built: build a new "
            "MoCoConfig rather than setting a field to None afterwards."
        )
    return value


@dataclass
class MoCoConfig(MethodConfig):
    """MoCo's hyperparameters. A field left at ``None`` takes the paper's value for ``version`` when the config is
    built (the stored config, and so the saved one, holds the values used):

    ========================  ====================  ==================
    field                     version 2             version 3
    ========================  ====================  ==================
    memory_bank_size          65536                 0 (no queue)
    momentum_start            0.999                 0.99
    momentum_end              = momentum_start      1.0
    projection_hidden_dim     None: backbone width  4096
    projection_output_dim     128                   256
    projection_num_layers     2                     3
    projection_batch_norm     False                 True
    prediction_hidden_dim     None: no predictor    4096
    shuffle_bn                True                  False
    ========================  ====================  ==================

    Args:
        version: 2 (queue of negatives, arXiv:2003.04297) or 3 (in-batch negatives and a predictor, arXiv:2104.02057).
        temperature: Softmax temperature ``tau`` of both versions (v2: official README; v3: the official ViT
            recipes, CONFIG.md; the official ResNet-50 v3 recipe uses 1.0).
        memory_bank_size: v2's queue of negative keys. It must hold at least one global batch (checked at the first
            forward, when the batch size is known): each step writes all keys of the global batch into it.
        momentum_start: Momentum of the key (teacher) encoder at the first step.
        momentum_end: Momentum at the last step; it follows BYOL's cosine from ``momentum_start`` (v3's
            ``--moco-m-cos``), constant when equal (v2).
        projection_hidden_dim: Hidden width of the projector; ``None`` in v2 means the backbone's feature width
            (``mlp=True`` in the official code).
        projection_output_dim: Width of queries and keys.
        projection_num_layers: Linear layers of the projector (the official v3 code uses 2 for ResNets, 3 for ViTs).
        projection_batch_norm: BN after every projector layer (v3).
        prediction_hidden_dim: Hidden width of v3's 2-layer predictor; must stay ``None`` in v2, which has none.
        shuffle_bn: MoCo's shuffling BN, so that a query and its key do not share batch-norm statistics (MoCo sec.
            3.3; :func:`~ssl_hub.modules.shuffled_batch_norm_forward`): under multi-process training the key
            encoder sees the global batch in a random order shared by all ranks; in one process it sees a shuffled
            batch in groups of ``shuffle_bn_group_size``. Only where the key encoder has batch norm in train mode.
            The official v3 code uses synchronised BN instead (not applied here).
        shuffle_bn_group_size: Images per key-encoder batch-norm group in one process (32: the paper's batch of 256
            over 8 GPUs); batches smaller than two groups are encoded whole.
        gather_distributed: Gather keys across ranks: into v2's queue (keeps the queues identical on every rank) and
            as v3's negatives.
    """

    version: int = 2
    temperature: float = 0.2
    memory_bank_size: int | None = None
    momentum_start: float | None = None
    momentum_end: float | None = None
    projection_hidden_dim: int | None = None
    projection_output_dim: int | None = None
    projection_num_layers: int | None = None
    projection_batch_norm: bool | None = None
    prediction_hidden_dim: int | None = None
    shuffle_bn: bool | None = None
    shuffle_bn_group_size: int = 32
    gather_distributed: bool = True

    def __post_init__(self) -> None:
        self._check_version()
        for name, value in VERSION_DEFAULTS[self.version].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.momentum_end is None:  # v2: a constant momentum
            self.momentum_end = self.momentum_start
        super().__post_init__()

    def _check_version(self) -> None:
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version not in VERSION_DEFAULTS:
            raise ValueError(f"MoCo: version must be 2 or 3, got {self.version!r}.")

    def validate(self) -> None:
        self._check_version()
        owner = f"MoCo v{self.version}"
        check_positive("temperature", self.temperature, owner)
        memory_bank_size = _given(self.memory_bank_size, "memory_bank_size")
        if self.version == 2:
            check_positive_int("memory_bank_size", memory_bank_size, owner)
            if self.prediction_hidden_dim is not None:
                raise ValueError(
                    f"{owner} has no prediction head: leave prediction_hidden_dim at None, or use version=3."
                )
        else:
            if memory_bank_size != 0:
                raise ValueError(
                    f"{owner} has no queue (its negatives are the other keys of the batch): memory_bank_size must "
                    f"be 0, got {memory_bank_size!r}; use version=2 for a queue."
                )
            check_positive_int(
                "prediction_hidden_dim", _given(self.prediction_hidden_dim, "prediction_hidden_dim"), owner
            )
        check_probability("momentum_start", _given(self.momentum_start, "momentum_start"), owner)
        check_probability("momentum_end", _given(self.momentum_end, "momentum_end"), owner)
        if self.projection_hidden_dim is not None:
            check_positive_int("projection_hidden_dim", self.projection_hidden_dim, owner)
        check_positive_int("projection_output_dim", _given(self.projection_output_dim, "projection_output_dim"), owner)
        check_positive_int(
            "projection_num_layers", _given(self.projection_num_layers, "projection_num_layers"), owner, minimum=2
        )
        _given(self.projection_batch_norm, "projection_batch_norm")
        _given(self.shuffle_bn, "shuffle_bn")
        check_positive_int("shuffle_bn_group_size", self.shuffle_bn_group_size, owner)


@register_method
class MoCo(SSLMethod):
    """MoCo v2 (default) or v3 (``version=3``) around any timm backbone; see :class:`MoCoConfig`.

    The key encoder (``teacher_backbone`` + ``teacher_projection_head``) is an EMA copy of the query encoder, moved
    after every optimizer step by :class:`~ssl_hub.training.EMAUpdateCallback` (from :meth:`callbacks`). The
    published backbone is the query (student) ``backbone``, the encoder both official codes evaluate
    (``encoder_q`` in v2, ``base_encoder`` in v3); the key encoder and v2's queue live in ``ssl/``.

    Losses, with ``q`` queries and ``k`` keys, both l2-normalised:

    - v2: ``-log exp(q . k+ / tau) / (exp(q . k+ / tau) + sum_queue exp(q . k- / tau))`` for the queries of view 0
      and the keys of view 1 (MoCo eq. 1, :class:`~ssl_hub.losses.NTXentLoss` with its memory bank); the queue then
      receives the keys of the global batch.
    - v3: ``2 tau (CE(q_1 k_2^T / tau) + CE(q_2 k_1^T / tau))``, cross entropy towards the diagonal over the keys of
      the global batch (paper eq. 1 and Algorithm 1; ``contrastive_loss`` in the official ``moco/builder.py``).

    Batches must have the same size on every rank (``dataloader_drop_last=True``, as ``ssl_hub.pretrain`` sets).
    The v3 ViT recipe's frozen random patch projection (``--stop-grad-conv1``) is not applied, and a ViT keeps timm's
    initialisation (the official code's Xavier init with Q, K and V split is timm's
    ``backbone_kwargs={"weight_init": "moco"}``; a default here would reach ResNets too).
    """

    name = "moco"
    display_name = "MoCo"
    config_class = MoCoConfig
    transform_class = MoCoV2Transform
    paper = PAPER
    learning_rate_scaling = "linear"  # both papers: lr x BatchSize / 256
    config: MoCoConfig

    def __init__(self, backbone: str | nn.Module, config: MoCoConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        output_dim = _given(cfg.projection_output_dim, "projection_output_dim")
        self.projection_head = MoCoProjectionHead(
            input_dim=self.feature_dim,
            hidden_dim=cfg.projection_hidden_dim or self.feature_dim,
            output_dim=output_dim,
            num_layers=_given(cfg.projection_num_layers, "projection_num_layers"),
            batch_norm=_given(cfg.projection_batch_norm, "projection_batch_norm"),
        )
        # v3's predictor: the official _build_mlp(2, dim, mlp_dim, dim) with BN after both layers, as the paper says.
        self.prediction_head = (
            MoCoProjectionHead(output_dim, cfg.prediction_hidden_dim, output_dim, num_layers=2, batch_norm=True)
            if cfg.prediction_hidden_dim is not None
            else None
        )
        self.teacher_backbone = ema_copy(self.backbone)
        self.teacher_projection_head = ema_copy(self.projection_head)
        self.criterion: nn.Module
        if cfg.version == 2:
            queue = (_given(cfg.memory_bank_size, "memory_bank_size"), output_dim)
            self.criterion = NTXentLoss(
                cfg.temperature, memory_bank_size=queue, gather_distributed=cfg.gather_distributed
            )
        else:
            self.criterion = InfoNCELoss(cfg.temperature, gather_distributed=cfg.gather_distributed)

    def forward(self, views: Sequence[torch.Tensor]) -> SSLMethodOutput:
        self.check_views(views, count=2)
        if self.prediction_head is None:  # v2
            self._check_queue_holds_a_batch(views[0].shape[0])
            queries = self.projection_head(self.backbone(views[0]))  # (B, D)
            with torch.no_grad():
                keys = self._keys(views[1])  # (B, D)
            return SSLMethodOutput(loss=self.criterion(queries, keys))
        # v3: one pass per view, as in the official code.
        q0, q1 = (self.prediction_head(self.projection_head(self.backbone(v))) for v in views)  # (B, D) each
        with torch.no_grad():
            k0, k1 = (self._keys(v) for v in views)  # (B, D) each
        loss = 2 * self.config.temperature * (self.criterion(q0, k1) + self.criterion(q1, k0))
        return SSLMethodOutput(loss=loss)

    def _keys(self, images: torch.Tensor) -> torch.Tensor:
        """Key-encoder embeddings ``(B, D)`` of ``(B, C, H, W)`` images, with shuffling BN where configured."""

        def encode(batch: torch.Tensor) -> tuple[torch.Tensor]:
            return (self.teacher_projection_head(self.teacher_backbone(batch)),)

        if self.config.shuffle_bn and uses_batch_statistics(self.teacher_backbone, self.teacher_projection_head):
            (keys,) = shuffled_batch_norm_forward(encode, images, self.config.shuffle_bn_group_size)
        else:
            (keys,) = encode(images)
        return keys

    def _check_queue_holds_a_batch(self, batch_size: int) -> None:
        size = _given(self.config.memory_bank_size, "memory_bank_size")
        ranks = distributed.world_size() if self.config.gather_distributed else 1
        if size < batch_size * ranks:
            raise ValueError(
                f"MoCo: memory_bank_size ({size}) is smaller than the batch it receives each step ({batch_size} "
                f"images x {ranks} process(es) = {batch_size * ranks}), so keys would leave the queue before they "
                "serve as negatives. Raise memory_bank_size or lower per_device_train_batch_size."
            )

    @classmethod
    def default_training_arguments(cls, config: MethodConfig | None = None) -> dict[str, Any]:
        """v2: the official recipe (main_moco.py with ``--cos``): SGD at 0.03 per 256 images
        (:func:`~ssl_hub.methods.base.sgd_training_arguments`). v3: the shared AdamW recipe at 1e-3 per 256 images,
        scaled linearly as the paper scales (it trains ViTs with AdamW at 1.5e-4 per 256 images over 300 epochs);
        on convolutional backbones LARS (:meth:`backbone_training_arguments`)."""
        version = config.version if isinstance(config, MoCoConfig) else MoCoConfig.version
        if version == 2:
            return sgd_training_arguments(0.03)
        recipe = super().default_training_arguments(config)
        return {**recipe, "learning_rate": recipe["learning_rate"] * RECIPE_BATCH_SIZE / 256}

    def backbone_training_arguments(self) -> dict[str, Any]:
        """v3 on a convolutional backbone (one without a ViT's ``patch_embed``): LARS, as the paper trains ResNets, at
        0.3 per 256 images (solo-learn's CIFAR MoCo v3 settings, :func:`~ssl_hub.methods.base.lars_training_arguments`).
        On Fashion-MNIST at 936 steps a ResNet-18 reached 79.77 % kNN over two seeds with it, against 78.40 % with the
        AdamW recipe that transformers keep (``benchmarks/RESULTS.md``). v3 on a ViT: AdamW with weight decay 0.1, as
        the official ViT recipes (CONFIG.md, ``--weight-decay=.1``); the ResNets keep the official default, 1e-6."""
        if self.config.version != 3:
            return {}
        if hasattr(self.backbone, "patch_embed"):
            return {"weight_decay": VIT_WEIGHT_DECAY}
        return lars_training_arguments(0.3)

    def make_transform(self, input_size: int = 224, **kwargs: Any) -> MultiViewTransform:
        """MoCo v2's "aug+" (:class:`~ssl_hub.transforms.MoCoV2Transform`); for v3 BYOL's asymmetric views
        (:class:`~ssl_hub.transforms.BYOLTransform`), as in the official v3 code. ``kwargs`` override arguments."""
        if self.config.version == 3:
            return BYOLTransform(input_size=input_size, **kwargs)
        return super().make_transform(input_size, **kwargs)

    def callbacks(self) -> list[TrainerCallback]:
        from ssl_hub.training.callbacks import EMAUpdateCallback

        pairs = [(self.backbone, self.teacher_backbone), (self.projection_head, self.teacher_projection_head)]
        start = _given(self.config.momentum_start, "momentum_start")
        return [EMAUpdateCallback(pairs, start, _given(self.config.momentum_end, "momentum_end"))]
