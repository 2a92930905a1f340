"""The masked-ViT adapter: a timm Vision Transformer run on masked token sets, built from the model's own parts.

Masked-image methods need three things a plain ``forward_features`` does not offer: dropping masked patches (MAE,
MSN, I-JEPA), replacing them with a learnable mask token (SimMIM, iBOT, DINOv2), and attention masks such as AIM's
prefix-causal one. :class:`MaskedVisionTransformer` composes timm's own ``patch_embed``, ``_pos_embed`` (class /
register tokens, position embedding, dynamic image size), ``norm_pre``, ``blocks`` (which take ``attn_mask``) and
``norm`` exactly as ``VisionTransformer.forward_features`` does, so it follows the model's current grid
(``set_input_size``, ``dynamic_img_size``) and works across timm's ViT family without copying any of it.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from timm.layers import build_sincos2d_pos_embed
from timm.models import checkpoint, checkpoint_seq
from timm.models.vision_transformer import VisionTransformer
from torch import nn


class UnsupportedBackboneError(ValueError):
    """A backbone a masked-image method cannot run on (it needs a timm Vision Transformer)."""


def check_vision_transformer(model: nn.Module, owner: str) -> VisionTransformer:
    """Return ``model`` if :class:`MaskedVisionTransformer` can run it, else raise an error naming those that fit.

    Args:
        model: The backbone.
        owner: Who needs it (a method's name), for the message.

    Raises:
        UnsupportedBackboneError: ``model`` is not a ``timm.models.vision_transformer.VisionTransformer``.
    """
    if isinstance(model, VisionTransformer):
        return model
    architecture = getattr(model, "pretrained_cfg", {}).get("architecture")
    name = f"{architecture!r} ({type(model).__name__})" if architecture else type(model).__name__
    raise UnsupportedBackboneError(
        f"{owner} masks image patches and needs a timm Vision Transformer backbone, got {name}. Backbones that fit are "
        "timm's VisionTransformer family: vit_* (e.g. vit_small_patch16_224, vit_base_patch16_224, with or without "
        "class / register tokens, e.g. vit_base_patch14_reg4_dinov2), deit_* and deit3_*, and test_vit for tests; "
        "list them with timm.list_models(module='vision_transformer') and timm.list_models(module='deit')."
    )


def sincos_position_embedding(
    grid_size: Sequence[int], dim: int, *, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The 2D sine-cosine position embedding of MAE, I-JEPA and AIM (``get_2d_sincos_pos_embed``): ``(N, D)`` for a
    ``(h, w)`` patch grid in raster order.

    The first half of each row encodes the patch's column ``x``, the second its row ``y``, each as ``sin`` then
    ``cos`` of the coordinate times ``D / 4`` frequencies ``10000 ** (-i / (D / 4))``. timm's
    ``build_sincos2d_pos_embed(interleave_sin_cos=True)`` holds the same values with the row half first.
    """
    if dim % 4:
        raise ValueError(f"A 2D sine-cosine position embedding needs a width that is a multiple of 4, got {dim}.")
    embedding = build_sincos2d_pos_embed(list(grid_size), dim, interleave_sin_cos=True, device=device, dtype=dtype)
    return torch.cat([embedding[:, dim // 2 :], embedding[:, : dim // 2]], dim=1)  # (N, D): column half first


def fix_sincos_position_embedding(vit: VisionTransformer) -> None:
    """Set ``vit``'s position embedding to :func:`sincos_position_embedding` of its current patch grid and freeze it,
    as MAE's, I-JEPA's and AIM's encoders do (``pos_embed``, ``requires_grad=False``). Prefix positions it covers (a
    class token's) are zero, as MAE's. A ViT without a position embedding (rotary ones) is left as it is.

    timm's ``set_input_size`` resamples the embedding (it stays frozen): call this again after it for the new grid's.
    """
    if vit.pos_embed is None:
        return
    if vit.embed_dim % 4:
        raise ValueError(
            f"A fixed 2D sine-cosine position embedding needs a ViT width that is a multiple of 4, got "
            f"{vit.embed_dim}: pass fixed_position_embedding=False to train the ViT's own."
        )
    grid = vit.patch_embed.grid_size
    prefix = vit.pos_embed.shape[1] - grid[0] * grid[1]  # 0 for ViTs that embed no prefix position
    position = sincos_position_embedding(grid, vit.embed_dim)  # (N, D)
    with torch.no_grad():
        vit.pos_embed[:, :prefix] = 0
        vit.pos_embed[:, prefix:] = position.to(vit.pos_embed)
    vit.pos_embed.requires_grad_(False)


@dataclass
class MaskedViTOutput:
    """What :class:`MaskedVisionTransformer` returns: the final (normalised) tokens, prefix tokens first.

    Attributes:
        tokens: ``(B, P + K, D)``: the ``P`` prefix tokens (class, distillation, register tokens), then the ``K``
            patch tokens that were kept, in the order they were kept.
        num_prefix_tokens: ``P``.
        has_class_token: Whether the first prefix token is a class token.
    """

    tokens: torch.Tensor
    num_prefix_tokens: int
    has_class_token: bool

    @property
    def prefix_tokens(self) -> torch.Tensor:
        """``(B, P, D)``."""
        return self.tokens[:, : self.num_prefix_tokens]

    @property
    def patch_tokens(self) -> torch.Tensor:
        """``(B, K, D)``."""
        return self.tokens[:, self.num_prefix_tokens :]

    @property
    def class_token(self) -> torch.Tensor | None:
        """``(B, D)``, or ``None`` for a ViT without class token."""
        return self.tokens[:, 0] if self.has_class_token else None


class MaskedVisionTransformer(nn.Module):
    """Run a timm ViT with masked patches: drop them, replace them by a mask token, or restrict attention.

    With nothing masked, ``adapter(images).tokens`` equals ``vit.forward_features(images)`` and
    ``adapter.pool(output)`` equals ``vit(images)`` (the ``num_classes=0`` features).

    The adapter does not own the ViT: the method registers it (as ``self.backbone``, the encoder that is published),
    so its weights are saved once; the adapter owns only its mask token. Hence ``adapter.parameters()``, ``.to()``
    and ``.train()`` do not reach the ViT: use them on the module that holds both. A teacher gets its own adapter
    around its own ViT copy (``MaskedVisionTransformer(ema_copy(vit))``); deep-copying an adapter alone raises,
    while deep-copying a module holding both the ViT and the adapter works.

    Patch indices are raster-order positions on the patch grid of the current input (:meth:`grid_size`); masks are
    ``(B, N)`` booleans as made by :mod:`ssl_hub.modules.masking`. timm's patch dropout (``patch_drop_rate``) runs
    only when neither ``mask``, ``keep`` nor ``attn_mask`` is given, as in ``forward_features``: masked calls choose
    their tokens themselves.

    Example, in a method (``self.mask_rng`` a :class:`~ssl_hub.modules.masking.MaskingRNG`)::

        self.encoder = MaskedVisionTransformer(self.backbone, mask_token=True, owner="iBOT")
        grid = self.encoder.grid_size(images.shape[-2:])  # (h, w), N = h * w
        generator = self.mask_rng.next_generator()  # CPU: block masks are drawn there
        mask = block_mask(len(images), grid, 0.3, generator=generator).to(images.device)  # (B, N)
        out = self.encoder(images, mask=mask)  # masked patches -> mask token (iBOT, DINOv2, SimMIM)
        keep, _ = mask_to_indices(mask)  # (B, K)
        out = self.encoder(images, keep=keep)  # only the kept patches (MAE, MSN, I-JEPA)
        out.class_token, out.patch_tokens, self.encoder.pool(out)  # (B, D), (B, K, D), (B, D)

    Args:
        vit: A ``timm.models.vision_transformer.VisionTransformer`` (vit_*, deit_*, ...; with or without class and
            register tokens, fixed or dynamic image size).
        mask_token: Learn a mask token (``(1, 1, D)``, initialised N(0, 0.02) as in SimMIM / MAE) for ``mask=``.
        owner: Name used in error messages (the method building the adapter).

    Raises:
        UnsupportedBackboneError: ``vit`` is not a timm Vision Transformer.
    """

    _vit: VisionTransformer
    mask_token: nn.Parameter | None

    def __init__(self, vit: nn.Module, mask_token: bool = False, owner: str = "MaskedVisionTransformer") -> None:
        super().__init__()
        # A plain attribute, not a submodule: the ViT's weights belong to the module that holds it (see above).
        self.__dict__["_vit"] = check_vision_transformer(vit, owner)
        self.owner = owner
        if mask_token:
            self.mask_token = nn.Parameter(torch.zeros(1, 1, self._vit.embed_dim))
            nn.init.normal_(self.mask_token, std=0.02)
        else:
            self.register_parameter("mask_token", None)
        self._blocks_take_attn_mask = all(
            "attn_mask" in inspect.signature(block.forward).parameters for block in self._vit.blocks
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> MaskedVisionTransformer:
        if id(self._vit) not in memo:
            raise RuntimeError(
                "Deep-copying a MaskedVisionTransformer alone would copy its ViT into a module nothing registers (no "
                "saving, no EMA updates). Copy the ViT and wrap the copy: MaskedVisionTransformer(ema_copy(vit)); or "
                "deep-copy a module that holds both the ViT and the adapter."
            )
        duplicate = type(self).__new__(type(self))
        memo[id(self)] = duplicate
        for key, value in self.__dict__.items():
            duplicate.__dict__[key] = copy.deepcopy(value, memo)
        return duplicate

    @property
    def vit(self) -> VisionTransformer:
        """The timm ViT this adapter runs."""
        return self._vit

    @property
    def embed_dim(self) -> int:
        """Token width ``D``."""
        return int(self._vit.embed_dim)

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches ``P``: class, distillation and register tokens."""
        return int(self._vit.num_prefix_tokens)

    @property
    def has_class_token(self) -> bool:
        """Whether the first prefix token is a class token."""
        return self._vit.cls_token is not None

    @property
    def in_chans(self) -> int:
        """Image channels ``C``."""
        return int(self._vit.patch_embed.proj.in_channels)

    @property
    def patch_size(self) -> tuple[int, int]:
        """Pixels per patch ``(p_h, p_w)`` (the patch embedding's total stride)."""
        patch_embed = self._vit.patch_embed
        feat_ratio = getattr(patch_embed, "feat_ratio", None)
        size = feat_ratio(as_scalar=False) if callable(feat_ratio) else patch_embed.patch_size
        return int(size[0]), int(size[1])

    def grid_size(self, image_size: tuple[int, int] | torch.Size) -> tuple[int, int]:
        """Patch grid ``(h, w)`` of ``(H, W)`` images; ``N = h * w`` patches.

        Raises:
            ValueError: The ViT has a fixed input size other than ``image_size``.
        """
        height, width = int(image_size[0]), int(image_size[1])
        patch_embed = self._vit.patch_embed
        if self._vit.dynamic_img_size:
            grid = patch_embed.dynamic_feat_size((height, width))
            return int(grid[0]), int(grid[1])
        if patch_embed.img_size is not None and tuple(patch_embed.img_size) != (height, width):
            raise ValueError(
                f"{self.owner}: the ViT takes {tuple(patch_embed.img_size)} px images, got {(height, width)}. Resize "
                f"it with method.fit_input_size({height}) (timm's set_input_size), or build it with img_size={height}."
            )
        return int(patch_embed.grid_size[0]), int(patch_embed.grid_size[1])

    def embed(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Patch embedding, mask tokens, then timm's ``_pos_embed`` (prefix tokens and position embedding).

        Args:
            images: ``(B, C, H, W)``.
            mask: ``(B, N)`` boolean, ``True`` where the patch embedding is replaced by the mask token.

        Returns:
            ``(B, P + N, D)``.
        """
        vit = self._vit
        x = vit.patch_embed(images)  # (B, N, D), or (B, h, w, D) for dynamic-size ViTs
        if mask is not None:
            if self.mask_token is None:
                raise ValueError(
                    f"{self.owner}: mask= replaces patches by a mask token, and this adapter has none: build it "
                    "with MaskedVisionTransformer(vit, mask_token=True), or drop patches with keep=."
                )
            grid = x.shape[1:-1]
            if mask.dtype != torch.bool or mask.shape != (x.shape[0], grid.numel()):
                raise ValueError(
                    f"{self.owner}: mask must be a (B, N) = {(x.shape[0], grid.numel())} boolean tensor for "
                    f"{tuple(images.shape[-2:])} px images, got {tuple(mask.shape)} {mask.dtype}."
                )
            replace = mask.reshape(x.shape[:-1]).unsqueeze(-1)  # (B, N, 1) or (B, h, w, 1)
            x = torch.where(replace, self.mask_token.to(x.dtype), x)
        return vit._pos_embed(x)  # (B, P + N, D)

    def forward(
        self,
        images: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> MaskedViTOutput:
        """Encode ``images`` with some patches masked.

        Args:
            images: ``(B, C, H, W)``.
            mask: ``(B, N)`` boolean: replace these patches by the mask token (SimMIM, iBOT, DINOv2). Needs
                ``mask_token=True``.
            keep: ``(B, K)`` long: encode only these patches, in this order; the others are dropped (MAE, MSN,
                I-JEPA). Applied after ``mask``, so both can be combined.
            attn_mask: Passed to every block: boolean (``True`` = may attend) or additive float, broadcastable to
                ``(B, heads, L, L)`` with ``L = P + K`` (``K = N`` without ``keep``); e.g.
                :func:`~ssl_hub.modules.masking.prefix_causal_attention_mask` for AIM.

        Returns:
            The normalised tokens, see :class:`MaskedViTOutput`.
        """
        vit = self._vit
        x = self.embed(images, mask)  # (B, P + N, D)
        prefix = self.num_prefix_tokens
        if keep is not None:
            num_patches = x.shape[1] - prefix
            if keep.ndim != 2 or keep.shape[0] != x.shape[0] or keep.dtype != torch.long:
                raise ValueError(
                    f"{self.owner}: keep must be a (B, K) long tensor of patch indices with B={x.shape[0]}, got "
                    f"{tuple(keep.shape)} {keep.dtype}."
                )
            if keep.shape[1] > num_patches:
                raise ValueError(f"{self.owner}: keep selects {keep.shape[1]} of only {num_patches} patches.")
            patches = x[:, prefix:].gather(1, keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # (B, K, D)
            x = torch.cat([x[:, :prefix], patches], dim=1)  # (B, P + K, D)
        elif mask is None and attn_mask is None:
            x = vit.patch_drop(x)
        x = vit.norm_pre(x)
        x = self._blocks(x, attn_mask)  # (B, P + K, D)
        return MaskedViTOutput(vit.norm(x), prefix, self.has_class_token)

    def _blocks(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        vit = self._vit
        checkpointing = vit.grad_checkpointing and not torch.jit.is_scripting()
        if attn_mask is None:
            return checkpoint_seq(vit.blocks, x) if checkpointing else vit.blocks(x)
        if not self._blocks_take_attn_mask:
            raise ValueError(
                f"{self.owner}: the blocks of this ViT ({type(vit.blocks[0]).__name__}) take no attn_mask; "
                "timm >= 1.0.31's Block, ResPostBlock and parallel blocks do."
            )
        for block in vit.blocks:
            x = checkpoint(block, x, attn_mask=attn_mask) if checkpointing else block(x, attn_mask=attn_mask)
        return x

    def pool(self, output: MaskedViTOutput) -> torch.Tensor:
        """The ViT's pooled features of the encoded tokens (its ``forward_head(..., pre_logits=True)``): the class
        token, the mean of the kept patches, or attention pooling, as the ViT's ``global_pool`` says.

        Returns:
            ``(B, D)``; equals ``vit(images)`` when nothing is masked.
        """
        pooled: torch.Tensor = self._vit.forward_head(output.tokens, pre_logits=True)
        return pooled

    def extra_repr(self) -> str:
        return f"vit={type(self._vit).__name__}, embed_dim={self.embed_dim}, mask_token={self.mask_token is not None}"


def patchify(images: torch.Tensor, patch_size: int | tuple[int, int]) -> torch.Tensor:
    """Cut images into the flattened pixel patches a ViT sees, in raster order (MAE's ``patchify``).

    Args:
        images: ``(B, C, H, W)``, ``H`` and ``W`` multiples of the patch size.
        patch_size: ``p`` or ``(p_h, p_w)`` pixels.

    Returns:
        ``(B, h * w, p_h * p_w * C)``: each patch's pixels row by row, the channels of a pixel together.
    """
    patch_h, patch_w = (patch_size, patch_size) if isinstance(patch_size, int) else patch_size
    batch, channels, height, width = images.shape
    if height % patch_h or width % patch_w:
        raise ValueError(f"patchify: image size {(height, width)} is not a multiple of the patch size.")
    h, w = height // patch_h, width // patch_w
    patches = images.reshape(batch, channels, h, patch_h, w, patch_w)
    patches = patches.permute(0, 2, 4, 3, 5, 1)  # (B, h, w, p_h, p_w, C)
    return patches.reshape(batch, h * w, patch_h * patch_w * channels)
