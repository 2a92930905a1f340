"""SSL methods, one file each; importing a file registers its method."""

from ssl_hub.methods.base import MethodConfig, Paper, SSLMethod, SSLMethodOutput
from ssl_hub.methods.simclr import SimCLR, SimCLRConfig

__all__ = ["MethodConfig", "Paper", "SSLMethod", "SSLMethodOutput", "SimCLR", "SimCLRConfig"]
