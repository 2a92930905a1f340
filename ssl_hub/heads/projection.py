"""MLP projection / prediction heads built from (in, out, norm, activation) blocks, as in LightlySSL."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ssl_hub._validation import check_positive_int

# (input_dim, output_dim, norm or None, activation or None[, bias of the linear layer])
Block = tuple[int, int, nn.Module | None, nn.Module | None] | tuple[int, int, nn.Module | None, nn.Module | None, bool]


class ProjectionHead(nn.Module):
    """A stack of ``Linear -> [norm] -> [activation]`` blocks.

    A linear layer followed by a normalisation layer has no bias (the norm's shift replaces it), unless its block
    says otherwise.

    Args:
        blocks: ``(input_dim, output_dim, norm_or_None, activation_or_None)`` for each layer, in order, optionally
            followed by whether the linear layer has a bias (as LightlySSL's blocks).
    """

    def __init__(self, blocks: Sequence[Block]) -> None:
        super().__init__()
        if not blocks:
            raise ValueError("ProjectionHead needs at least one block.")
        layers: list[nn.Module] = []
        for input_dim, output_dim, norm, activation, *bias in blocks:
            layers.append(nn.Linear(input_dim, output_dim, bias=bias[0] if bias else norm is None))
            if norm is not None:
                layers.append(norm)
            if activation is not None:
                layers.append(activation)
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, input_dim) -> (B, output_dim)``."""
        return self.layers(x)


class SimCLRProjectionHead(ProjectionHead):
    """SimCLR's MLP head (Chen et al., 2020): ``num_layers`` linear layers with BN + ReLU between them.

    With ``batch_norm`` the output is batch-normalised too, as in SimCLR v2 (Chen et al., 2020, arXiv:2006.10029).

    Args:
        input_dim: Backbone feature width.
        hidden_dim: Width of the hidden layers (the paper uses the backbone width).
        output_dim: Embedding width the loss sees (128 in the paper).
        num_layers: Number of linear layers (2 in SimCLR, 3 in SimCLR v2).
        batch_norm: Use batch normalisation.
    """

    def __init__(
        self,
        input_dim: int = 2048,
        hidden_dim: int = 2048,
        output_dim: int = 128,
        num_layers: int = 2,
        batch_norm: bool = True,
    ) -> None:
        check_positive_int("num_layers", num_layers, "SimCLRProjectionHead", minimum=2)
        hidden_blocks: list[Block] = [
            (in_dim, hidden_dim, nn.BatchNorm1d(hidden_dim) if batch_norm else None, nn.ReLU())
            for in_dim in [input_dim] + [hidden_dim] * (num_layers - 2)
        ]
        output_block: Block = (hidden_dim, output_dim, nn.BatchNorm1d(output_dim) if batch_norm else None, None)
        super().__init__([*hidden_blocks, output_block])
