"""Multi-view augmentations (torchvision.transforms.v2), with LightlySSL's names and the papers' defaults."""

# One line per transform (explicit re-exports: `X as X`).
from ssl_hub.transforms.multi_view import IMAGENET_NORMALIZE as IMAGENET_NORMALIZE
from ssl_hub.transforms.multi_view import MultiViewTransform as MultiViewTransform
from ssl_hub.transforms.simclr import SimCLRTransform as SimCLRTransform
from ssl_hub.transforms.simclr import SimCLRViewTransform as SimCLRViewTransform
