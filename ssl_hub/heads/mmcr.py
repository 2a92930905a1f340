"""MMCR's projector (Yerxa et al., 2023, arXiv:2303.03307, and its official code), with LightlySSL's name."""

from __future__ import annotations

from torch import nn

from ssl_hub._validation import check_positive_int
from ssl_hub.heads.projection import Block, ProjectionHead


class MMCRProjectionHead(ProjectionHead):
    """``num_layers`` linear layers with batch normalisation and ReLU, then a final linear layer (8192-8192-512 and
    no biases in the official ImageNet code, after Barlow Twins' projector).

    Args:
        input_dim: Backbone feature width.
        hidden_dim: Width of the hidden layers.
        output_dim: Embedding width the loss sees.
        num_layers: Number of hidden layers.
        batch_norm: Batch-normalise the hidden layers.
        use_bias: Give the linear layers biases.
    """

    def __init__(
        self,
        input_dim: int = 2048,
        hidden_dim: int = 8192,
        output_dim: int = 512,
        num_layers: int = 2,
        batch_norm: bool = True,
        use_bias: bool = False,
    ) -> None:
        for name, value in [("input_dim", input_dim), ("hidden_dim", hidden_dim), ("output_dim", output_dim)]:
            check_positive_int(name, value, "MMCRProjectionHead")
        check_positive_int("num_layers", num_layers, "MMCRProjectionHead")
        hidden: list[Block] = [
            (in_dim, hidden_dim, nn.BatchNorm1d(hidden_dim) if batch_norm else None, nn.ReLU(), use_bias)
            for in_dim in [input_dim] + [hidden_dim] * (num_layers - 1)
        ]
        super().__init__([*hidden, (hidden_dim, output_dim, None, None, use_bias)])
