"""Official MoCo v3 checkpoints (facebookresearch/moco-v3) -> the base encoder as a timm model.

Chen, Xie, He, "An Empirical Study of Training Self-Supervised Vision Transformers", ICCV 2021. Layouts, from the
repository's ``main_moco.py``, ``moco/builder.py``, ``vits.py``, ``main_lincls.py`` and ``convert_to_deit.py``:

- Training checkpoints (``checkpoint_*.pth.tar`` and the released ``r-50-*.pth.tar``, ``vit-s-300ep.pth.tar``,
  ``vit-b-300ep.pth.tar``): ``{"epoch", "arch", "state_dict", "optimizer", "scaler"}``; ``state_dict`` holds the
  DistributedDataParallel-wrapped MoCo module: ``module.base_encoder.*``, ``module.momentum_encoder.*`` (its EMA copy)
  and ``module.predictor.*``. Each encoder's classifier was replaced by the projector MLP: ``fc.*`` on ResNets,
  ``head.*`` on ViTs; it is dropped.
- ``convert_to_deit.py`` output: ``{"model": <the base encoder without head>}``.

ResNets are torchvision's (``arch`` "resnet50"), whose names timm's ResNets share. ViTs (``vits.py``) are timm
VisionTransformers with a fixed 2-D sin-cos position embedding (stored like a learned one) and a frozen patch
projection: timm's names and computation, but ``vit_small`` has 12 attention heads where timm's
``vit_small_patch16_224`` has 6, so ``num_heads=12`` is added for a 384-wide ViT (heads leave no trace in the
weights). The convolutional-stem ViTs (``vit_conv_small``, ``vit_conv_base``) have no timm architecture. The default
is the base encoder, which MoCo v3 evaluates (``main_lincls.py``); ``encoder="momentum"`` takes its EMA copy.
Features are timm's: the class token after the final norm (ViTs), as MoCo v3's linear probe uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import timm

from ssl_hub.conversion.common import (
    ConversionError,
    Extraction,
    SourceFormat,
    find_backbone,
    first_prefix,
    gather_weights,
)

ENCODERS = ("base", "momentum")
_VITS = {"vit_small": "vit_small_patch16_224", "vit_base": "vit_base_patch16_224"}
# vits.py: vit_small is 384 wide with 12 heads (timm's vit_small_patch16_224 has 6); vit_base matches timm's.
_SMALL_WIDTH, _SMALL_HEADS = 384, 12


def _architecture(checkpoint: Mapping[str, Any]) -> str | None:
    """The timm architecture named by the checkpoint's ``arch`` entry."""
    arch = checkpoint.get("arch")
    if not isinstance(arch, str):
        return None
    if arch.startswith("vit_conv"):
        raise ConversionError(
            f"MoCo v3's {arch} (a ViT with a convolutional stem) has no timm architecture; only vit_small, vit_base "
            "and the ResNets convert."
        )
    name = _VITS.get(arch, arch)
    return name if timm.is_model(name) else None


def extract(
    checkpoint: Any,
    *,
    architecture: str | None,
    model_args: Mapping[str, Any],
    encoder: str | None,
    prefix: str | None,
) -> Extraction:
    """The base (or momentum) encoder of a MoCo v3 checkpoint (see the module docstring)."""
    weights, ignored = gather_weights(checkpoint, ("state_dict", "model"), "MoCo v3")
    chosen = encoder or "base"
    if any("base_encoder." in key or "momentum_encoder." in key for key in weights):
        found = first_prefix(weights, (f"module.{chosen}_encoder.", f"{chosen}_encoder."))
        if found is None:
            raise ConversionError(f"This MoCo v3 checkpoint has no {chosen}_encoder.* keys.")
        description = "the base encoder" if chosen == "base" else "the momentum encoder (the base encoder's EMA)"
    else:
        if encoder == "momentum":
            raise ConversionError(
                "This MoCo v3 file holds one encoder (convert_to_deit.py keeps the base encoder): leave out --encoder."
            )
        found = "module." if all(key.startswith("module.") for key in weights) else ""
        description = "the encoder the file holds"
    found, state, source_keys, named = find_backbone(
        weights,
        architecture=architecture or _architecture(checkpoint),
        model_args=model_args,
        prefix=found,
    )
    patch_weight = state.get("patch_embed.proj.weight")
    small_vit = patch_weight is not None and patch_weight.shape[0] == _SMALL_WIDTH
    return Extraction(
        weights=weights,
        ignored_entries=ignored,
        prefix=found,
        state=state,
        source_keys=source_keys,
        description=description,
        key_names="unchanged: MoCo v3's ViTs are timm's, its ResNets torchvision's, which timm's ResNets share",
        architecture=named,
        model_args={"num_heads": _SMALL_HEADS} if small_vit else {},
    )


FORMAT = SourceFormat(
    name="mocov3",
    description="an official MoCo v3 checkpoint (facebookresearch/moco-v3)",
    extract=extract,
    encoders=ENCODERS,
    method="moco",
    method_config={"version": 3},
    license="cc-by-nc-4.0",
    # main_lincls.py: resize to 256 px (bilinear), centre crop 224 px.
    data_config={"interpolation": "bilinear", "crop_pct": 0.875},
)
