"""Projection and prediction heads, with LightlySSL's names."""

# One line per heads file (explicit re-exports: `X as X`).
from ssl_hub.heads.aim import AIMPredictionHead as AIMPredictionHead
from ssl_hub.heads.aim import AIMPredictionHeadBlock as AIMPredictionHeadBlock
from ssl_hub.heads.barlow_twins import BarlowTwinsProjectionHead as BarlowTwinsProjectionHead
from ssl_hub.heads.byol import BYOLPredictionHead as BYOLPredictionHead
from ssl_hub.heads.byol import BYOLProjectionHead as BYOLProjectionHead
from ssl_hub.heads.byol import SimSiamPredictionHead as SimSiamPredictionHead
from ssl_hub.heads.byol import SimSiamProjectionHead as SimSiamProjectionHead
from ssl_hub.heads.densecl import DenseCLDenseProjectionHead as DenseCLDenseProjectionHead
from ssl_hub.heads.densecl import DenseCLProjectionHead as DenseCLProjectionHead
from ssl_hub.heads.dino import DINOProjectionHead as DINOProjectionHead
from ssl_hub.heads.lejepa import LeJEPAProjectionHead as LeJEPAProjectionHead
from ssl_hub.heads.mmcr import MMCRProjectionHead as MMCRProjectionHead
from ssl_hub.heads.moco import MoCoProjectionHead as MoCoProjectionHead
from ssl_hub.heads.msn import MSNProjectionHead as MSNProjectionHead
from ssl_hub.heads.nnclr import NNCLRPredictionHead as NNCLRPredictionHead
from ssl_hub.heads.nnclr import NNCLRProjectionHead as NNCLRProjectionHead
from ssl_hub.heads.projection import ProjectionHead as ProjectionHead
from ssl_hub.heads.projection import SimCLRProjectionHead as SimCLRProjectionHead
from ssl_hub.heads.smog import SMoGPredictionHead as SMoGPredictionHead
from ssl_hub.heads.smog import SMoGProjectionHead as SMoGProjectionHead
from ssl_hub.heads.smog import SMoGPrototypes as SMoGPrototypes
from ssl_hub.heads.swav import SwaVProjectionHead as SwaVProjectionHead
from ssl_hub.heads.swav import SwaVPrototypes as SwaVPrototypes
from ssl_hub.heads.tico import TiCoProjectionHead as TiCoProjectionHead
from ssl_hub.heads.vicreg import VICRegProjectionHead as VICRegProjectionHead
