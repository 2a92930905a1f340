"""SSL methods, one file each; importing a file registers its method."""

# The base classes and one line per method file (explicit re-exports: `X as X`), sorted as isort sorts them.
from ssl_hub.methods.barlowtwins import BarlowTwins as BarlowTwins
from ssl_hub.methods.barlowtwins import BarlowTwinsConfig as BarlowTwinsConfig
from ssl_hub.methods.base import MethodConfig as MethodConfig
from ssl_hub.methods.base import Paper as Paper
from ssl_hub.methods.base import SSLMethod as SSLMethod
from ssl_hub.methods.base import SSLMethodOutput as SSLMethodOutput
from ssl_hub.methods.byol import BYOL as BYOL
from ssl_hub.methods.byol import BYOLConfig as BYOLConfig
from ssl_hub.methods.dcl import DCL as DCL
from ssl_hub.methods.dcl import DCLConfig as DCLConfig
from ssl_hub.methods.dclw import DCLW as DCLW
from ssl_hub.methods.dclw import DCLWConfig as DCLWConfig
from ssl_hub.methods.densecl import DenseCL as DenseCL
from ssl_hub.methods.densecl import DenseCLConfig as DenseCLConfig
from ssl_hub.methods.dino import DINO as DINO
from ssl_hub.methods.dino import DINOConfig as DINOConfig
from ssl_hub.methods.moco import MoCo as MoCo
from ssl_hub.methods.moco import MoCoConfig as MoCoConfig
from ssl_hub.methods.nnclr import NNCLR as NNCLR
from ssl_hub.methods.nnclr import NNCLRConfig as NNCLRConfig
from ssl_hub.methods.simclr import SimCLR as SimCLR
from ssl_hub.methods.simclr import SimCLRConfig as SimCLRConfig
from ssl_hub.methods.simsiam import SimSiam as SimSiam
from ssl_hub.methods.simsiam import SimSiamConfig as SimSiamConfig
from ssl_hub.methods.smog import SMoG as SMoG
from ssl_hub.methods.smog import SMoGConfig as SMoGConfig
from ssl_hub.methods.swav import SwaV as SwaV
from ssl_hub.methods.swav import SwaVConfig as SwaVConfig
from ssl_hub.methods.tico import TiCo as TiCo
from ssl_hub.methods.tico import TiCoConfig as TiCoConfig
from ssl_hub.methods.vicreg import VICReg as VICReg
from ssl_hub.methods.vicreg import VICRegConfig as VICRegConfig
