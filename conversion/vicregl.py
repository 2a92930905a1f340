"""Official VICRegL checkpoints (facebookresearch/VICRegL) -> the backbone as a timm model.

Bardes, Ponce, LeCun, "VICRegL: Self-Supervised Learning of Local Visual Features", NeurIPS 2022. Layouts, from the
repository's ``main_vicregl.py``, ``utils.checkpoint``, ``evaluate.py``, ``hubconf.py``, ``resnet.py`` and
``convnext.py``:

- Released backbones (``resnet50_alpha0.9.pth``, ``convnext_small_alpha0.75.pth``...): the backbone's state dict alone.
- Training checkpoints (``model.pth``, the ``*_fullckpt.pth`` releases): ``{"epoch", "model", "optimizer"}``; ``model``
  holds the DistributedDataParallel-wrapped ``VICRegL`` module: ``module.backbone.*``, the expanders
  ``module.projector.*`` and ``module.maps_projector.*``, and the online linear probe ``module.classifier.*``.

Its ResNets have torchvision's names and computation (a 1-pixel zero padding before a stem convolution padded by 2
is torchvision's padding of 3), which timm's ResNets share. Its ConvNeXts have the official ConvNeXt's names
(``downsample_layers``, ``stages.N.M.{dwconv, norm, pwconv1, pwconv2, gamma}``) with no classifier, no layer scale at
the default ``--layer-scale-init-value 0`` (no ``gamma``), and a final norm applied at each location before the
average pooling, where the official ConvNeXt classifier pools first. So the timm ConvNeXt is built with
``head_norm_first=True`` (the final norm as ``norm_pre``, at each location too: its features and feature maps are
VICRegL's), and a block without ``gamma`` gets a layer scale of ones, which changes no value (``timm.create_model``
drops ``ls_init_value=None``, so a folder cannot ask for no layer scale); the other names change as timm's own
``convnext.checkpoint_filter_fn`` changes an official ConvNeXt's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from ssl_hub.conversion.common import (
    ConversionError,
    Extraction,
    SourceFormat,
    find_backbone,
    first_prefix,
    gather_weights,
    same_names,
    strip_prefix,
)

# (blocks per stage, width of the first stage) -> timm's ConvNeXt of that size (convnext.py's constructors).
_CONVNEXTS: dict[tuple[tuple[int, ...], int], str] = {
    ((3, 3, 9, 3), 96): "convnext_tiny",
    ((3, 3, 27, 3), 96): "convnext_small",
    ((3, 3, 27, 3), 128): "convnext_base",
    ((3, 3, 27, 3), 192): "convnext_large",
    ((3, 3, 27, 3), 256): "convnext_xlarge",
}
# Official ConvNeXt name -> timm's, in order (as timm's convnext.checkpoint_filter_fn renames them).
_CONVNEXT_RENAMES = (
    (re.compile(r"^downsample_layers\.0\."), "stem."),
    (re.compile(r"^downsample_layers\.(\d+)\.(\d+)\."), r"stages.\1.downsample.\2."),
    (re.compile(r"^stages\.(\d+)\.(\d+)\."), r"stages.\1.blocks.\2."),
    (re.compile(r"\.dwconv\."), ".conv_dw."),
    (re.compile(r"\.pwconv(\d)\."), r".mlp.fc\1."),
    (re.compile(r"^norm\."), "norm_pre."),  # the final norm, at each location before pooling
)


def is_convnext(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state`` (the backbone's tensors under the source's names) is an official-layout ConvNeXt."""
    return "downsample_layers.0.0.weight" in state


def convnext_names(state: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """timm's name of each key of an official-layout ConvNeXt (``stages.2.5.pwconv1.weight`` ->
    ``stages.2.blocks.5.mlp.fc1.weight``); keys of any other layout are left unchanged."""
    if not is_convnext(state):
        return same_names(state)
    names = {}
    for key in state:
        name = key
        for pattern, replacement in _CONVNEXT_RENAMES:
            name = pattern.sub(replacement, name)
        names[key] = name
    return names


def _convnext_architecture(state: Mapping[str, torch.Tensor]) -> str | None:
    """The timm ConvNeXt with the blocks and widths of ``state`` (official names), ``None`` for another size."""
    depths = tuple(
        len({key.split(".")[2] for key in state if key.startswith(f"stages.{stage}.")}) for stage in range(4)
    )
    width = state["downsample_layers.0.0.weight"].shape[0]
    return _CONVNEXTS.get((depths, width))


def extract(
    checkpoint: Any,
    *,
    architecture: str | None,
    model_args: Mapping[str, Any],
    encoder: str | None,
    prefix: str | None,
) -> Extraction:
    """The backbone of a VICRegL checkpoint (see the module docstring)."""
    weights, ignored = gather_weights(checkpoint, ("model",), "VICRegL")
    found = first_prefix(weights, ("module.backbone.", "backbone."))
    if found is None:
        if any(key.startswith(("module.", "projector.", "maps_projector.")) for key in weights):
            raise ConversionError("This VICRegL checkpoint has no backbone.* keys.")
        found = ""
    convnext = is_convnext(strip_prefix(weights, found))
    extra_args = {"head_norm_first": True} if convnext else {}
    if convnext and architecture is None:
        architecture = _convnext_architecture(strip_prefix(weights, found))
    found, state, source_keys, named = find_backbone(
        weights,
        architecture=architecture,
        model_args={**extra_args, **model_args},
        prefix=found,
        rename=convnext_names,
    )
    added_layer_scale = convnext and not any(key.endswith(".gamma") for key in state)
    if added_layer_scale:
        for key, tensor in list(state.items()):
            if key.startswith("stages.") and key.endswith(".conv_dw.weight"):  # (C, 1, 7, 7): one block
                state[key.removesuffix("conv_dw.weight") + "gamma"] = torch.ones(tensor.shape[0], dtype=tensor.dtype)
    return Extraction(
        weights=weights,
        ignored_entries=ignored,
        prefix=found,
        state=state,
        source_keys=source_keys,
        description="the backbone",
        key_names=(
            "the official ConvNeXt's, renamed as timm's convnext.checkpoint_filter_fn does, the final norm as "
            "norm_pre (head_norm_first)" + (", a layer scale of ones added to each block" if added_layer_scale else "")
            if convnext
            else "unchanged: VICRegL's ResNets are torchvision's, whose names timm's ResNets share"
        ),
        architecture=named,
        model_args=extra_args,
    )


FORMAT = SourceFormat(
    name="vicregl",
    description="an official VICRegL checkpoint (facebookresearch/VICRegL)",
    extract=extract,
    method="vicregl",
    license="cc-by-nc-4.0",
    # evaluate.py: resize to 256 px (bilinear), centre crop 224 px.
    data_config={"interpolation": "bilinear", "crop_pct": 0.875},
)
