"""Multi-view augmentations (torchvision.transforms.v2), with LightlySSL's names and the papers' defaults."""

# One line per transform (explicit re-exports: `X as X`).
from ssl_hub.transforms.aim import AIMTransform as AIMTransform
from ssl_hub.transforms.byol import BYOLTransform as BYOLTransform
from ssl_hub.transforms.byol import BYOLView1Transform as BYOLView1Transform
from ssl_hub.transforms.byol import BYOLView2Transform as BYOLView2Transform
from ssl_hub.transforms.densecl import DenseCLTransform as DenseCLTransform
from ssl_hub.transforms.dino import DINOTransform as DINOTransform
from ssl_hub.transforms.ibot import IBOTTransform as IBOTTransform
from ssl_hub.transforms.ijepa import IJEPATransform as IJEPATransform
from ssl_hub.transforms.lejepa import LeJEPATransform as LeJEPATransform
from ssl_hub.transforms.located_crop import LocatedViewTransform as LocatedViewTransform
from ssl_hub.transforms.located_crop import RandomResizedCropAndFlip as RandomResizedCropAndFlip
from ssl_hub.transforms.mae import MAETransform as MAETransform
from ssl_hub.transforms.mmcr import MMCRTransform as MMCRTransform
from ssl_hub.transforms.moco import MoCoV2Transform as MoCoV2Transform
from ssl_hub.transforms.msn import MSNTransform as MSNTransform
from ssl_hub.transforms.multi_crop import local_crop_size as local_crop_size
from ssl_hub.transforms.multi_view import IMAGENET_NORMALIZE as IMAGENET_NORMALIZE
from ssl_hub.transforms.multi_view import MultiViewTransform as MultiViewTransform
from ssl_hub.transforms.simclr import SimCLRTransform as SimCLRTransform
from ssl_hub.transforms.simclr import SimCLRViewTransform as SimCLRViewTransform
from ssl_hub.transforms.simmim import SimMIMTransform as SimMIMTransform
from ssl_hub.transforms.simsiam import SimSiamTransform as SimSiamTransform
from ssl_hub.transforms.simsiam import SimSiamViewTransform as SimSiamViewTransform
from ssl_hub.transforms.smog import SMoGTransform as SMoGTransform
from ssl_hub.transforms.swav import SwaVTransform as SwaVTransform
from ssl_hub.transforms.tico import TiCoTransform as TiCoTransform
from ssl_hub.transforms.tico import TiCoView1Transform as TiCoView1Transform
from ssl_hub.transforms.tico import TiCoView2Transform as TiCoView2Transform
from ssl_hub.transforms.vicreg import VICRegTransform as VICRegTransform
from ssl_hub.transforms.vicreg import VICRegViewTransform as VICRegViewTransform
from ssl_hub.transforms.vicregl import VICRegLTransform as VICRegLTransform
from ssl_hub.transforms.view import photometric_augmentation as photometric_augmentation
from ssl_hub.transforms.view import view_augmentation as view_augmentation
