"""Projection and prediction heads, with LightlySSL's names."""

from ssl_hub.heads.projection import ProjectionHead, SimCLRProjectionHead

__all__ = ["ProjectionHead", "SimCLRProjectionHead"]
