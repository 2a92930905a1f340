"""DenseCL's augmentation (Wang et al., CVPR 2021, arXiv:2011.09157, section 4): MoCo v2's, unchanged.

The official ``configs/selfsup/densecl/densecl_imagenet_200ep.py``: random resized crop (scale 0.2-1), colour jitter
(0.4, 0.4, 0.4, 0.1) with probability 0.8, grayscale 0.2, Gaussian blur (sigma 0.1-2) with probability 0.5,
horizontal flip, ImageNet normalisation.
"""

from __future__ import annotations

from ssl_hub.transforms.moco import MoCoV2Transform


class DenseCLTransform(MoCoV2Transform):
    """Two DenseCL views of one image: :class:`~ssl_hub.transforms.moco.MoCoV2Transform` with the same arguments and
    defaults (LightlySSL's ``DenseCLTransform`` is the same subclass)."""
