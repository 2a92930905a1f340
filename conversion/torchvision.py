"""torchvision ResNet state dicts -> timm ``resnet*``.

timm's ResNets use torchvision's parameter names (``conv1``, ``bn1``, ``layer1.0.conv1`` ... ``layer4``, ``fc``) and
the same computation (stride in the 3x3 convolution of a bottleneck), so a torchvision ResNet's weights are those of
the timm ResNet of the same name. Such state dicts are torchvision's own checkpoints and many SSL releases in its
format (DINO's and MoCo v3's ResNet-50s, VICReg, Barlow Twins, SwAV...), as saved by ``torch.save(state_dict)``, under
a ``model`` entry (torchvision's reference training scripts) or a ``state_dict`` entry, possibly with
DistributedDataParallel's ``module.`` prefix; the backbone's prefix is found by
:func:`~ssl_hub.conversion.common.find_backbone`. The ``fc`` classifier (or a projector put in its place) is dropped.

LightlySSL's examples wrap a ResNet as ``nn.Sequential(*list(resnet.children())[:-1])``, which numbers the children:
``0`` conv1, ``1`` bn1, ``2`` relu, ``3`` maxpool, ``4``-``7`` layer1-4, ``8`` avgpool (``9`` fc when it is kept);
:func:`resnet_names` gives them their names back. timm's ResNets have their children in the same order, so a timm
ResNet wrapped that way is renamed the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ssl_hub.conversion.common import (
    Extraction,
    SourceFormat,
    find_backbone,
    gather_weights,
    same_names,
)

# nn.Sequential(*resnet.children()) index -> the child's name (relu, maxpool and avgpool have no weights).
_SEQUENTIAL_CHILDREN = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4", "9": "fc"}


def resnet_names(state: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """timm's name of each key of a ResNet's weights: unchanged, or the child's name for ``nn.Sequential`` indices.

    ``{"0.weight", "1.running_mean", "4.0.conv1.weight", ...}`` -> ``conv1.weight``, ``bn1.running_mean``,
    ``layer1.0.conv1.weight``. Weights with named children are returned unchanged.
    """
    numbered = all(any(key.startswith(f"{index}.") for key in state) for index in ("0", "4", "7"))
    if not numbered:
        return same_names(state)
    names = {}
    for key in state:
        child, _, rest = key.partition(".")
        names[key] = f"{_SEQUENTIAL_CHILDREN[child]}.{rest}" if child in _SEQUENTIAL_CHILDREN and rest else key
    return names


def describe_names(source_keys: Mapping[str, str], prefix: str) -> str:
    """How the source's names became timm's, for the card."""
    if any(source != prefix + name for name, source in source_keys.items()):
        return (
            "nn.Sequential child indices renamed to the ResNet's children (0 conv1, 1 bn1, 4-7 layer1-4), "
            "torchvision's names, which timm's ResNets share"
        )
    return "torchvision's names, which timm's ResNets share"


def extract(
    checkpoint: Any,
    *,
    architecture: str | None,
    model_args: Mapping[str, Any],
    encoder: str | None,
    prefix: str | None,
) -> Extraction:
    """The ResNet of a torchvision-format checkpoint (see the module docstring)."""
    weights, ignored = gather_weights(checkpoint, ("model", "state_dict"), "torchvision")
    found, state, source_keys, guessed = find_backbone(
        weights, architecture=architecture, model_args=model_args, prefix=prefix, rename=resnet_names
    )
    return Extraction(
        weights=weights,
        ignored_entries=ignored,
        prefix=found,
        state=state,
        source_keys=source_keys,
        description="the ResNet",
        key_names=describe_names(source_keys, found),
        architecture=guessed,
    )


FORMAT = SourceFormat(
    name="torchvision",
    description="a torchvision ResNet state dict",
    extract=extract,
    accepts_prefix=True,
    # torchvision's ImageNet evaluation: resize to 256 px (bilinear), centre crop 224 px.
    data_config={"interpolation": "bilinear", "crop_pct": 0.875},
)
