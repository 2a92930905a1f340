"""Official MAE checkpoints (facebookresearch/mae) -> the ViT encoder as a timm model.

He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022. Layouts, from the repository's
``models_mae.py``, ``models_vit.py``, ``util/misc.py`` (``save_model``) and ``main_finetune.py``:

- Pretraining checkpoints (``checkpoint-*.pth``, the released ``mae_pretrain_vit_*.pth`` and
  ``mae_visualize_vit_*.pth``): ``{"model", "optimizer", "epoch", "scaler", "args"}`` (the releases: ``model`` only).
  ``model`` has the encoder under timm's ViT names (``cls_token``, ``pos_embed`` - a fixed sin-cos table stored like
  a learned one -, ``patch_embed.proj``, ``blocks.N.*``, ``norm``) and, when the decoder was kept, ``mask_token``,
  ``decoder_embed``, ``decoder_pos_embed``, ``decoder_blocks.*``, ``decoder_norm``, ``decoder_pred``: those are
  dropped.
- Fine-tuned checkpoints (``mae_finetuned_vit_*.pth``, ``main_finetune.py`` output): the encoder with ``fc_norm``
  in place of ``norm`` and a ``head`` classifier (dropped).

Pooling, decided here: a pretrained encoder keeps timm's default, the class token after the pretrained ``norm``,
which is how MAE's linear probe reads it (``main_linprobe.py``, ``--cls_token`` by default) and how timm's own
``vit_*_224.mae`` weights are configured, so every pretrained weight is used and no layer is new. MAE fine-tunes
with global average pooling of the patch tokens and a new ``fc_norm`` instead (``models_vit.py``,
``global_pool=True``); a fine-tuned checkpoint is converted that way (``global_pool="avg"``, recorded in
config.json). To fine-tune a pretrained one with average pooling, build it as
``timm.create_model(..., pretrained=True, global_pool="avg", fc_norm=False)`` (the pretrained ``norm`` applied to
every token before pooling), or convert with ``model_args={"global_pool": "avg", "fc_norm": False}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import timm

from ssl_hub.conversion.common import Extraction, SourceFormat, find_backbone, gather_weights

_MAE_MODEL = re.compile(r"vit_(base|large|huge)_patch(\d+)")


def _architecture(checkpoint: Mapping[str, Any]) -> str | None:
    """The timm ViT named by the checkpoint's ``args.model`` (``mae_vit_base_patch16`` -> ``vit_base_patch16_224``)."""
    model = getattr(checkpoint.get("args"), "model", None)
    match = _MAE_MODEL.search(model) if isinstance(model, str) else None
    name = f"vit_{match[1]}_patch{match[2]}_224" if match else None
    return name if name is not None and timm.is_model(name) else None


def _is_decoder(key: str) -> bool:
    return key.startswith("decoder") or key == "mask_token"


def extract(
    checkpoint: Any,
    *,
    architecture: str | None,
    model_args: Mapping[str, Any],
    encoder: str | None,
    prefix: str | None,
) -> Extraction:
    """The encoder of an MAE checkpoint (see the module docstring)."""
    weights, ignored = gather_weights(checkpoint, ("model",), "MAE")
    found = "module." if all(key.startswith("module.") for key in weights) else ""
    encoder_weights = {key: tensor for key, tensor in weights.items() if not _is_decoder(key.removeprefix(found))}
    found, state, source_keys, named = find_backbone(
        encoder_weights,
        architecture=architecture or _architecture(checkpoint),
        model_args=model_args,
        prefix=found,
    )
    fine_tuned = "fc_norm.weight" in state
    return Extraction(
        weights=weights,
        ignored_entries=ignored,
        prefix=found,
        state=state,
        source_keys=source_keys,
        description="the fine-tuned ViT encoder (global average pooling)" if fine_tuned else "the ViT encoder",
        key_names="unchanged: MAE's encoder has timm's ViT names",
        architecture=named,
        model_args={"global_pool": "avg"} if fine_tuned else {},
    )


FORMAT = SourceFormat(
    name="mae",
    description="an official MAE checkpoint (facebookresearch/mae)",
    extract=extract,
    method="mae",
    license="cc-by-nc-4.0",
    # main_finetune.py / main_linprobe.py evaluation: resize to 256 px (bicubic), centre crop 224 px.
    data_config={"interpolation": "bicubic", "crop_pct": 0.875},
)
