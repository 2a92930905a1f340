"""VICReg's expander (Bardes et al., ICLR 2022, arXiv:2105.04906, section 4.2), with LightlySSL's name."""

from __future__ import annotations

from torch import nn

from ssl_hub._validation import check_positive_int
from ssl_hub.heads.projection import Block, ProjectionHead


class VICRegProjectionHead(ProjectionHead):
    """``num_layers`` linear layers of which all but the last are followed by batch normalisation and ReLU.

    The paper's expander has three layers of 8192 units. The loss centres the embeddings, so the last layer's bias
    has no effect; it is kept for the parameter layout LightlySSL checkpoints have.

    Args:
        input_dim: Backbone feature width.
        hidden_dim: Width of the hidden layers.
        output_dim: Embedding width the loss sees.
        num_layers: Number of linear layers (>= 2).
    """

    def __init__(
        self, input_dim: int = 2048, hidden_dim: int = 8192, output_dim: int = 8192, num_layers: int = 3
    ) -> None:
        for name, value in [("input_dim", input_dim), ("hidden_dim", hidden_dim), ("output_dim", output_dim)]:
            check_positive_int(name, value, "VICRegProjectionHead")
        check_positive_int("num_layers", num_layers, "VICRegProjectionHead", minimum=2)
        hidden_blocks: list[Block] = [
            (in_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU())
            for in_dim in [input_dim] + [hidden_dim] * (num_layers - 2)
        ]
        super().__init__([*hidden_blocks, (hidden_dim, output_dim, None, None)])
