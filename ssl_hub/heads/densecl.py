"""DenseCL's global and dense projection heads (Wang et al., CVPR 2021, arXiv:2011.09157, section 3.2)."""

from __future__ import annotations

import torch
from torch import nn

from ssl_hub._validation import check_positive_int
from ssl_hub.heads.projection import ProjectionHead


class DenseCLProjectionHead(ProjectionHead):
    """DenseCL's global projection head: ``Linear -> ReLU -> Linear``, MoCo v2's MLP without normalisation.

    LightlySSL's name and defaults (the official ``DenseCLNeck.mlp``: 2048 -> 2048 -> 128 on ResNet-50). Being
    linear over the last dimension, it also maps ``(B, N, input_dim)`` tokens location by location.

    Args:
        input_dim: Width of the pooled backbone features.
        hidden_dim: Hidden width.
        output_dim: Embedding width the loss sees.
    """

    def __init__(self, input_dim: int = 2048, hidden_dim: int = 2048, output_dim: int = 128) -> None:
        for name, value in [("input_dim", input_dim), ("hidden_dim", hidden_dim), ("output_dim", output_dim)]:
            check_positive_int(name, value, "DenseCLProjectionHead")
        super().__init__([(input_dim, hidden_dim, None, nn.ReLU()), (hidden_dim, output_dim, None, None)])


class DenseCLDenseProjectionHead(nn.Module):
    """DenseCL's dense projection head: ``1x1 conv -> ReLU -> 1x1 conv``, one embedding per feature map location.

    The official ``DenseCLNeck.mlp2`` (no grid pooling, ``num_grid=None``): the global head's MLP applied at every
    location, so the dense output keeps the backbone's spatial resolution.

    Args:
        input_dim: Channels of the backbone's dense feature map.
        hidden_dim: Hidden channels.
        output_dim: Embedding width per location.
    """

    def __init__(self, input_dim: int = 2048, hidden_dim: int = 2048, output_dim: int = 128) -> None:
        super().__init__()
        for name, value in [("input_dim", input_dim), ("hidden_dim", hidden_dim), ("output_dim", output_dim)]:
            check_positive_int(name, value, "DenseCLDenseProjectionHead")
        self.layers = nn.Sequential(
            nn.Conv2d(input_dim, hidden_dim, kernel_size=1),
            nn.ReLU(),
            nn.Conv2d(hidden_dim, output_dim, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, input_dim, H, W) -> (B, output_dim, H, W)``."""
        return self.layers(x)
