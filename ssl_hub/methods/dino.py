"""DINO: Emerging Properties in Self-Supervised Vision Transformers.

Caron, Touvron, Misra, Jégou, Mairal, Bojanowski, Joulin, ICCV 2021 (arXiv:2104.14294). Self-distillation with no
labels: a student network (backbone + DINO head) is trained to match, on all crops of an image, the output
distribution a teacher network gives for the two global crops. The teacher is the exponential moving average of the
student; centering and sharpening its outputs prevent collapse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from timm.layers import DropPath
from torch import nn
from transformers import TrainerCallback

from ssl_hub._validation import check_non_negative, check_positive, check_positive_int, check_probability
from ssl_hub.heads.dino import DINOProjectionHead
from ssl_hub.losses.dino import DINOLoss
from ssl_hub.methods.base import MethodConfig, Paper, SSLMethod, SSLMethodOutput
from ssl_hub.modules.collapse import normalized_entropy_of_probabilities
from ssl_hub.modules.ema import ema_copy
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
from ssl_hub.transforms.dino import DINOTransform
from ssl_hub.transforms.multi_crop import local_crop_size

if TYPE_CHECKING:
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from ssl_hub.transforms.multi_view import MultiViewTransform

PAPER = Paper(
    title="Emerging Properties in Self-Supervised Vision Transformers",
    authors="Mathilde Caron, Hugo Touvron, Ishan Misra, Hervé Jégou, Julien Mairal, Piotr Bojanowski, Armand Joulin",
    year=2021,
    url="https://arxiv.org/abs/2104.14294",
    bibtex="""@inproceedings{caron2021dino,
  title={Emerging Properties in Self-Supervised Vision Transformers},
  author={Caron, Mathilde and Touvron, Hugo and Misra, Ishan and J{\\'e}gou, Herv{\\'e} and Mairal, Julien and
    Bojanowski, Piotr and Joulin, Armand},
  booktitle={IEEE/CVF International Conference on Computer Vision (ICCV)},
  year={2021}
}""",
)


@dataclass
class DINOConfig(MethodConfig):
    """DINO's hyperparameters (paper sec. 3 and the official ``main_dino.py``).

    Args:
        projection_hidden_dim: Hidden width of the DINO head's MLP.
        bottleneck_dim: Width of the head's L2-normalised bottleneck.
        output_dim: Number of head outputs ``K``.
        projection_batch_norm: Batch-normalise the head's hidden layers (off in the paper).
        norm_last_layer: Fix the weight-norm magnitude of the head's last layer (official default; the README
            trains ViT-S without it for its best results).
        freeze_last_layer: Epochs at the start during which the head's last layer does not train.
        warmup_teacher_temp: Teacher temperature at the first step.
        teacher_temp: Teacher temperature after the warm-up: 0.04, the official code's default and LightlySSL's, so
            the warm-up is flat; the paper warms up from 0.04 to 0.07 over the first 30 epochs of its 300-epoch ViT
            runs (sec. 3.1): ``teacher_temp=0.07`` with the default warm-up.
        warmup_teacher_temp_epochs: Epochs of the linear teacher temperature warm-up.
        student_temp: Student temperature.
        center_momentum: Momentum of the center of the teacher outputs.
        momentum_start: Teacher EMA momentum at the first step; it rises to ``momentum_end`` on a cosine.
        momentum_end: Teacher EMA momentum at the last step.
        weight_decay_start: Weight decay at the first step; it follows a cosine to ``weight_decay_end``.
        weight_decay_end: Weight decay at the last step.
        views_in_one_pass: Encode the crops of each size as one batch (batch-norm statistics span them, as the
            official code); ``False`` encodes each crop on its own, as LightlySSL's examples do.
    """

    projection_hidden_dim: int = 2048
    bottleneck_dim: int = 256
    output_dim: int = 65536
    projection_batch_norm: bool = False
    norm_last_layer: bool = True
    freeze_last_layer: int = 1
    warmup_teacher_temp: float = 0.04
    teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 30
    student_temp: float = 0.1
    center_momentum: float = 0.9
    momentum_start: float = 0.996
    momentum_end: float = 1.0
    weight_decay_start: float = 0.04
    weight_decay_end: float = 0.4
    views_in_one_pass: bool = True

    def validate(self) -> None:
        for name in ("projection_hidden_dim", "bottleneck_dim", "output_dim"):
            check_positive_int(name, getattr(self, name), "DINO")
        for name in ("freeze_last_layer", "warmup_teacher_temp_epochs"):
            check_positive_int(name, getattr(self, name), "DINO", minimum=0)
        for name in ("warmup_teacher_temp", "teacher_temp", "student_temp"):
            check_positive(name, getattr(self, name), "DINO")
        for name in ("center_momentum", "momentum_start", "momentum_end"):
            check_probability(name, getattr(self, name), "DINO")
        for name in ("weight_decay_start", "weight_decay_end"):
            check_non_negative(name, getattr(self, name), "DINO")


def switch_off_dropout(module: nn.Module) -> None:
    """Set the rate of every dropout and stochastic-depth layer in ``module`` to 0.

    DINO's teacher has no stochastic depth: the official code builds it without the student's ``drop_path_rate``.
    """
    for layer in module.modules():
        if isinstance(layer, DropPath):
            layer.drop_prob = 0.0
        elif isinstance(layer, nn.Dropout):
            layer.p = 0.0


class DINOTeacherTemperatureCallback(TrainerCallback):
    """Before each optimizer step, set DINO's teacher temperature: a linear warm-up, then constant (sec. 3.1).

    The temperature of step ``k`` is ``linear_warmup_schedule(k, W, warmup_teacher_temp, teacher_temp)`` with ``W``
    the steps of ``warmup_teacher_temp_epochs`` epochs of this run.

    Args:
        method: The DINO method whose ``teacher_temperature`` buffer to set.
    """

    def __init__(self, method: DINO) -> None:
        self.method = method

    def temperature(self, step: int, steps_per_epoch: int) -> float:
        config = self.method.config
        warmup_steps = round(config.warmup_teacher_temp_epochs * steps_per_epoch)
        return linear_warmup_schedule(step, warmup_steps, config.warmup_teacher_temp, config.teacher_temp)

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.method.teacher_temperature.fill_(
            self.temperature(
                state.global_step,
                trainer_steps_per_epoch(args, state, kwargs.get("train_dataloader")),
            )
        )


@register_method
class DINO(SSLMethod):
    """DINO around any timm backbone; see :class:`DINOConfig` for the hyperparameters.

    ``views`` are 2 global crops of one size followed by any number of local crops (:class:`DINOTransform`); each size
    group goes through the backbone as one batch (each crop alone with ``views_in_one_pass=False``). The teacher
    (``teacher_backbone`` + ``teacher_head``, an EMA copy of the student without its dropout and stochastic depth) sees
    the global crops only, the student all crops. Timm ViTs built for one size are rebuilt with
    ``dynamic_img_size=True`` so that they take the smaller local crops, and :meth:`make_transform` rounds the local
    crops to a multiple of the backbone's stride (the paper's 96 px at 224 px).

    The step-dependent parts are :meth:`callbacks`: the teacher temperature warm-up, the teacher's momentum (cosine
    from 0.996 to 1), the weight decay (cosine from 0.04 to 0.4, on the parameter groups the Trainer decays: biases
    and LayerNorm weights are not decayed, as in DINO; BatchNorm weights are, unlike DINO) and the head's last
    layer kept frozen for the first epoch. Gradients are clipped at norm 3 (:meth:`default_training_arguments`).

    The published backbone is the **teacher**'s (``published_backbone = "teacher_backbone"``): DINO evaluates the
    teacher, which performs better than the student throughout training (paper sec. 5.2 / fig. 6). The student
    ``backbone`` lives in ``ssl/`` with the heads, the center and the teacher temperature.

    The Trainer's log shows ``teacher_entropy``, the entropy of the centred, sharpened teacher targets over ``ln K``
    (:func:`~ssl_hub.modules.normalized_entropy_of_probabilities`; the paper's ``h(P_t)``, fig. 7). Centering alone
    drives it to 1, uniform targets for every image; sharpening alone to 0, one dimension for every image. At 1 the
    targets carry nothing for the student to learn; just below 1 they carry a weak signal (0.97 through DINO's short
    Fashion-MNIST runs in ``benchmarks/RESULTS.md``, whose loss sat near ``ln K``).
    """

    name = "dino"
    display_name = "DINO"
    config_class = DINOConfig
    transform_class = DINOTransform
    paper = PAPER
    learning_rate_scaling = "linear"
    published_backbone = "teacher_backbone"
    config: DINOConfig
    teacher_temperature: torch.Tensor

    def __init__(self, backbone: str | nn.Module, config: DINOConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.backbone = dynamic_size_backbone(self.backbone)
        self.projection_head = DINOProjectionHead(
            self.feature_dim,
            cfg.projection_hidden_dim,
            cfg.bottleneck_dim,
            cfg.output_dim,
            batch_norm=cfg.projection_batch_norm,
            freeze_last_layer=cfg.freeze_last_layer,
            norm_last_layer=cfg.norm_last_layer,
        )
        self.teacher_backbone = ema_copy(self.backbone)
        switch_off_dropout(self.teacher_backbone)
        self.teacher_head = ema_copy(self.projection_head)
        self.criterion = DINOLoss(
            cfg.output_dim,
            warmup_teacher_temp=cfg.warmup_teacher_temp,
            teacher_temp=cfg.teacher_temp,
            warmup_teacher_temp_epochs=cfg.warmup_teacher_temp_epochs,
            student_temp=cfg.student_temp,
            center_momentum=cfg.center_momentum,
        )
        self.register_buffer("teacher_temperature", torch.tensor(cfg.warmup_teacher_temp))

    def forward(self, views: Sequence[torch.Tensor]) -> SSLMethodOutput:
        check_multi_crop_views(views, type(self).__name__)
        check_input_sizes(self.backbone, views, type(self).__name__)
        one_pass = self.config.views_in_one_pass
        with torch.no_grad():
            teacher_out = multi_crop_forward(lambda x: self.teacher_head(self.teacher_backbone(x)), views[:2], one_pass)
        student_out = multi_crop_forward(lambda x: self.projection_head(self.backbone(x)), views, one_pass)  # (B, K)
        # h(P_t) / ln K of the paper's fig. 7, read before the loss moves the center
        targets = self.criterion.teacher_targets(torch.cat(teacher_out), self.teacher_temperature)  # (2B, K)
        entropy = normalized_entropy_of_probabilities(targets)
        loss = self.criterion(teacher_out, student_out, teacher_temp=self.teacher_temperature)
        return SSLMethodOutput(loss=loss, metrics={"teacher_entropy": entropy})

    def make_transform(self, input_size: int = 224, **kwargs: Any) -> MultiViewTransform:
        """:class:`DINOTransform` with global crops of ``input_size`` px and local crops scaled to them."""
        kwargs.setdefault("local_crop_size", local_crop_size(input_size, crop_size_multiple(self.backbone)))
        return super().make_transform(input_size, **kwargs)

    def callbacks(self) -> list[TrainerCallback]:
        from ssl_hub.training.callbacks import (
            EMAUpdateCallback,
            FreezeParametersCallback,
            WeightDecayScheduleCallback,
        )

        cfg = self.config
        pairs = [(self.backbone, self.teacher_backbone), (self.projection_head, self.teacher_head)]
        callbacks: list[TrainerCallback] = [
            DINOTeacherTemperatureCallback(self),
            EMAUpdateCallback(pairs, cfg.momentum_start, cfg.momentum_end),
            WeightDecayScheduleCallback(cfg.weight_decay_start, cfg.weight_decay_end),
        ]
        if cfg.freeze_last_layer > 0:
            last_layer = list(self.projection_head.last_layer.parameters())
            callbacks.append(FreezeParametersCallback(last_layer, frozen_epochs=cfg.freeze_last_layer))
        return callbacks

    @classmethod
    def default_training_arguments(cls, config: MethodConfig | None = None) -> dict[str, Any]:
        """The official recipe: AdamW, lr 5e-4 per 256 images (linearly scaled to the default batch of 64), cosine
        decay after a warm-up of 10 % of training (10 of 100 epochs), weight decay from 0.04, clipping at 3."""
        return {
            "learning_rate": 5e-4 * 64 / 256,
            "optim": "adamw_torch",
            "weight_decay": 0.04,
            "lr_scheduler_type": "cosine",
            "warmup_steps": 0.1,
            "max_grad_norm": 3.0,
        }
