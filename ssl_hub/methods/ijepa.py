"""I-JEPA: Self-Supervised Learning from Images with a Joint-Embedding Predictive Architecture.

Assran, Duval, Misra, Bojanowski, Vincent, Rabbat, LeCun, Ballas, CVPR 2023 (arXiv:2301.08243). From one large
context block of an image, a narrow ViT predictor predicts the representations that an EMA target encoder gives to
several target blocks of the same image, which the context does not contain. Prediction happens in representation
space, with no pixel reconstruction and no hand-crafted view augmentation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, cast

import torch
from timm.layers import LayerNorm
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from ssl_hub._validation import check_non_negative, check_one_of, check_positive, check_positive_int, check_probability
from ssl_hub.losses.ijepa import LOSS_TYPES, IJEPALoss
from ssl_hub.methods.base import MethodConfig, Paper, SSLMethod, SSLMethodOutput
from ssl_hub.methods.dino import switch_off_dropout
from ssl_hub.modules.ema import ema_copy
from ssl_hub.modules.masked_vit import MaskedVisionTransformer, sincos_position_embedding
from ssl_hub.modules.masking import MaskingRNG
from ssl_hub.modules.multi_block_mask import MultiBlockMask, multi_block_mask
from ssl_hub.registry import register_method
from ssl_hub.transforms.ijepa import IJEPATransform

if TYPE_CHECKING:
    from transformers import TrainerCallback

PAPER = Paper(
    title="Self-Supervised Learning from Images with a Joint-Embedding Predictive Architecture",
    authors="Mahmoud Assran, Quentin Duval, Ishan Misra, Piotr Bojanowski, Pascal Vincent, Michael Rabbat, "
    "Yann LeCun, Nicolas Ballas",
    year=2023,
    url="https://arxiv.org/abs/2301.08243",
    bibtex="""@inproceedings{assran2023ijepa,
  title={Self-Supervised Learning from Images with a Joint-Embedding Predictive Architecture},
  author={Assran, Mahmoud and Duval, Quentin and Misra, Ishan and Bojanowski, Piotr and Vincent, Pascal and
    Rabbat, Michael and LeCun, Yann and Ballas, Nicolas},
  booktitle={IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year={2023}
}""",
)


@dataclass
class IJEPAConfig(MethodConfig):
    """I-JEPA's hyperparameters (paper section 3 / appendix A and the official ``configs/in1k_vith14_ep300.yaml``).

    Args:
        predictor_dim: Width of the predictor (384).
        predictor_depth: Transformer blocks in the predictor (12 in every released config; the official
            ``init_model`` defaults to 6).
        predictor_num_heads: Attention heads of the predictor; ``None`` for the encoder's (as the official code).
        predictor_mlp_ratio: MLP width of the predictor blocks over ``predictor_dim`` (4).
        num_targets: Target blocks per image (4).
        target_scale_min: Smallest target block, as a fraction of the patches (0.15) ...
        target_scale_max: ... and largest (0.2).
        target_aspect_ratio_min: Smallest height / width of a target block (0.75) ...
        target_aspect_ratio_max: ... and largest (1.5).
        context_scale_min: Smallest context block, as a fraction of the patches (0.85) ...
        context_scale_max: ... and largest (1.0); the context block is square.
        min_context_patches: Context patches to keep at least, where the patch grid allows (the official
            ``min_keep``, 10).
        loss_type: ``"smooth_l1"`` (official code) or ``"l2"`` (the paper's eq. 1) between the predictions and the
            layer-normalised target features.
        momentum_start: EMA momentum of the target encoder at the first step (0.996) ...
        momentum_end: ... rising linearly to this at the last step (1).
        weight_decay_start: Weight decay at the first step (0.04) ...
        weight_decay_end: ... following a cosine to this at the last step (0.4).
        fixed_position_embedding: Freeze the encoders' position embedding at the 2D sine-cosine one of their patch
            grid (zero at a class token), as the official ViT (``pos_embed``, ``requires_grad=False``).
            ``False`` trains the ViT's own, e.g. to continue from a ViT whose position embedding was learned.
    """

    predictor_dim: int = 384
    predictor_depth: int = 12
    predictor_num_heads: int | None = None
    predictor_mlp_ratio: float = 4.0
    num_targets: int = 4
    target_scale_min: float = 0.15
    target_scale_max: float = 0.2
    target_aspect_ratio_min: float = 0.75
    target_aspect_ratio_max: float = 1.5
    context_scale_min: float = 0.85
    context_scale_max: float = 1.0
    min_context_patches: int = 10
    loss_type: str = "smooth_l1"
    momentum_start: float = 0.996
    momentum_end: float = 1.0
    weight_decay_start: float = 0.04
    weight_decay_end: float = 0.4
    fixed_position_embedding: bool = True

    def validate(self) -> None:
        for name in ("predictor_dim", "predictor_depth", "num_targets", "min_context_patches"):
            check_positive_int(name, getattr(self, name), "I-JEPA")
        if self.predictor_num_heads is not None:
            check_positive_int("predictor_num_heads", self.predictor_num_heads, "I-JEPA")
        check_positive("predictor_mlp_ratio", self.predictor_mlp_ratio, "I-JEPA")
        for low, high in [
            ("target_scale_min", "target_scale_max"),
            ("context_scale_min", "context_scale_max"),
            ("target_aspect_ratio_min", "target_aspect_ratio_max"),
        ]:
            check_positive(low, getattr(self, low), "I-JEPA")
            if getattr(self, low) > getattr(self, high):
                raise ValueError(
                    f"I-JEPA: {low} ({getattr(self, low)}) must not exceed {high} ({getattr(self, high)})."
                )
        for name in ("target_scale_max", "context_scale_max"):
            check_probability(name, getattr(self, name), "I-JEPA")
        check_one_of("loss_type", self.loss_type, LOSS_TYPES, "I-JEPA")
        for name in ("momentum_start", "momentum_end"):
            check_probability(name, getattr(self, name), "I-JEPA")
        for name in ("weight_decay_start", "weight_decay_end"):
            check_non_negative(name, getattr(self, name), "I-JEPA")


def _init_weights(module: nn.Module) -> None:
    """The official initialisation: truncated-normal (std 0.02) linear weights with zero bias, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02, a=-2.0, b=2.0)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class IJEPAPredictor(nn.Module):
    """I-JEPA's predictor: a narrow ViT of timm ``Block``s that predicts target-block features from the context.

    The context tokens are embedded to the predictor's width and given the (fixed, 2D sine-cosine) position
    embedding of their grid positions; for each target block, one learnable mask token per target patch, plus that
    patch's position embedding, is appended, and the blocks run on the context and that block's mask tokens. The
    outputs at the mask tokens are projected back to the encoder's width (official ``VisionTransformerPredictor``).
    Prefix tokens of the context (class / register tokens of timm ViTs, which I-JEPA's ViT lacks) take part
    without position embedding.

    Args:
        input_dim: Width of the encoder's tokens.
        num_prefix_tokens: Prefix tokens before the patches in the encoder's output.
        dim: Predictor width (384).
        depth: Predictor blocks.
        num_heads: Attention heads per block.
        mlp_ratio: MLP width over ``dim``.
    """

    def __init__(
        self,
        input_dim: int,
        num_prefix_tokens: int,
        dim: int = 384,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if dim % num_heads or dim % 4:
            raise ValueError(
                f"IJEPAPredictor: its width ({dim}) must be a multiple of 4 (2D sine-cosine position embedding) and "
                f"of its number of heads ({num_heads}); set predictor_dim or predictor_num_heads."
            )
        self.num_prefix_tokens = num_prefix_tokens
        self.embed = nn.Linear(input_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        blocks = [Block(dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=LayerNorm) for _ in range(depth)]
        self.blocks = nn.Sequential(*blocks)
        self.norm = LayerNorm(dim)
        self.projection = nn.Linear(dim, input_dim)
        self.apply(_init_weights)
        nn.init.trunc_normal_(self.mask_token, std=0.02, a=-2.0, b=2.0)
        with torch.no_grad():  # the official fix_init_weight: residual branches scaled by 1 / sqrt(2 * layer)
            for layer, block in enumerate(blocks, start=1):
                cast(nn.Linear, block.attn.proj).weight.div_(math.sqrt(2.0 * layer))
                cast(nn.Linear, block.mlp.fc2).weight.div_(math.sqrt(2.0 * layer))

    def forward(
        self, tokens: torch.Tensor, context: torch.Tensor, targets: torch.Tensor, grid_size: tuple[int, int]
    ) -> torch.Tensor:
        """Predict the target blocks' features.

        Args:
            tokens: ``(B, P + K, D_enc)`` context encoder output: prefix tokens, then the context patches.
            context: ``(B, K)`` grid positions of the context patches.
            targets: ``(B, T, M)`` grid positions of the target blocks' patches.
            grid_size: Patch grid ``(h, w)``.

        Returns:
            ``(B, T, M, D_enc)``.
        """
        x = self.embed(tokens)  # (B, P + K, D)
        batch, num_targets, block_size = targets.shape
        dim, prefix = x.shape[-1], self.num_prefix_tokens
        position = sincos_position_embedding(grid_size, dim, device=x.device, dtype=x.dtype)  # (N, D)
        x = torch.cat([x[:, :prefix], x[:, prefix:] + position[context]], dim=1)  # (B, P + K, D)
        queries = self.mask_token.to(x.dtype) + position[targets]  # (B, T, M, D)
        x = x.unsqueeze(1).expand(-1, num_targets, -1, -1)  # (B, T, P + K, D)
        x = torch.cat([x, queries], dim=2).flatten(0, 1)  # (B * T, P + K + M, D): one sequence per target block
        x = self.norm(self.blocks(x))[:, -block_size:]  # (B * T, M, D)
        return self.projection(x).view(batch, num_targets, block_size, -1)  # (B, T, M, D_enc)


@register_method
class IJEPA(SSLMethod):
    """I-JEPA around a timm ViT; see :class:`IJEPAConfig` for the hyperparameters.

    One view per image (:class:`IJEPATransform`). Each step draws the blocks (:func:`~ssl_hub.modules.
    multi_block_mask`) from ``self.mask_rng``; the context encoder (``backbone``) encodes only the context
    patches, the predictor predicts each target block, and the target encoder (``teacher_backbone``, an EMA copy
    without dropout or stochastic depth) encodes the whole image, whose output tokens at the target patches,
    layer-normalised, are the targets (:class:`~ssl_hub.losses.IJEPALoss`).

    The step-dependent parts are :meth:`callbacks`: the target encoder's momentum (linear from 0.996 to 1) and the
    weight decay (cosine from 0.04 to 0.4).

    The published backbone is the **target** encoder (``published_backbone = "teacher_backbone"``), which the
    paper evaluates, by the mean of its patch tokens: a ViT given by name is built with ``global_pool="avg"``
    (I-JEPA's ViT has no class token; a timm ViT's class token receives no loss here). As in the official ViT, its
    position embedding is the fixed 2D sine-cosine one (:attr:`IJEPAConfig.fixed_position_embedding`) and its blocks'
    output projections start scaled down by depth (timm's ``fix_init``). The context encoder ``backbone``, the
    predictor and the mask sequence live in ``ssl/``.
    """

    name = "ijepa"
    display_name = "I-JEPA"
    config_class = IJEPAConfig
    transform_class = IJEPATransform
    paper = PAPER
    learning_rate_scaling = "linear"
    requires_vit = True
    published_backbone = "teacher_backbone"
    # The mean patch token (above); the official ViT's initialisation: timm's truncated normal (std 0.02) with each
    # block's output projections divided by sqrt(2 * depth index), timm's fix_init.
    backbone_defaults: ClassVar[dict[str, Any]] = {"global_pool": "avg", "fix_init": True}
    config: IJEPAConfig

    def __init__(self, backbone: str | nn.Module, config: IJEPAConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.encoder = MaskedVisionTransformer(self.backbone, owner=self.display_name)
        self.fix_position_embeddings()  # before the target encoder copies it
        num_heads = cfg.predictor_num_heads or int(cast(Any, self.encoder.vit.blocks[0]).attn.num_heads)
        self.predictor = IJEPAPredictor(
            input_dim=self.encoder.embed_dim,
            num_prefix_tokens=self.encoder.num_prefix_tokens,
            dim=cfg.predictor_dim,
            depth=cfg.predictor_depth,
            num_heads=num_heads,
            mlp_ratio=cfg.predictor_mlp_ratio,
        )
        self.teacher_backbone = ema_copy(self.backbone)
        switch_off_dropout(self.teacher_backbone)
        self.criterion = IJEPALoss(loss_type=cfg.loss_type)
        self.mask_rng = MaskingRNG()

    def sample_blocks(self, batch_size: int, grid_size: tuple[int, int], device: torch.device) -> MultiBlockMask:
        """This step's context and target blocks (drawn on the CPU from ``self.mask_rng``)."""
        cfg = self.config
        return multi_block_mask(
            batch_size,
            grid_size,
            num_targets=cfg.num_targets,
            target_scale=(cfg.target_scale_min, cfg.target_scale_max),
            target_aspect_ratio=(cfg.target_aspect_ratio_min, cfg.target_aspect_ratio_max),
            context_scale=(cfg.context_scale_min, cfg.context_scale_max),
            min_context_patches=cfg.min_context_patches,
            generator=self.mask_rng.next_generator(),
            device=device,
        )

    def forward(self, views: Sequence[torch.Tensor]) -> SSLMethodOutput:
        self.check_views(views, count=1)
        images = views[0]  # (B, C, H, W)
        grid = self.encoder.grid_size(images.shape[-2:])
        blocks = self.sample_blocks(len(images), grid, images.device)
        batch, num_targets, block_size = blocks.targets.shape
        with torch.no_grad():
            teacher = cast(VisionTransformer, self.teacher_backbone)
            tokens = teacher.forward_features(images)[:, self.encoder.num_prefix_tokens :]  # (B, N, D)
            index = blocks.targets.flatten(1).unsqueeze(-1).expand(-1, -1, tokens.shape[-1])  # (B, T * M, D)
            targets = tokens.gather(1, index).view(batch, num_targets, block_size, -1)  # (B, T, M, D)
        context = self.encoder(images, keep=blocks.context)  # tokens (B, P + K, D)
        predictions = self.predictor(context.tokens, blocks.context, blocks.targets, grid)  # (B, T, M, D)
        return SSLMethodOutput(loss=self.criterion(predictions, targets))

    def callbacks(self) -> list[TrainerCallback]:
        from ssl_hub.training.callbacks import LinearEMAUpdateCallback, WeightDecayScheduleCallback

        cfg = self.config
        return [
            LinearEMAUpdateCallback([(self.backbone, self.teacher_backbone)], cfg.momentum_start, cfg.momentum_end),
            WeightDecayScheduleCallback(cfg.weight_decay_start, cfg.weight_decay_end),
        ]

    @classmethod
    def default_training_arguments(cls, config: MethodConfig | None = None) -> dict[str, Any]:
        """The official recipe (ViT-H/14, 300 epochs): AdamW, lr 1e-3 at batch 2048 (linearly scaled to the default
        batch of 64), cosine decay after a 40-epoch warm-up, weight decay from 0.04, no clipping."""
        return {
            "learning_rate": 1e-3 * 64 / 2048,
            "optim": "adamw_torch",
            "weight_decay": 0.04,
            "lr_scheduler_type": "cosine",
            "warmup_steps": 40 / 300,
            "max_grad_norm": 0.0,
        }
