"""DINOv2: Learning Robust Visual Features without Supervision.

Oquab, Darcet, Moutakanni, Vo, Szafraniec, Khalidov, Fernandez, Haziza, Massa, El-Nouby, Assran, Ballas, Galuba,
Howes, Huang, Li, Misra, Rabbat, Sharma, Synnaeve, Xu, Jegou, Mairal, Labatut, Joulin, Bojanowski, 2023
(arXiv:2304.07193). DINO's class-token self-distillation and iBOT's masked-patch self-distillation, with the
teacher's centering replaced by Sinkhorn-Knopp normalisation and a KoLeo regulariser spreading the student's class
tokens over the sphere (section 4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ssl_hub._validation import check_non_negative, check_one_of, check_positive_int
from ssl_hub.losses.dino import DINOLoss
from ssl_hub.losses.ibot import IBOTPatchLoss
from ssl_hub.losses.koleo import KoLeoLoss
from ssl_hub.losses.sinkhorn_dino import SinkhornDINOLoss
from ssl_hub.methods.base import MethodConfig, Paper, SSLMethodOutput
from ssl_hub.methods.ibot import IBOT, IBOTConfig
from ssl_hub.registry import register_method
from ssl_hub.transforms.dino import DINOTransform

if TYPE_CHECKING:
    from torch import nn

    from ssl_hub.transforms.multi_view import MultiViewTransform

PAPER = Paper(
    title="DINOv2: Learning Robust Visual Features without Supervision",
    authors="Maxime Oquab, Timothée Darcet, Théo Moutakanni, Huy Vo, Marc Szafraniec, Vasil Khalidov, Pierre "
    "Fernandez, Daniel Haziza, Francisco Massa, Alaaeldin El-Nouby, Mahmoud Assran, Nicolas Ballas, Wojciech Galuba, "
    "Russell Howes, Po-Yao Huang, Shang-Wen Li, Ishan Misra, Michael Rabbat, Vasu Sharma, Gabriel Synnaeve, Hu Xu, "
    "Hervé Jegou, Julien Mairal, Patrick Labatut, Armand Joulin, Piotr Bojanowski",
    year=2023,
    url="https://arxiv.org/abs/2304.07193",
    bibtex="""@article{oquab2023dinov2,
  title={{DINOv2}: Learning Robust Visual Features without Supervision},
  author={Oquab, Maxime and Darcet, Timoth{\\'e}e and Moutakanni, Th{\\'e}o and Vo, Huy and Szafraniec, Marc and
    Khalidov, Vasil and Fernandez, Pierre and Haziza, Daniel and Massa, Francisco and El-Nouby, Alaaeldin and
    Assran, Mahmoud and Ballas, Nicolas and Galuba, Wojciech and Howes, Russell and Huang, Po-Yao and Li, Shang-Wen
    and Misra, Ishan and Rabbat, Michael and Sharma, Vasu and Synnaeve, Gabriel and Xu, Hu and Jegou, Herv{\\'e} and
    Mairal, Julien and Labatut, Patrick and Joulin, Armand and Bojanowski, Piotr},
  journal={Transactions on Machine Learning Research (TMLR)},
  year={2024}
}""",
)

CENTERINGS = ("sinkhorn_knopp", "centering")
# DINOv2's crops (ssl_default_config.yaml): 2 global crops of 32-100 %, 8 local crops of 5-32 % of the image.
GLOBAL_CROP_SCALE = (0.32, 1.0)
LOCAL_CROP_SCALE = (0.05, 0.32)
N_LOCAL_VIEWS = 8


@dataclass
class DINOv2Config(IBOTConfig):
    """DINOv2's hyperparameters: :class:`~ssl_hub.methods.ibot.IBOTConfig`'s with DINOv2's values (the official
    ``ssl_default_config.yaml``; Sinkhorn-Knopp as in its ViT-L/14 and ViT-g/14 configs), and:

    Args:
        centering: ``"sinkhorn_knopp"`` (section 4: 3 Sinkhorn-Knopp iterations on the teacher outputs of the
            global batch) or ``"centering"`` (DINO's / iBOT's center with softmax).
        sinkhorn_iterations: Sinkhorn-Knopp iterations (3).
        koleo_loss_weight: Weight of the KoLeo regulariser on the student's class tokens, summed over the two
            global crops (0.1).

    The differing defaults: 65536 head outputs for both tokens, the heads' last-layer magnitude trained
    (``norm_last_layer=False``: DINOv2's head fills it with 1 and trains it), one teacher temperature schedule
    (0.04 -> 0.07 over 30 epochs) for both tokens, half of the global crops masked at ratios spread evenly over
    [0.1, 0.5], rectangles of at least 4 patches, teacher momentum from 0.992.
    """

    output_dim: int = 65536
    patch_output_dim: int = 65536
    norm_last_layer: bool = False
    mask_min_block_patches: int | None = 4
    momentum_start: float = 0.992
    centering: str = "sinkhorn_knopp"
    sinkhorn_iterations: int = 3
    koleo_loss_weight: float = 0.1

    def validate(self) -> None:
        super().validate()
        check_one_of("centering", self.centering, CENTERINGS, "DINOv2")
        check_positive_int("sinkhorn_iterations", self.sinkhorn_iterations, "DINOv2")
        check_non_negative("koleo_loss_weight", self.koleo_loss_weight, "DINOv2")

    def owner(self) -> str:
        return "DINOv2"


@register_method
class DINOv2(IBOT):
    """DINOv2 around a timm ViT; see :class:`DINOv2Config` for the hyperparameters.

    :class:`~ssl_hub.methods.ibot.IBOT`'s networks, views and schedules, with:

    - Sinkhorn-Knopp normalisation of the teacher outputs instead of centering, for the class token
      (:class:`~ssl_hub.losses.SinkhornDINOLoss`) and the masked patches (:class:`~ssl_hub.losses.IBOTPatchLoss`,
      ``center_mode="sinkhorn_knopp"``), each over the global batch;
    - the KoLeo regulariser (:class:`~ssl_hub.losses.KoLeoLoss`) on the student backbone's pooled features of each
      global crop, weighted 0.1;
    - DINOv2's masking: exactly half of the ``2B`` global crops are masked, at ratios drawn from ``2B / 2`` even
      strata of [0.1, 0.5], in random order (official ``collate_data_and_cast``);
    - DINOv2's crops (:class:`DINOTransform` with 32-100 % global and 8 local crops of 5-32 %) and recipe
      (:meth:`default_training_arguments`).

    What it leaves out: the official code's layer-wise learning-rate decay (0.9), the patch embedding's reduced
    learning rate (0.2x), LayerScale and uniform stochastic depth (timm arguments of the backbone:
    ``backbone_kwargs={"init_values": 1e-5, "drop_path_rate": 0.3}``), and the large-scale machinery (FSDP,
    xFormers, the curated LVD-142M data, the high-resolution adaptation phase). Register tokens are used only
    when the timm backbone has them (e.g. ``vit_small_patch14_reg4_dinov2``). The published backbone is the
    teacher's.

    The Trainer's log shows ``loss_cls``, ``loss_patch``, ``loss_koleo`` and ``teacher_entropy``, the entropy over
    ``ln K`` of the class token's Sinkhorn-Knopp targets, computed once more for the metric.
    """

    name = "dinov2"
    display_name = "DINOv2"
    config_class = DINOv2Config
    transform_class = DINOTransform
    paper = PAPER
    learning_rate_scaling = "sqrt"
    config: DINOv2Config

    def __init__(self, backbone: str | nn.Module, config: DINOv2Config | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        self.koleo = KoLeoLoss()

    def build_criteria(self) -> tuple[DINOLoss | SinkhornDINOLoss, IBOTPatchLoss]:
        cfg = self.config
        patch_dim = cfg.patch_output_dim if cfg.separate_head else cfg.output_dim
        if cfg.centering == "sinkhorn_knopp":
            return (
                SinkhornDINOLoss(student_temp=cfg.student_temp, sinkhorn_iterations=cfg.sinkhorn_iterations),
                IBOTPatchLoss(
                    patch_dim,
                    student_temp=cfg.student_temp,
                    center_mode="sinkhorn_knopp",
                    sinkhorn_iterations=cfg.sinkhorn_iterations,
                ),
            )
        return super().build_criteria()

    def mask_ratios(self, num_images: int, generator: torch.Generator) -> list[float]:
        """``int(num_images * mask_probability)`` crops masked at ratios drawn from even strata of
        [``mask_ratio_min``, ``mask_ratio_max``], the others unmasked, in random order (official collate)."""
        cfg = self.config
        num_masked = int(num_images * cfg.mask_probability)
        edges = torch.linspace(cfg.mask_ratio_min, cfg.mask_ratio_max, num_masked + 1)  # (num_masked + 1,)
        strata = edges[:-1] + (edges[1:] - edges[:-1]) * torch.rand(num_masked, generator=generator)
        ratios = torch.cat([strata, torch.zeros(num_images - num_masked)])  # (2B,)
        return ratios[torch.randperm(num_images, generator=generator)].tolist()

    def forward(self, views: Sequence[torch.Tensor]) -> SSLMethodOutput:
        distillation = self.distillation_loss(views)
        koleo = sum(self.koleo(features) for features in distillation.student_global_features.chunk(2))
        terms = {**distillation.terms, "koleo": self.config.koleo_loss_weight * koleo}
        return SSLMethodOutput.from_terms(terms, teacher_entropy=distillation.teacher_entropy)

    def make_transform(self, input_size: int = 224, **kwargs: Any) -> MultiViewTransform:
        """:class:`DINOTransform` with DINOv2's crops: global crops of ``input_size`` px and 32-100 % of the image,
        8 local crops of 5-32 % scaled to them."""
        kwargs.setdefault("global_crop_scale", GLOBAL_CROP_SCALE)
        kwargs.setdefault("local_crop_scale", LOCAL_CROP_SCALE)
        kwargs.setdefault("n_local_views", N_LOCAL_VIEWS)
        return super().make_transform(input_size, **kwargs)

    @classmethod
    def default_training_arguments(cls, config: MethodConfig | None = None) -> dict[str, Any]:
        """The official recipe: AdamW, base lr 4e-3 at batch 1024 scaled by the square root of the batch ratio
        (``sqrt_wrt_1024``, to the default batch of 64), cosine decay after a warm-up of 10 of 100 epochs, weight
        decay from 0.04, clipping at 3."""
        return {
            "learning_rate": 4e-3 * math.sqrt(64 / 1024),
            "optim": "adamw_torch",
            "weight_decay": 0.04,
            "lr_scheduler_type": "cosine",
            "warmup_steps": 0.1,
            "max_grad_norm": 3.0,
        }
