"""Published backbones inside detection / segmentation models, where the ecosystem leaves a gap.

- transformers 5 builds the timm backbone of DETR, Conditional DETR, UperNet, Mask2Former... with random weights
  (``use_pretrained_backbone`` is gone): :func:`load_backbone_weights` fills it from a published folder or repo,
  checking that every weight of the backbone was set.
- torchvision's Faster R-CNN / Mask R-CNN take any module with ``out_channels`` that returns feature maps:
  :class:`TimmFPNBackbone` is a feature pyramid network over ``timm.create_model(source, features_only=True)``,
  for CNNs (multi-stride maps) and ViTs (one stride: a ViTDet-style simple pyramid is built from the last map).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import timm
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

# Buffers a frozen / replaced batch norm drops (DETR swaps BatchNorm2d for a frozen version without this counter).
_DROPPABLE_SUFFIXES = ("num_batches_tracked",)


def _timm_name(source: str) -> str:
    return source if source.startswith(("hf-hub:", "local-dir:")) else f"local-dir:{source}"


def load_backbone_weights(model: nn.Module, source: str) -> list[str]:
    """Load a published backbone into every timm feature extractor inside ``model``, strictly.

    Works on any model whose backbone is a timm ``features_only`` model (transformers' ``TimmBackbone`` in DETR /
    UperNet / Mask2Former configs with ``backbone="hf-hub:REPO"``, or your own). Each one is matched by timm itself:
    the published folder is opened with the same ``out_indices``, so key names line up whatever the wrapper.

    Args:
        model: The detection / segmentation model.
        source: ``"hf-hub:user/repo"``, ``"local-dir:PATH"`` or a folder path.

    Returns:
        The names (in ``model``) of the feature extractors that were filled.

    Raises:
        ValueError: ``model`` holds no timm feature extractor, or a weight of one was not in the published backbone.
    """
    name = _timm_name(source)
    filled = []
    for module_name, module in model.named_modules():
        info = getattr(module, "feature_info", None)
        if not hasattr(info, "out_indices"):  # only timm's feature wrappers (FeatureListNet, FeatureGetterNet...)
            continue
        out_indices = tuple(info.out_indices)  # type: ignore[union-attr]
        published = timm.create_model(name, pretrained=True, features_only=True, out_indices=out_indices).state_dict()
        target = module.state_dict()
        missing = sorted(set(target) - set(published))
        if missing:
            raise ValueError(f"{source} has no weights for {len(missing)} backbone entries of {module_name}: "
                             f"{missing[:5]}")  # fmt: skip
        unused = sorted(k for k in set(published) - set(target) if not k.endswith(_DROPPABLE_SUFFIXES))
        if unused:
            raise ValueError(f"{module_name} has no place for {len(unused)} published weights: {unused[:5]}")
        module.load_state_dict({k: published[k] for k in target}, strict=True)
        filled.append(module_name)
    if not filled:
        raise ValueError("The model holds no timm feature extractor (features_only model) to load a backbone into.")
    return filled


class TimmFPNBackbone(nn.Module):
    """A feature pyramid network over a published timm backbone, for torchvision's detection models.

    ``forward(images)`` returns ``OrderedDict[str, (B, out_channels, H_i, W_i)]`` from the finest level to the
    coarsest, plus a max-pooled extra level, like torchvision's ``BackboneWithFPN``.

    Args:
        source: ``"hf-hub:user/repo"``, ``"local-dir:PATH"`` or a folder path.
        out_indices: Feature levels of the backbone to use; defaults to its last 4 (or fewer).
        out_channels: Channels of every pyramid level.
        pretrained: Load the published weights (``False`` only for tests of the architecture).
        **timm_kwargs: More ``timm.create_model`` arguments. ViTs get ``dynamic_img_size=True`` so that any image
            size works.
    """

    def __init__(
        self,
        source: str,
        out_indices: tuple[int, ...] | None = None,
        out_channels: int = 256,
        pretrained: bool = True,
        **timm_kwargs: Any,
    ) -> None:
        super().__init__()
        name = _timm_name(source)
        with torch.device("meta"):  # the architecture only: which levels exist, is it a ViT
            probe = timm.create_model(name, pretrained=False, features_only=True, **timm_kwargs)
        if hasattr(probe, "model") and hasattr(probe.model, "patch_embed"):  # a ViT: accept any image size
            timm_kwargs.setdefault("dynamic_img_size", True)
        probe_info: Any = probe.feature_info
        if out_indices is None:
            out_indices = tuple(probe_info.out_indices)[-4:]
        self.body = timm.create_model(
            name, pretrained=pretrained, features_only=True, out_indices=out_indices, **timm_kwargs
        )
        info: Any = self.body.feature_info
        channels, reductions = info.channels(), info.reduction()
        # One stride only (ViTs): rescale the last map to 4 strides, ViTDet's simple feature pyramid.
        self.scales: tuple[float, ...] = (4.0, 2.0, 1.0, 0.5) if len(set(reductions)) == 1 else ()
        in_channels = [channels[-1]] * len(self.scales) if self.scales else list(channels)
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels
        self.num_levels = len(in_channels) + 1  # the maps forward returns: the pyramid and its pooled extra level

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps = self.body(images)
        if self.scales:
            last = maps[-1]
            maps = [
                F.interpolate(last, scale_factor=s, mode="bilinear", align_corners=False) if s > 1
                else F.max_pool2d(last, kernel_size=int(1 / s)) if s < 1 else last
                for s in self.scales
            ]  # fmt: skip
        return self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps)))

    def anchor_generator(self, base_size: int = 32) -> Any:
        """torchvision's ``AnchorGenerator`` with one size per level (doubling from ``base_size``)."""
        from torchvision.models.detection.anchor_utils import AnchorGenerator

        sizes = tuple((base_size * 2**i,) for i in range(self.num_levels))
        return AnchorGenerator(sizes=sizes, aspect_ratios=((0.5, 1.0, 2.0),) * self.num_levels)

    def roi_pool(self, output_size: int = 7) -> Any:
        """torchvision's ``MultiScaleRoIAlign`` over this pyramid's levels (without the pooled extra one)."""
        from torchvision.ops import MultiScaleRoIAlign

        names = [str(i) for i in range(self.num_levels - 1)]
        return MultiScaleRoIAlign(featmap_names=names, output_size=output_size, sampling_ratio=2)
