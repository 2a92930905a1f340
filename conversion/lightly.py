"""LightlySSL checkpoints -> the student backbone as a timm model.

A LightlySSL model (lightly-ai/lightly: ``examples/pytorch_lightning/*.py``, ``benchmarks/imagenet/*``) is a
LightningModule that holds its backbone as an attribute: ``backbone`` in most methods, ``student_backbone`` and
``teacher_backbone`` in the DINO example, with EMA copies such as ``backbone_momentum`` or ``teacher_backbone`` and
heads such as ``projection_head``, ``prediction_head``, ``student_head``, ``online_classifier``. Its checkpoint is
Lightning's ``.ckpt`` (a dict whose ``state_dict`` entry holds the weights, next to ``optimizer_states``,
``hyper_parameters``, ``callbacks``...) or a plain ``torch.save(model.state_dict())``. The backbone is one of:

- a timm model: keys ``backbone.<timm names>``; inside LightlySSL's ``MaskedVisionTransformerTIMM`` (MAE, the ViT
  benchmarks) ``backbone.vit.<timm names>``;
- a torchvision ResNet wrapped as the examples do, ``nn.Sequential(*list(resnet.children())[:-1])``: keys
  ``backbone.0.weight``, ``backbone.4.0.conv1.weight``..., renamed by
  :func:`ssl_hub.conversion.torchvision.resnet_names` to timm's (= torchvision's) ``conv1.weight``,
  ``layer1.0.conv1.weight``;
- a torchvision ResNet with ``fc = Identity()`` (the ImageNet benchmarks): torchvision's names, which are timm's.

The backbone's key prefix is found by :func:`~ssl_hub.conversion.common.find_backbone` (so also under a wrapper,
e.g. ``model.backbone.``): the prefix whose weights fill the timm architecture, preferring the student over a
teacher / momentum copy (``backbone.`` over ``backbone_momentum.``, ``student_backbone.`` over
``teacher_backbone.``); ``prefix`` names it explicitly. Every other tensor (heads, teachers, classifiers) is
dropped and reported. The checkpoint does not say which method trained it: pass ``method`` for the card.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ssl_hub.conversion.common import Extraction, SourceFormat, find_backbone, gather_weights
from ssl_hub.conversion.torchvision import describe_names, resnet_names

_SAME_NAMES = "unchanged: timm's names (a timm backbone, or a torchvision ResNet, whose names timm's ResNets share)"


def extract(
    checkpoint: Any,
    *,
    architecture: str | None,
    model_args: Mapping[str, Any],
    encoder: str | None,
    prefix: str | None,
) -> Extraction:
    """The student backbone of a LightlySSL checkpoint (see the module docstring)."""
    weights, ignored = gather_weights(checkpoint, ("state_dict",), "LightlySSL")
    found, state, source_keys, guessed = find_backbone(
        weights, architecture=architecture, model_args=model_args, prefix=prefix, rename=resnet_names
    )
    renamed = any(source != found + name for name, source in source_keys.items())
    return Extraction(
        weights=weights,
        ignored_entries=ignored,
        prefix=found,
        state=state,
        source_keys=source_keys,
        description="the backbone" if prefix is not None else "the student backbone",
        key_names=describe_names(source_keys, found) if renamed else _SAME_NAMES,
        architecture=guessed,
    )


FORMAT = SourceFormat(
    name="lightly",
    description="a LightlySSL checkpoint (lightly-ai/lightly)",
    extract=extract,
    accepts_prefix=True,
)
