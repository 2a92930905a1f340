"""AIM: Scalable Pre-training of Large Autoregressive Image Models.

El-Nouby, Klein, Zhai, Bautista, Toshev, Shankar, Susskind, Joulin, ICML 2024 (arXiv:2401.08541). The patches of an
image, in raster order, are modelled autoregressively: the ViT runs with prefix-causal attention (the first ``S``
patches, ``S`` uniform in ``[1, N - 1]``, attend to each other bidirectionally; every later patch only to the
patches before it), an MLP head predicts from each position the pixels of the next patch, and the loss is the mean
squared error on the per-patch normalised pixels of the non-prefix patches. The prefix makes the trunk work with
bidirectional attention afterwards, so the published backbone is the plain timm ViT; the head lives in ``ssl/``.

A 2D sine-cosine position embedding of the patch grid is added to the patches before the trunk and to the trunk's
output before the head, as in the paper (section 3) and its released models: the ViT's own position embedding is
frozen at it (``AIMConfig.fixed_position_embedding``). Class / register tokens of the ViT belong to the
bidirectional prefix. Works on timm Vision Transformers whose blocks take ``attn_mask`` (timm's ``Block`` does; see
:class:`ssl_hub.modules.MaskedVisionTransformer`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ssl_hub._validation import check_positive, check_positive_int
from ssl_hub.heads import AIMPredictionHead
from ssl_hub.losses import MAELoss
from ssl_hub.methods.base import MethodConfig, Paper, SSLMethod, SSLMethodOutput
from ssl_hub.modules import (
    MaskedVisionTransformer,
    MaskingRNG,
    patchify,
    prefix_causal_attention_mask,
    random_prefix_lengths,
    sincos_position_embedding,
)
from ssl_hub.registry import register_method
from ssl_hub.transforms import AIMTransform

PAPER = Paper(
    title="Scalable Pre-training of Large Autoregressive Image Models",
    authors=(
        "Alaaeldin El-Nouby, Michal Klein, Shuangfei Zhai, Miguel Angel Bautista, Alexander Toshev, Vaishaal Shankar, "
        "Joshua M. Susskind, Armand Joulin"
    ),
    year=2024,
    url="https://arxiv.org/abs/2401.08541",
    bibtex="""@inproceedings{elnouby2024aim,
  title={Scalable Pre-training of Large Autoregressive Image Models},
  author={El-Nouby, Alaaeldin and Klein, Michal and Zhai, Shuangfei and Bautista, Miguel Angel and Toshev, Alexander
          and Shankar, Vaishaal and Susskind, Joshua M. and Joulin, Armand},
  booktitle={International Conference on Machine Learning (ICML)},
  year={2024}
}""",
)


@dataclass
class AIMConfig(MethodConfig):
    """AIM's hyperparameters (the paper's defaults, section 3).

    Args:
        head_hidden_dim: Width of the prediction head's blocks (2048).
        head_num_blocks: Residual MLP blocks in the head (12). The defaults make a 404M-parameter head: pass smaller
            values for small trunks.
        head_mlp_ratio: MLP width of the head's blocks over ``head_hidden_dim`` (4).
        min_prefix_length: Shortest prefix, in patches (1).
        max_prefix_length: Longest prefix, in patches; ``None`` for ``N - 1`` (the paper's range).
        norm_pix_loss: Regress per-patch normalised pixels (the paper's target).
        fixed_position_embedding: Freeze the trunk's position embedding at the 2D sine-cosine one of its patch grid
            (zero at a class token), as the paper's trunk. ``False`` trains the ViT's own, e.g. to continue from a ViT
            whose position embedding was learned.
    """

    head_hidden_dim: int = 2048
    head_num_blocks: int = 12
    head_mlp_ratio: float = 4.0
    min_prefix_length: int = 1
    max_prefix_length: int | None = None
    norm_pix_loss: bool = True
    fixed_position_embedding: bool = True

    def validate(self) -> None:
        check_positive_int("head_hidden_dim", self.head_hidden_dim, "AIM")
        check_positive_int("head_num_blocks", self.head_num_blocks, "AIM", minimum=0)
        check_positive("head_mlp_ratio", self.head_mlp_ratio, "AIM")
        check_positive_int("min_prefix_length", self.min_prefix_length, "AIM", minimum=0)
        if self.max_prefix_length is not None:
            check_positive_int("max_prefix_length", self.max_prefix_length, "AIM", minimum=self.min_prefix_length)


@register_method
class AIM(SSLMethod):
    """AIM around a timm ViT; see :class:`AIMConfig` for the hyperparameters.

    ``self.backbone`` is the trunk (published), by the mean of its patch tokens: a ViT given by name is built with
    ``global_pool="avg"`` (AIM's ViT has no class token and the paper probes the patch tokens; a timm ViT's class
    token receives no loss here). ``self.prediction_head`` and the prefix sequence (``self.mask_rng``) live in
    ``ssl/``.
    """

    name = "aim"
    display_name = "AIM"
    config_class = AIMConfig
    transform_class = AIMTransform
    paper = PAPER
    learning_rate_scaling = "linear"
    requires_vit = True
    backbone_defaults: ClassVar[dict[str, Any]] = {"global_pool": "avg"}
    config: AIMConfig

    def __init__(self, backbone: str | nn.Module, config: AIMConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.encoder = MaskedVisionTransformer(self.backbone, owner="AIM")
        if self.encoder.embed_dim % 4:
            raise ValueError(
                f"AIM adds a 2D sine-cosine position embedding to the trunk's tokens, which needs a width that is a "
                f"multiple of 4; this ViT's is {self.encoder.embed_dim}."
            )
        self.prediction_head = AIMPredictionHead(
            input_dim=self.encoder.embed_dim,
            output_dim=math.prod(self.encoder.patch_size) * self.encoder.in_chans,
            hidden_dim=cfg.head_hidden_dim,
            num_blocks=cfg.head_num_blocks,
            mlp_ratio=cfg.head_mlp_ratio,
        )
        self.criterion = MAELoss(norm_pix_loss=cfg.norm_pix_loss)
        self.mask_rng = MaskingRNG()
        self.fix_position_embeddings()

    @classmethod
    def default_training_arguments(cls, config: MethodConfig | None = None) -> dict[str, Any]:
        # LightlySSL's AIM benchmark after the paper: AdamW (0.9, 0.95), weight decay 0.05, lr 1e-3 per 4096 images
        # (scaled to the default batch of 64), cosine decay, gradient clipping at 1.
        return {
            "learning_rate": 1e-3 * 64 / 4096,
            "weight_decay": 0.05,
            "adam_beta2": 0.95,
            "lr_scheduler_type": "cosine",
            "warmup_steps": 0.05,
            "max_grad_norm": 1.0,
        }

    def forward(self, views: Sequence[torch.Tensor]) -> SSLMethodOutput:
        self.check_views(views, count=1)
        images = views[0]  # (B, C, H, W)
        grid = self.encoder.grid_size(images.shape[-2:])
        num_patches = grid[0] * grid[1]
        max_prefix = num_patches - 1 if self.config.max_prefix_length is None else self.config.max_prefix_length
        if not self.config.min_prefix_length <= max_prefix < num_patches:
            raise ValueError(
                f"AIM: prefixes of {self.config.min_prefix_length} to {max_prefix} patches leave no patch to predict "
                f"in the {num_patches} patches of {tuple(images.shape[-2:])} px images (at least one must follow "
                "the prefix): use larger images or a smaller max_prefix_length."
            )
        generator = self.mask_rng.next_generator(images.device)
        prefix = random_prefix_lengths(
            len(images),
            num_patches,
            min_length=self.config.min_prefix_length,
            max_length=max_prefix,
            generator=generator,
        )  # (B,)
        attn_mask = prefix_causal_attention_mask(prefix, num_patches, self.encoder.num_prefix_tokens)  # (B, 1, L, L)
        tokens = self.encoder(images, attn_mask=attn_mask).patch_tokens  # (B, N, D)
        position = sincos_position_embedding(grid, tokens.shape[-1], device=tokens.device, dtype=tokens.dtype)
        predictions = self.prediction_head(tokens + position)  # (B, N, p * p * C)
        target = patchify(images, self.encoder.patch_size)  # (B, N, p * p * C)
        # The token at position k predicts patch k + 1; the loss covers the patches after the prefix.
        predicted = torch.arange(1, num_patches, device=images.device) >= prefix[:, None]  # (B, N - 1)
        return SSLMethodOutput(loss=self.criterion(predictions[:, :-1], target[:, 1:], predicted))
