"""SimMIM: A Simple Framework for Masked Image Modeling.

Xie, Zhang, Cao, Lin, Bao, Yao, Dai, Hu, CVPR 2022 (arXiv:2111.09886). Random square regions of the image are
masked (60 %, in 32 px units); their patch embeddings are replaced by a learnable mask token and the ViT encodes
the whole sequence. A linear head predicts the raw (normalised) pixels of each patch, and the loss is the L1 error
on the masked pixels. Only the encoder is kept: the published backbone is the plain timm ViT; the mask token and the
head live in ``ssl/``.

Masks are drawn at patch granularity: a mask unit of ``mask_patch_size`` pixels covers
``mask_patch_size / patch_size`` patches per side (2 x 2 patches of a /16 ViT at the paper's 32 px), and
``round(mask_ratio * units)`` units are masked. The patch grid must divide into whole units, and the ratio must mask
some units and keep some: with the default 32 px units, images of 32 px have a single unit, so small images need a
smaller ``mask_patch_size`` (e.g. 8 px at 32 px: 16 units of one 8 px patch). Works on timm Vision Transformers
(see :class:`ssl_hub.modules.MaskedVisionTransformer`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ssl_hub._validation import check_positive_int, check_probability
from ssl_hub.losses import SimMIMLoss
from ssl_hub.methods.base import MethodConfig, Paper, SSLMethod, SSLMethodOutput
from ssl_hub.modules import MaskedVisionTransformer, MaskingRNG, num_masked, patchify, random_mask
from ssl_hub.registry import register_method
from ssl_hub.transforms import SimMIMTransform

PAPER = Paper(
    title="SimMIM: A Simple Framework for Masked Image Modeling",
    authors="Zhenda Xie, Zheng Zhang, Yue Cao, Yutong Lin, Jianmin Bao, Zhuliang Yao, Qi Dai, Han Hu",
    year=2021,
    url="https://arxiv.org/abs/2111.09886",
    bibtex="""@inproceedings{xie2022simmim,
  title={SimMIM: A Simple Framework for Masked Image Modeling},
  author={Xie, Zhenda and Zhang, Zheng and Cao, Yue and Lin, Yutong and Bao, Jianmin and Yao, Zhuliang and
          Dai, Qi and Hu, Han},
  booktitle={IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year={2022}
}""",
)


@dataclass
class SimMIMConfig(MethodConfig):
    """SimMIM's hyperparameters (the paper's defaults, section 4.1; ``config.py`` of microsoft/SimMIM).

    Args:
        mask_ratio: Fraction of the mask units masked (0.6).
        mask_patch_size: Side of a mask unit in pixels (32, for 192-224 px images); a multiple of the ViT's patch
            size. Images must hold at least two units (at 32 px use the patch size, e.g. 8).
    """

    mask_ratio: float = 0.6
    mask_patch_size: int = 32

    def validate(self) -> None:
        check_probability("mask_ratio", self.mask_ratio, "SimMIM")
        if self.mask_ratio == 0:
            raise ValueError("SimMIM: mask_ratio must be > 0: the loss covers the masked patches only.")
        check_positive_int("mask_patch_size", self.mask_patch_size, "SimMIM")


@register_method
class SimMIM(SSLMethod):
    """SimMIM around a timm ViT; see :class:`SimMIMConfig` for the hyperparameters.

    ``self.backbone`` is the encoder (published), by the mean of its patch tokens: a ViT given by name is built
    with ``global_pool="avg"``, as the official code fine-tunes it (``USE_MEAN_POOLING``), since the loss reaches
    only the patch tokens and never a timm ViT's class token. The mask token (``self.encoder.mask_token``), the linear
    ``self.prediction_head`` and the mask sequence (``self.mask_rng``) live in ``ssl/``.
    """

    name = "simmim"
    display_name = "SimMIM"
    config_class = SimMIMConfig
    transform_class = SimMIMTransform
    paper = PAPER
    learning_rate_scaling = "linear"
    requires_vit = True
    backbone_defaults: ClassVar[dict[str, Any]] = {"global_pool": "avg"}
    config: SimMIMConfig

    def __init__(self, backbone: str | nn.Module, config: SimMIMConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.encoder = MaskedVisionTransformer(self.backbone, mask_token=True, owner="SimMIM")
        patch_h, patch_w = self.encoder.patch_size
        if cfg.mask_patch_size % patch_h or cfg.mask_patch_size % patch_w:
            raise ValueError(
                f"SimMIM: mask_patch_size ({cfg.mask_patch_size} px) must be a multiple of the backbone's patch size "
                f"{(patch_h, patch_w)}."
            )
        self.mask_unit = (cfg.mask_patch_size // patch_h, cfg.mask_patch_size // patch_w)  # patches per unit side
        # A 1x1 convolution over the token grid in the official code, i.e. one linear map per patch.
        self.prediction_head = nn.Linear(self.encoder.embed_dim, patch_h * patch_w * self.encoder.in_chans)
        self.criterion = SimMIMLoss()
        self.mask_rng = MaskingRNG()

    @classmethod
    def default_training_arguments(cls, config: MethodConfig | None = None) -> dict[str, Any]:
        # The ViT-B recipe (configs/vit_base__800ep): AdamW (0.9, 0.999), weight decay 0.05, base lr 1e-4 per 512
        # images (scaled to the default batch of 64), 10 / 800 warmup epochs, gradient clipping at 5.
        return {
            "learning_rate": 1e-4 * 64 / 512,
            "weight_decay": 0.05,
            "lr_scheduler_type": "cosine",
            "warmup_steps": 10 / 800,
            "max_grad_norm": 5.0,
        }

    def sample_mask(self, batch_size: int, grid_size: tuple[int, int], device: torch.device) -> torch.Tensor:
        """SimMIM's mask on the patch grid: random whole mask units, ``(B, h * w)`` boolean."""
        (height, width), (unit_h, unit_w) = grid_size, self.mask_unit
        if height % unit_h or width % unit_w:
            raise ValueError(
                f"SimMIM: the {height}x{width} patch grid does not divide into mask units of {unit_h}x{unit_w} patches "
                f"(mask_patch_size={self.config.mask_patch_size} px): pick an image size that is a multiple of "
                f"{self.config.mask_patch_size} px, or another mask_patch_size."
            )
        rows, cols = height // unit_h, width // unit_w
        count = num_masked(rows * cols, self.config.mask_ratio)
        if not 0 < count < rows * cols:
            consequence = "the loss would cover nothing" if count == 0 else "the encoder would see no pixels"
            raise ValueError(
                f"SimMIM: mask_ratio {self.config.mask_ratio} masks {count} of the {rows * cols} mask units of "
                f"{self.config.mask_patch_size} px on the {height}x{width} patch grid: {consequence}. It must mask "
                "some and keep some: use a smaller mask_patch_size (down to the patch size; the paper's 32 px is for "
                "192-224 px images) or larger images."
            )
        generator = self.mask_rng.next_generator(device)
        units = random_mask(batch_size, rows * cols, self.config.mask_ratio, generator=generator)  # (B, rows * cols)
        units = units.view(batch_size, rows, cols)
        return units.repeat_interleave(unit_h, dim=1).repeat_interleave(unit_w, dim=2).flatten(1)  # (B, h * w)

    def forward(self, views: Sequence[torch.Tensor]) -> SSLMethodOutput:
        self.check_views(views, count=1)
        images = views[0]  # (B, C, H, W)
        grid = self.encoder.grid_size(images.shape[-2:])
        mask = self.sample_mask(len(images), grid, images.device)  # (B, N)
        tokens = self.encoder(images, mask=mask).patch_tokens  # (B, N, D)
        predictions = self.prediction_head(tokens)  # (B, N, p * p * C)
        target = patchify(images, self.encoder.patch_size)  # (B, N, p * p * C)
        return SSLMethodOutput(loss=self.criterion(predictions, target, mask))
