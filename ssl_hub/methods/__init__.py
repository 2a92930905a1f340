"""SSL methods, one file each; importing a file registers its method."""

from ssl_hub.methods.base import MethodConfig as MethodConfig
from ssl_hub.methods.base import Paper as Paper
from ssl_hub.methods.base import SSLMethod as SSLMethod
from ssl_hub.methods.base import SSLMethodOutput as SSLMethodOutput

# One line per method file (explicit re-exports: `X as X`), in alphabetical order.
from ssl_hub.methods.simclr import SimCLR as SimCLR
from ssl_hub.methods.simclr import SimCLRConfig as SimCLRConfig
