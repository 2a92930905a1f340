"""Official DINO checkpoints (facebookresearch/dino) -> the teacher's backbone as a timm model.

Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021. Layouts, from the repository's
``main_dino.py``, ``utils.py`` (``load_pretrained_weights``) and ``hubconf.py``:

- Training checkpoints (``checkpoint.pth``, the ``*_full_checkpoint.pth`` releases): a dict with ``student`` and
  ``teacher`` state dicts plus ``optimizer``, ``epoch``, ``args`` (an ``argparse.Namespace`` with ``arch`` and
  ``patch_size``), ``dino_loss`` and ``fp16_scaler``. Each network is a ``MultiCropWrapper`` of a backbone and a
  ``DINOHead``: keys ``backbone.*`` and ``head.*``. The student is wrapped in DistributedDataParallel
  (``module.backbone.*``); the teacher only when it has batch norms (ResNets: ``module.backbone.*``; ViTs:
  ``backbone.*``).
- Released backbones (``dino_deitsmall16_pretrain.pth``, ``dino_resnet50_pretrain.pth``...): the teacher's backbone
  alone, no prefix.

DINO's ViTs (``vision_transformer.py``: ``cls_token``, ``pos_embed``, ``patch_embed.proj``, ``blocks.N.{norm1, attn.qkv,
attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm``; LayerNorm eps 1e-6, qkv bias, timm's numbers of heads) have timm's
names and computation, so ``vit_small`` with patch 16 is timm's ``vit_small_patch16_224``; its ResNets are
torchvision's, whose names timm's ResNets share. The default is the teacher, which DINO evaluates
(``eval_linear.py --checkpoint_key teacher``); ``encoder="student"`` takes the student. Features are timm's: the
class token after the final norm, as DINO's linear evaluation uses (with ``--n_last_blocks 1``).
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
    tensors_of,
)

ENCODERS = ("teacher", "student")


def _architecture(checkpoint: Mapping[str, Any]) -> str | None:
    """The timm architecture named by a training checkpoint's ``args`` (``vit_small`` + patch 8 ->
    ``vit_small_patch8_224``; torchvision ResNet names are timm's)."""
    args = checkpoint.get("args")
    arch, patch_size = getattr(args, "arch", None), getattr(args, "patch_size", None)
    if not isinstance(arch, str):
        return None
    name = f"{arch}_patch{patch_size}_224" if arch in ("vit_tiny", "vit_small", "vit_base") else arch
    return name if timm.is_model(name) else None


def extract(
    checkpoint: Any,
    *,
    architecture: str | None,
    model_args: Mapping[str, Any],
    encoder: str | None,
    prefix: str | None,
) -> Extraction:
    """The teacher's (or student's) backbone of a DINO checkpoint (see the module docstring)."""
    weights, ignored = gather_weights(checkpoint, ENCODERS, "DINO")
    training = any(tensors_of(checkpoint.get(name)) is not None for name in ENCODERS)
    if training:
        chosen = encoder or "teacher"
        candidates: tuple[str, ...] = (f"{chosen}.module.backbone.", f"{chosen}.backbone.")
        description = f"the {chosen}'s backbone"
        if tensors_of(checkpoint.get(chosen)) is None:
            raise ConversionError(
                f"This DINO checkpoint has no {chosen!r} state dict (it has {', '.join(checkpoint)})."
            )
    else:
        if encoder == "student":
            raise ConversionError(
                "This DINO file holds one backbone, not a training checkpoint with a student and a teacher (DINO's "
                "released *_pretrain.pth backbones are the teacher's): leave out --encoder."
            )
        candidates = ("module.backbone.", "backbone.", "module.", "")
        description = "the backbone the file holds"
    found = first_prefix(weights, candidates)
    if found is None:
        raise ConversionError(
            f"This DINO checkpoint has no {candidates[-1]}* keys: it is not in the layout of facebookresearch/dino's "
            "main_dino.py."
        )
    found, state, source_keys, named = find_backbone(
        weights,
        architecture=architecture or _architecture(checkpoint),
        model_args=model_args,
        prefix=found,
    )
    return Extraction(
        weights=weights,
        ignored_entries=ignored,
        prefix=found,
        state=state,
        source_keys=source_keys,
        description=description,
        key_names="unchanged: DINO's ViTs have timm's names, its ResNets torchvision's, which timm's ResNets share",
        architecture=named,
    )


FORMAT = SourceFormat(
    name="dino",
    description="an official DINO checkpoint (facebookresearch/dino)",
    extract=extract,
    encoders=ENCODERS,
    method="dino",
    license="apache-2.0",
    # eval_linear.py: resize to 256 px (bicubic), centre crop 224 px.
    data_config={"interpolation": "bicubic", "crop_pct": 0.875},
)
