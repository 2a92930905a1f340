"""SSL losses, one file each, with LightlySSL's names and the papers' defaults."""

# One line per loss file (explicit re-exports: `X as X`).
from ssl_hub.losses.ntxent import NTXentLoss as NTXentLoss
