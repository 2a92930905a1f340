"""MAE: Masked Autoencoders Are Scalable Vision Learners.

He, Chen, Xie, Li, Dollár, Girshick, CVPR 2022 (arXiv:2111.06377). A random 75 % of the patches is dropped; the ViT
encoder sees only the visible ones, and a lightweight Transformer decoder reconstructs the pixels of the masked
patches from the encoded visible patches and a shared mask token. The loss is the mean squared error on the
(per-patch normalised) pixels of the masked patches. Only the encoder is kept: the published backbone is the plain
timm ViT; the decoder lives in ``ssl/``.

Works on timm Vision Transformers (see :class:`ssl_hub.modules.MaskedVisionTransformer`). A ViT given by name is
initialised as MAE initialises its encoder, "xavier_uniform ... following ViT's official code" (appendix A.1): timm's
``weight_init="jax"``, that code's scheme. Its position embedding is frozen at MAE's 2D sine-cosine one
(``MAEConfig.fixed_position_embedding``). Differences from the official code (facebookresearch/mae): its class
token starts at std 1e-6 (MAE: 0.02) and its patch embedding LeCun-normal (MAE: Xavier over the flattened kernel),
and register / distillation tokens pass through the decoder as MAE's class token does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from timm.layers import LayerNorm
from timm.models.vision_transformer import Block
from torch import nn

from ssl_hub._validation import check_positive, check_positive_int, check_probability
from ssl_hub.losses import MAELoss
from ssl_hub.methods.base import MethodConfig, Paper, SSLMethod, SSLMethodOutput
from ssl_hub.modules import (
    MaskedVisionTransformer,
    MaskingRNG,
    mask_to_indices,
    num_masked,
    patchify,
    random_mask,
    sincos_position_embedding,
)
from ssl_hub.registry import register_method
from ssl_hub.transforms import MAETransform

PAPER = Paper(
    title="Masked Autoencoders Are Scalable Vision Learners",
    authors="Kaiming He, Xinlei Chen, Saining Xie, Yanghao Li, Piotr Dollár, Ross Girshick",
    year=2021,
    url="https://arxiv.org/abs/2111.06377",
    bibtex="""@inproceedings{he2022mae,
  title={Masked Autoencoders Are Scalable Vision Learners},
  author={He, Kaiming and Chen, Xinlei and Xie, Saining and Li, Yanghao and Doll{\\'a}r, Piotr and Girshick, Ross},
  booktitle={IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year={2022}
}""",
)


@dataclass
class MAEConfig(MethodConfig):
    """MAE's hyperparameters (the paper's defaults, section 4 / table 1; ``models_mae.py``).

    Args:
        mask_ratio: Fraction of the patches dropped (75 %).
        decoder_dim: Width of the decoder (512).
        decoder_depth: Transformer blocks in the decoder (8).
        decoder_num_heads: Attention heads of the decoder (16).
        decoder_mlp_ratio: MLP width of the decoder blocks over ``decoder_dim`` (4).
        norm_pix_loss: Regress per-patch normalised pixels (the paper's best target, table 1d).
        fixed_position_embedding: Freeze the encoder's position embedding at the 2D sine-cosine one of its patch grid
            (zero at the class token), as MAE's encoder (``pos_embed``, ``requires_grad=False`` in ``models_mae.py``).
            ``False`` trains the ViT's own, e.g. to continue from a ViT whose position embedding was learned.
    """

    mask_ratio: float = 0.75
    decoder_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    decoder_mlp_ratio: float = 4.0
    norm_pix_loss: bool = True
    fixed_position_embedding: bool = True

    def validate(self) -> None:
        check_probability("mask_ratio", self.mask_ratio, "MAE")
        if not 0 < self.mask_ratio < 1:
            raise ValueError(f"MAE: mask_ratio must be strictly between 0 and 1, got {self.mask_ratio}.")
        check_positive_int("decoder_depth", self.decoder_depth, "MAE")
        check_positive_int("decoder_num_heads", self.decoder_num_heads, "MAE")
        check_positive_int("decoder_dim", self.decoder_dim, "MAE")
        if self.decoder_dim % 4 or self.decoder_dim % self.decoder_num_heads:
            raise ValueError(
                f"MAE: decoder_dim ({self.decoder_dim}) must be a multiple of 4 (its 2D sine-cosine position "
                f"embedding) and of decoder_num_heads ({self.decoder_num_heads})."
            )
        check_positive("decoder_mlp_ratio", self.decoder_mlp_ratio, "MAE")


def _init_weights(module: nn.Module) -> None:
    """MAE's initialisation of the decoder: Xavier-uniform linear layers with zero bias, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class MAEDecoder(nn.Module):
    """MAE's decoder: embeds the encoded tokens, puts the mask token at every dropped patch, adds a fixed 2D
    sine-cosine position embedding (of the current patch grid), runs timm ``Block``s and predicts each patch's pixels.

    Prefix tokens (class / register tokens) go through the decoder without position embedding, as MAE's class token.

    Args:
        input_dim: Width of the encoder's tokens.
        output_dim: Pixels per patch (``p * p * C``).
        num_prefix_tokens: Prefix tokens before the patches in the encoder's output.
        dim: Decoder width.
        depth: Decoder blocks.
        num_heads: Attention heads per block.
        mlp_ratio: MLP width over ``dim``.
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        num_prefix_tokens: int,
        dim: int = 512,
        depth: int = 8,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.num_prefix_tokens = num_prefix_tokens
        self.embed = nn.Linear(input_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.Sequential(
            *[Block(dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=LayerNorm) for _ in range(depth)]
        )
        self.norm = LayerNorm(dim)
        self.prediction = nn.Linear(dim, output_dim)
        self.apply(_init_weights)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, tokens: torch.Tensor, keep: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
        """Predict the pixels of every patch.

        Args:
            tokens: ``(B, P + K, D_enc)`` encoder output: prefix tokens, then the kept patches in ``keep``'s order.
            keep: ``(B, K)`` grid positions of the kept patches.
            grid_size: Patch grid ``(h, w)``, ``N = h * w``.

        Returns:
            ``(B, N, output_dim)`` in raster order.
        """
        x = self.embed(tokens)  # (B, P + K, D)
        batch, dim = x.shape[0], x.shape[-1]
        prefix = self.num_prefix_tokens
        num_patches = grid_size[0] * grid_size[1]
        index = keep.unsqueeze(-1).expand(-1, -1, dim)  # (B, K, D)
        patches = self.mask_token.to(x.dtype).expand(batch, num_patches, dim).scatter(1, index, x[:, prefix:])
        position = sincos_position_embedding(grid_size, dim, device=x.device, dtype=x.dtype)  # (N, D)
        x = torch.cat([x[:, :prefix], patches + position], dim=1)  # (B, P + N, D)
        x = self.norm(self.blocks(x))
        return self.prediction(x[:, prefix:])  # (B, N, output_dim)


@register_method
class MAE(SSLMethod):
    """MAE around a timm ViT; see :class:`MAEConfig` for the hyperparameters.

    ``self.backbone`` is the encoder (published); ``self.decoder`` and the mask sequence (``self.mask_rng``) live in
    ``ssl/``.
    """

    name = "mae"
    display_name = "MAE"
    config_class = MAEConfig
    transform_class = MAETransform
    paper = PAPER
    learning_rate_scaling = "linear"
    requires_vit = True
    # Xavier-uniform linear layers, as the paper (timm's default is a truncated normal of std 0.02)
    backbone_defaults: ClassVar[dict[str, Any]] = {"weight_init": "jax"}
    config: MAEConfig

    def __init__(self, backbone: str | nn.Module, config: MAEConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.encoder = MaskedVisionTransformer(self.backbone, owner="MAE")
        self.decoder = MAEDecoder(
            input_dim=self.encoder.embed_dim,
            output_dim=math.prod(self.encoder.patch_size) * self.encoder.in_chans,
            num_prefix_tokens=self.encoder.num_prefix_tokens,
            dim=cfg.decoder_dim,
            depth=cfg.decoder_depth,
            num_heads=cfg.decoder_num_heads,
            mlp_ratio=cfg.decoder_mlp_ratio,
        )
        self.criterion = MAELoss(norm_pix_loss=cfg.norm_pix_loss)
        self.mask_rng = MaskingRNG()
        self.fix_position_embeddings()

    @classmethod
    def default_training_arguments(cls, config: MethodConfig | None = None) -> dict[str, Any]:
        # The paper's recipe (appendix A.1): AdamW (0.9, 0.95), weight decay 0.05, base lr 1.5e-4 per 256 images
        # (scaled to the default batch of 64), cosine decay after a 40 / 800 epochs warmup, no clipping.
        return {
            "learning_rate": 1.5e-4 * 64 / 256,
            "weight_decay": 0.05,
            "adam_beta2": 0.95,
            "lr_scheduler_type": "cosine",
            "warmup_steps": 0.05,
            "max_grad_norm": 0.0,
        }

    def forward(self, views: Sequence[torch.Tensor]) -> SSLMethodOutput:
        self.check_views(views, count=1)
        images = views[0]  # (B, C, H, W)
        grid = self.encoder.grid_size(images.shape[-2:])
        num_patches = grid[0] * grid[1]
        count = num_masked(num_patches, self.config.mask_ratio)
        if not 0 < count < num_patches:
            raise ValueError(
                f"MAE: mask_ratio {self.config.mask_ratio} masks {count} of the {num_patches} patches of "
                f"{tuple(images.shape[-2:])} px images; it must mask some and keep some. Use larger images."
            )
        generator = self.mask_rng.next_generator(images.device)
        mask = random_mask(len(images), num_patches, self.config.mask_ratio, generator=generator)  # (B, N)
        keep, _ = mask_to_indices(mask, count)  # (B, N - M)
        encoded = self.encoder(images, keep=keep)  # tokens (B, P + N - M, D)
        predictions = self.decoder(encoded.tokens, keep, grid)  # (B, N, p * p * C)
        target = patchify(images, self.encoder.patch_size)  # (B, N, p * p * C)
        return SSLMethodOutput(loss=self.criterion(predictions, target, mask))
