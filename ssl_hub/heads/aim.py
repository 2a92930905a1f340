"""AIM's prediction head (El-Nouby et al., 2024, arXiv:2401.08541, section 3): residual MLP blocks per patch."""

from __future__ import annotations

import torch
from timm.layers import LayerNorm, Mlp
from torch import nn


class AIMPredictionHeadBlock(nn.Module):
    """One residual block of the head: ``x + MLP(LayerNorm(x))``, the MLP without biases (AIM drops them).

    Args:
        input_dim: Width of the block's input and output.
        output_dim: Width of the MLP's output (the input width, for the residual).
        mlp_ratio: Hidden width of the MLP over ``input_dim`` (4, as every MLP in AIM).
        proj_drop: Dropout in the MLP.
    """

    def __init__(self, input_dim: int, output_dim: int, mlp_ratio: float = 4.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.norm = LayerNorm(input_dim)
        self.mlp = Mlp(input_dim, int(input_dim * mlp_ratio), output_dim, bias=False, drop=proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))  # (..., D)


class AIMPredictionHead(nn.Module):
    """``Linear -> num_blocks x AIMPredictionHeadBlock -> LayerNorm -> Linear``, applied to each patch token.

    AIM puts "N blocks of MLP" on top of the trunk, each patch independently: 12 residual blocks (the paper; the
    authors confirm the residuals in apple/ml-aim#32) of width 2048 (LightlySSL's ``AIMPredictionHead``, whose head
    the authors checked, lightly-ai/lightly#1479). The head is heavy by design: 404M parameters at the defaults,
    whatever the trunk; pass smaller ``hidden_dim`` / ``num_blocks`` for small trunks.

    Args:
        input_dim: Width of the patch tokens.
        output_dim: Pixels per patch (``p * p * C``).
        hidden_dim: Width of the blocks.
        num_blocks: Number of residual MLP blocks.
        mlp_ratio: Hidden width of each block's MLP over ``hidden_dim``.
        proj_drop: Dropout in the blocks' MLPs.
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        hidden_dim: int = 2048,
        num_blocks: int = 12,
        mlp_ratio: float = 4.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            nn.Linear(input_dim, hidden_dim, bias=False),
            *[AIMPredictionHeadBlock(hidden_dim, hidden_dim, mlp_ratio, proj_drop) for _ in range(num_blocks)],
            LayerNorm(hidden_dim),
            nn.Linear(hidden_dim, output_dim, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., input_dim)`` patch tokens -> ``(..., output_dim)`` pixels."""
        return self.blocks(x)
