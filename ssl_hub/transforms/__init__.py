"""Multi-view augmentations (torchvision.transforms.v2), with LightlySSL's names and the papers' defaults."""

# One line per transform (explicit re-exports: `X as X`).
from ssl_hub.transforms.byol import BYOLTransform as BYOLTransform
from ssl_hub.transforms.byol import BYOLView1Transform as BYOLView1Transform
from ssl_hub.transforms.byol import BYOLView2Transform as BYOLView2Transform
from ssl_hub.transforms.multi_view import IMAGENET_NORMALIZE as IMAGENET_NORMALIZE
from ssl_hub.transforms.multi_view import MultiViewTransform as MultiViewTransform
from ssl_hub.transforms.simclr import SimCLRTransform as SimCLRTransform
from ssl_hub.transforms.simclr import SimCLRViewTransform as SimCLRViewTransform
from ssl_hub.transforms.view import view_augmentation as view_augmentation
