"""iBOT: Image BERT Pre-Training with Online Tokenizer.

Zhou, Wei, Wang, Shen, Xie, Yuille, Kong, ICLR 2022 (arXiv:2111.07832). DINO's self-distillation of the class token
across crops, plus masked image modelling by self-distillation: some patches of the student's global crops are
replaced by a mask token, and at those patches the student predicts the output distribution the EMA teacher (the
"online tokenizer") gives to the unmasked crop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, cast

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from transformers import TrainerCallback

from ssl_hub._validation import check_non_negative, check_positive, check_positive_int, check_probability
from ssl_hub.heads.dino import DINOProjectionHead
from ssl_hub.losses.dino import DINOLoss
from ssl_hub.losses.ibot import IBOTPatchLoss
from ssl_hub.losses.sinkhorn_dino import SinkhornDINOLoss
from ssl_hub.methods.base import LearningRateScaling, MethodConfig, Paper, SSLMethod, SSLMethodOutput
from ssl_hub.methods.dino import switch_off_dropout
from ssl_hub.modules.collapse import normalized_entropy_of_probabilities
from ssl_hub.modules.ema import ema_copy
from ssl_hub.modules.masked_vit import MaskedVisionTransformer
from ssl_hub.modules.masking import MaskingRNG, block_mask
from ssl_hub.modules.multi_crop import (
    check_input_sizes,
    check_multi_crop_views,
    crop_size_multiple,
    dynamic_size_backbone,
    multi_crop_forward,
)
from ssl_hub.registry import register_method
from ssl_hub.training.callbacks import trainer_steps_per_epoch
from ssl_hub.training.schedules import linear_warmup_schedule
from ssl_hub.transforms.ibot import IBOTTransform
from ssl_hub.transforms.multi_crop import local_crop_size

if TYPE_CHECKING:
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from ssl_hub.transforms.multi_view import MultiViewTransform

PAPER = Paper(
    title="iBOT: Image BERT Pre-Training with Online Tokenizer",
    authors="Jinghao Zhou, Chen Wei, Huiyu Wang, Wei Shen, Cihang Xie, Alan Yuille, Tao Kong",
    year=2022,
    url="https://arxiv.org/abs/2111.07832",
    bibtex="""@inproceedings{zhou2022ibot,
  title={iBOT: Image BERT Pre-Training with Online Tokenizer},
  author={Zhou, Jinghao and Wei, Chen and Wang, Huiyu and Shen, Wei and Xie, Cihang and Yuille, Alan and Kong, Tao},
  booktitle={International Conference on Learning Representations (ICLR)},
  year={2022}
}""",
)


@dataclass
class IBOTConfig(MethodConfig):
    """iBOT's hyperparameters (the ViT-S/16 recipe of the official README and ``main_ibot.py``).

    Args:
        projection_hidden_dim: Hidden width of the DINO head's MLP (2048).
        bottleneck_dim: Width of the head's L2-normalised bottleneck (256).
        output_dim: Number of head outputs ``K`` for the class token (8192).
        separate_head: Give the patch tokens their own head (DINOv2's ``separate_head``); by default they share the
            class token's head (the README's ``--shared_head true``). iBOT's third variant, a shared MLP with a
            separate last layer, is not offered.
        patch_output_dim: Number of outputs of the separate patch head.
        projection_batch_norm: Batch-normalise the heads' hidden layers (off).
        norm_last_layer: Fix the weight-norm magnitude of the heads' last layers (the official default; the README
            trains ViT-S without it).
        freeze_last_layer: Epochs at the start during which the heads' last layers do not train (1).
        warmup_teacher_temp: Teacher temperature of the class token at the first step (0.04) ...
        teacher_temp: ... rising linearly to this (0.07, the README's ViT-S/16 value) ...
        warmup_teacher_temp_epochs: ... over this many epochs (30), for both temperatures.
        warmup_teacher_patch_temp: Teacher temperature of the patch tokens at the first step (0.04) ...
        teacher_patch_temp: ... rising linearly to this (0.07).
        student_temp: Student temperature (0.1).
        center_momentum: Momentum of the teacher centers (0.9).
        mask_probability: Fraction of the global crops that get masked patches (0.5: the README's ``--pred_ratio 0
            0.3``).
        mask_ratio_min: Each masked crop masks a fraction of its patches drawn from [min, max] (0.1 ...
        mask_ratio_max: ... 0.5: ``--pred_ratio_var 0.2`` around 0.3).
        mask_min_block_patches: Smallest masked rectangle in patches; ``None`` for iBOT's ``(min(h, w) // 3) ** 2``
            (16 patches at 224 px, at least 1).
        mask_min_aspect_ratio: Smallest height / width of a masked rectangle (0.3; the largest is its inverse).
        cls_loss_weight: Weight of the class-token loss (``lambda1``, 1).
        patch_loss_weight: Weight of the masked-patch loss (``lambda2``, 1).
        momentum_start: Teacher EMA momentum at the first step (0.996) ...
        momentum_end: ... rising on a cosine to this at the last step (1).
        weight_decay_start: Weight decay at the first step (0.04) ...
        weight_decay_end: ... following a cosine to this at the last step (0.4).
    """

    projection_hidden_dim: int = 2048
    bottleneck_dim: int = 256
    output_dim: int = 8192
    separate_head: bool = False
    patch_output_dim: int = 8192
    projection_batch_norm: bool = False
    norm_last_layer: bool = True
    freeze_last_layer: int = 1
    warmup_teacher_temp: float = 0.04
    teacher_temp: float = 0.07
    warmup_teacher_temp_epochs: int = 30
    warmup_teacher_patch_temp: float = 0.04
    teacher_patch_temp: float = 0.07
    student_temp: float = 0.1
    center_momentum: float = 0.9
    mask_probability: float = 0.5
    mask_ratio_min: float = 0.1
    mask_ratio_max: float = 0.5
    mask_min_block_patches: int | None = None
    mask_min_aspect_ratio: float = 0.3
    cls_loss_weight: float = 1.0
    patch_loss_weight: float = 1.0
    momentum_start: float = 0.996
    momentum_end: float = 1.0
    weight_decay_start: float = 0.04
    weight_decay_end: float = 0.4

    def validate(self) -> None:
        owner = self.owner()
        for name in ("projection_hidden_dim", "bottleneck_dim", "output_dim", "patch_output_dim"):
            check_positive_int(name, getattr(self, name), owner)
        for name in ("freeze_last_layer", "warmup_teacher_temp_epochs"):
            check_positive_int(name, getattr(self, name), owner, minimum=0)
        for name in ("warmup_teacher_temp", "teacher_temp", "warmup_teacher_patch_temp", "teacher_patch_temp"):
            check_positive(name, getattr(self, name), owner)
        check_positive("student_temp", self.student_temp, owner)
        for name in ("center_momentum", "mask_probability", "mask_ratio_min", "mask_ratio_max"):
            check_probability(name, getattr(self, name), owner)
        if self.mask_ratio_min > self.mask_ratio_max:
            raise ValueError(
                f"{owner}: mask_ratio_min ({self.mask_ratio_min}) must not exceed mask_ratio_max "
                f"({self.mask_ratio_max})."
            )
        if self.mask_min_block_patches is not None:
            check_positive_int("mask_min_block_patches", self.mask_min_block_patches, owner)
        check_positive("mask_min_aspect_ratio", self.mask_min_aspect_ratio, owner)
        for name in ("cls_loss_weight", "patch_loss_weight", "weight_decay_start", "weight_decay_end"):
            check_non_negative(name, getattr(self, name), owner)
        for name in ("momentum_start", "momentum_end"):
            check_probability(name, getattr(self, name), owner)

    def owner(self) -> str:
        """The method's name, for error messages."""
        return "iBOT"


class IBOTTeacherTemperatureCallback(TrainerCallback):
    """Before each optimizer step, set the teacher temperatures of the class and the patch tokens: a linear
    warm-up over ``warmup_teacher_temp_epochs`` epochs, then constant (iBOT ``main_ibot.py``, DINO sec. 3.1).

    Args:
        method: The iBOT (or DINOv2) method whose ``teacher_temperature`` and ``teacher_patch_temperature`` buffers
            to set.
    """

    def __init__(self, method: IBOT) -> None:
        self.method = method

    def temperatures(self, step: int, steps_per_epoch: int) -> tuple[float, float]:
        """The (class token, patch tokens) teacher temperatures of ``step`` in a run of ``steps_per_epoch`` steps an
        epoch."""
        cfg = self.method.config
        warmup_steps = round(cfg.warmup_teacher_temp_epochs * steps_per_epoch)
        return (
            linear_warmup_schedule(step, warmup_steps, cfg.warmup_teacher_temp, cfg.teacher_temp),
            linear_warmup_schedule(step, warmup_steps, cfg.warmup_teacher_patch_temp, cfg.teacher_patch_temp),
        )

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        epoch = trainer_steps_per_epoch(args, state, kwargs.get("train_dataloader"))
        cls_temperature, patch_temperature = self.temperatures(state.global_step, epoch)
        self.method.teacher_temperature.fill_(cls_temperature)
        self.method.teacher_patch_temperature.fill_(patch_temperature)


@dataclass
class DistillationOutput:
    """What :meth:`IBOT.distillation_loss` returns.

    Attributes:
        terms: The weighted class-token (``cls``) and masked-patch (``patch``) losses, whose sum is the loss.
        student_global_features: ``(2B, D)`` the student backbone's pooled features of the (masked) global crops,
            crop by crop.
        teacher_entropy: The class-token teacher targets' entropy over ``ln K``, averaged over the ``2B`` targets.
    """

    terms: dict[str, torch.Tensor]
    student_global_features: torch.Tensor
    teacher_entropy: torch.Tensor


@register_method
class IBOT(SSLMethod):
    """iBOT around a timm ViT; see :class:`IBOTConfig` for the hyperparameters.

    ``views`` are 2 global crops of one size followed by local crops (:class:`IBOTTransform`). The student sees the
    global crops with block-masked patches replaced by its mask token (``self.encoder.mask_token``; BEiT's blockwise
    masking with iBOT's per-image ratios), the local crops unmasked; the teacher (``teacher_backbone`` + heads, an
    EMA copy without dropout or stochastic depth) sees the unmasked global crops. The class-token loss is DINO's
    (:class:`~ssl_hub.losses.DINOLoss`, on the student's masked global crops and its local crops), the patch loss
    :class:`~ssl_hub.losses.IBOTPatchLoss` at the masked patches. The image-level token is the ViT's pooled feature
    (its class token, or the patch mean for ``global_pool="avg"`` ViTs). ViTs built for one size are rebuilt with
    ``dynamic_img_size=True`` so that they take the local crops.

    Heads: the patch tokens share the class token's DINO head by default (``separate_head=False``, iBOT's
    ``--shared_head true`` recipe); ``separate_head=True`` gives them their own head and teacher copy. The teacher
    head runs on the masked patches only and the patch center averages the teacher outputs there (as DINOv2; the
    official iBOT code runs the teacher head on all patches and averages them all for its center).

    The step-dependent parts are :meth:`callbacks`: the teacher temperatures' warm-up, the teacher momentum (cosine
    from 0.996 to 1), the weight decay (cosine from 0.04 to 0.4) and the heads' last layers frozen for the first
    epoch. Gradients are clipped at norm 3. Stochastic depth (``drop_path_rate`` 0.1 in iBOT) is a timm argument:
    ``backbone_kwargs={"drop_path_rate": 0.1}``.

    The published backbone is the **teacher**'s (``published_backbone = "teacher_backbone"``), which iBOT
    evaluates, as DINO. The student ``backbone``, its mask token, the heads and the centers live in ``ssl/``.

    The Trainer's log shows ``loss_cls``, ``loss_patch`` and ``teacher_entropy``: the entropy of the class token's
    teacher targets over ``ln K``, as :class:`~ssl_hub.methods.DINO` logs it (near 1 the targets are uniform and
    carry nothing for the student to learn).
    """

    name = "ibot"
    display_name = "iBOT"
    config_class = IBOTConfig
    transform_class: ClassVar[type[MultiViewTransform]] = IBOTTransform
    paper = PAPER
    learning_rate_scaling: ClassVar[LearningRateScaling] = "linear"  # DINOv2 scales by the square root
    requires_vit = True
    published_backbone = "teacher_backbone"
    config: IBOTConfig
    teacher_temperature: torch.Tensor
    teacher_patch_temperature: torch.Tensor

    def __init__(self, backbone: str | nn.Module, config: IBOTConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.backbone = dynamic_size_backbone(self.backbone)
        self.encoder = MaskedVisionTransformer(self.backbone, mask_token=True, owner=self.display_name)
        self.projection_head = self.build_head(cfg.output_dim)
        self.patch_head = self.build_head(cfg.patch_output_dim) if cfg.separate_head else None
        self.teacher_backbone = ema_copy(self.backbone)
        switch_off_dropout(self.teacher_backbone)
        self.teacher_head = ema_copy(self.projection_head)
        self.teacher_patch_head: nn.Module | None = ema_copy(self.patch_head) if self.patch_head is not None else None
        self.criterion, self.patch_criterion = self.build_criteria()
        self.register_buffer("teacher_temperature", torch.tensor(cfg.warmup_teacher_temp))
        self.register_buffer("teacher_patch_temperature", torch.tensor(cfg.warmup_teacher_patch_temp))
        self.mask_rng = MaskingRNG()

    def build_head(self, output_dim: int) -> DINOProjectionHead:
        """A student DINO head with ``output_dim`` outputs."""
        cfg = self.config
        return DINOProjectionHead(
            self.feature_dim,
            cfg.projection_hidden_dim,
            cfg.bottleneck_dim,
            output_dim,
            batch_norm=cfg.projection_batch_norm,
            freeze_last_layer=cfg.freeze_last_layer,
            norm_last_layer=cfg.norm_last_layer,
        )

    def build_criteria(self) -> tuple[DINOLoss | SinkhornDINOLoss, IBOTPatchLoss]:
        """The class-token and the patch-token loss: DINO centering for both (DINOv2 may use Sinkhorn-Knopp)."""
        cfg = self.config
        patch_dim = cfg.patch_output_dim if cfg.separate_head else cfg.output_dim
        return (
            DINOLoss(cfg.output_dim, student_temp=cfg.student_temp, center_momentum=cfg.center_momentum),
            IBOTPatchLoss(patch_dim, student_temp=cfg.student_temp, center_momentum=cfg.center_momentum),
        )

    def patch_heads(self) -> tuple[nn.Module, nn.Module]:
        """The (student, teacher) heads of the patch tokens: their own, or the class token's."""
        if self.patch_head is not None and self.teacher_patch_head is not None:
            return self.patch_head, self.teacher_patch_head
        return self.projection_head, self.teacher_head

    def mask_ratios(self, num_images: int, generator: torch.Generator) -> list[float]:
        """The fraction of patches to mask in each of ``num_images`` global crops: iBOT masks each crop with
        probability ``mask_probability``, at a ratio drawn uniformly from [``mask_ratio_min``, ``mask_ratio_max``]."""
        cfg = self.config
        masked = torch.rand(num_images, generator=generator) < cfg.mask_probability  # (2B,)
        ratios = cfg.mask_ratio_min + (cfg.mask_ratio_max - cfg.mask_ratio_min) * torch.rand(
            num_images, generator=generator
        )
        return torch.where(masked, ratios, torch.zeros_like(ratios)).tolist()

    def sample_masks(self, num_images: int, grid_size: tuple[int, int], device: torch.device) -> torch.Tensor:
        """Block masks of the global crops, ``(2B, h * w)`` boolean (drawn on the CPU from ``self.mask_rng``);
        a crop masks ``int(ratio * h * w)`` patches, as the official collators."""
        cfg = self.config
        height, width = grid_size
        num_patches = height * width
        min_block = cfg.mask_min_block_patches or max(1, (min(height, width) // 3) ** 2)
        generator = self.mask_rng.next_generator()
        masks = []
        for ratio in self.mask_ratios(num_images, generator):
            count = int(ratio * num_patches)
            if count == 0:
                masks.append(torch.zeros(1, num_patches, dtype=torch.bool))
                continue
            masks.append(
                block_mask(
                    1,
                    grid_size,
                    count / num_patches,
                    min_block_patches=min_block,
                    min_aspect_ratio=cfg.mask_min_aspect_ratio,
                    generator=generator,
                )
            )
        return torch.cat(masks).to(device)  # (2B, N)

    def distillation_loss(self, views: Sequence[torch.Tensor]) -> DistillationOutput:
        """The weighted class-token and masked-patch losses of one batch of views."""
        owner = self.display_name
        check_multi_crop_views(views, owner)
        check_input_sizes(self.backbone, views, owner)
        cfg = self.config
        global_crops = torch.cat(list(views[:2]))  # (2B, C, H, W)
        grid = self.encoder.grid_size(global_crops.shape[-2:])
        mask = self.sample_masks(len(global_crops), grid, global_crops.device)  # (2B, N)
        student_patch_head, teacher_patch_head = self.patch_heads()
        with torch.no_grad():
            teacher = cast(VisionTransformer, self.teacher_backbone)
            tokens = teacher.forward_features(global_crops)  # (2B, P + N, D)
            teacher_cls = self.teacher_head(teacher.forward_head(tokens, pre_logits=True))  # (2B, K)
            teacher_patches = tokens[:, self.encoder.num_prefix_tokens :][mask]  # (M, D)
            teacher_patch_out = teacher_patch_head(teacher_patches)  # (M, K_p)
        encoded = self.encoder(global_crops, mask=mask)
        student_global_features = self.encoder.pool(encoded)  # (2B, D)
        student_global = self.projection_head(student_global_features)  # (2B, K)
        student_patch_out = student_patch_head(encoded.patch_tokens[mask])  # (M, K_p)
        student_local = multi_crop_forward(lambda x: self.projection_head(self.backbone(x)), views[2:])
        student_cls = [*student_global.chunk(2), *student_local]  # (B, K) per crop, the global crops first
        # before the loss moves the class token's center (iBOT); DINOv2's Sinkhorn-Knopp targets are computed twice
        teacher_entropy = normalized_entropy_of_probabilities(
            self.criterion.teacher_targets(teacher_cls, self.teacher_temperature)  # (2B, K)
        )
        cls_loss = self.criterion(list(teacher_cls.chunk(2)), student_cls, teacher_temp=self.teacher_temperature)
        patch_loss = self.patch_criterion(
            teacher_patch_out, student_patch_out, mask, teacher_temp=self.teacher_patch_temperature
        )
        terms = {"cls": cfg.cls_loss_weight * cls_loss, "patch": cfg.patch_loss_weight * patch_loss}
        return DistillationOutput(
            terms=terms, student_global_features=student_global_features, teacher_entropy=teacher_entropy
        )

    def forward(self, views: Sequence[torch.Tensor]) -> SSLMethodOutput:
        distillation = self.distillation_loss(views)
        return SSLMethodOutput.from_terms(distillation.terms, teacher_entropy=distillation.teacher_entropy)

    def make_transform(self, input_size: int = 224, **kwargs: Any) -> MultiViewTransform:
        """The method's multi-crop transform with global crops of ``input_size`` px and local crops scaled to them
        (a multiple of the patch size)."""
        kwargs.setdefault("local_crop_size", local_crop_size(input_size, crop_size_multiple(self.backbone)))
        return super().make_transform(input_size, **kwargs)

    def callbacks(self) -> list[TrainerCallback]:
        from ssl_hub.training.callbacks import (
            EMAUpdateCallback,
            FreezeParametersCallback,
            WeightDecayScheduleCallback,
        )

        cfg = self.config
        pairs: list[tuple[nn.Module, nn.Module]] = [
            (self.backbone, self.teacher_backbone),
            (self.projection_head, self.teacher_head),
        ]
        if self.patch_head is not None and self.teacher_patch_head is not None:
            pairs.append((self.patch_head, self.teacher_patch_head))
        callbacks: list[TrainerCallback] = [
            IBOTTeacherTemperatureCallback(self),
            EMAUpdateCallback(pairs, cfg.momentum_start, cfg.momentum_end),
            WeightDecayScheduleCallback(cfg.weight_decay_start, cfg.weight_decay_end),
        ]
        if cfg.freeze_last_layer > 0:
            heads = [self.projection_head] if self.patch_head is None else [self.projection_head, self.patch_head]
            last_layers = [p for head in heads for p in head.last_layer.parameters()]
            callbacks.append(FreezeParametersCallback(last_layers, frozen_epochs=cfg.freeze_last_layer))
        return callbacks

    @classmethod
    def default_training_arguments(cls, config: MethodConfig | None = None) -> dict[str, Any]:
        """The official recipe: AdamW, lr 5e-4 per 256 images (linearly scaled to the default batch of 64), cosine
        decay after a warm-up of 10 of 100 epochs, weight decay from 0.04, clipping at 3."""
        return {
            "learning_rate": 5e-4 * 64 / 256,
            "optim": "adamw_torch",
            "weight_decay": 0.04,
            "lr_scheduler_type": "cosine",
            "warmup_steps": 0.1,
            "max_grad_norm": 3.0,
        }
