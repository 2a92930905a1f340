"""Multi-view augmentations (torchvision.transforms.v2), with LightlySSL's names and the papers' defaults."""

from ssl_hub.transforms.multi_view import IMAGENET_NORMALIZE, MultiViewTransform
from ssl_hub.transforms.simclr import SimCLRTransform, SimCLRViewTransform

__all__ = ["IMAGENET_NORMALIZE", "MultiViewTransform", "SimCLRTransform", "SimCLRViewTransform"]
