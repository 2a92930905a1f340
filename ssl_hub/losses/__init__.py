"""SSL losses, one file each, with LightlySSL's names and the papers' defaults."""

# One line per loss file (explicit re-exports: `X as X`).
from ssl_hub.losses.barlow_twins import BarlowTwinsLoss as BarlowTwinsLoss
from ssl_hub.losses.dcl import DCLLoss as DCLLoss
from ssl_hub.losses.dcl import DCLWLoss as DCLWLoss
from ssl_hub.losses.densecl import DenseCLLoss as DenseCLLoss
from ssl_hub.losses.dino import DINOLoss as DINOLoss
from ssl_hub.losses.ibot import IBOTPatchLoss as IBOTPatchLoss
from ssl_hub.losses.ijepa import IJEPALoss as IJEPALoss
from ssl_hub.losses.info_nce import InfoNCELoss as InfoNCELoss
from ssl_hub.losses.koleo import KoLeoLoss as KoLeoLoss
from ssl_hub.losses.lejepa import LeJEPALoss as LeJEPALoss
from ssl_hub.losses.mae import MAELoss as MAELoss
from ssl_hub.losses.mmcr import MMCRLoss as MMCRLoss
from ssl_hub.losses.msn import MSNLoss as MSNLoss
from ssl_hub.losses.negative_cosine_similarity import NegativeCosineSimilarity as NegativeCosineSimilarity
from ssl_hub.losses.ntxent import NTXentLoss as NTXentLoss
from ssl_hub.losses.pmsn import PMSNCustomLoss as PMSNCustomLoss
from ssl_hub.losses.pmsn import PMSNLoss as PMSNLoss
from ssl_hub.losses.pmsn import power_law_distribution as power_law_distribution
from ssl_hub.losses.sigreg import SIGReg as SIGReg
from ssl_hub.losses.simmim import SimMIMLoss as SimMIMLoss
from ssl_hub.losses.sinkhorn_dino import SinkhornDINOLoss as SinkhornDINOLoss
from ssl_hub.losses.smog import SMoGLoss as SMoGLoss
from ssl_hub.losses.swav import SwaVLoss as SwaVLoss
from ssl_hub.losses.swav import sinkhorn as sinkhorn
from ssl_hub.losses.tico import TiCoLoss as TiCoLoss
from ssl_hub.losses.vicreg import VICRegLoss as VICRegLoss
from ssl_hub.losses.vicregl import VICRegLLoss as VICRegLLoss
