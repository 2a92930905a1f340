"""Projection and prediction heads, with LightlySSL's names."""

# One line per heads file (explicit re-exports: `X as X`).
from ssl_hub.heads.projection import ProjectionHead as ProjectionHead
from ssl_hub.heads.projection import SimCLRProjectionHead as SimCLRProjectionHead
