"""SSL losses, one file each, with LightlySSL's names and the papers' defaults."""

from ssl_hub.losses.ntxent import NTXentLoss

__all__ = ["NTXentLoss"]
