"""Barlow Twins' projector (Zbontar et al., 2021, arXiv:2103.03230, section 2), with LightlySSL's name."""

from __future__ import annotations

from torch import nn

from ssl_hub._validation import check_positive_int
from ssl_hub.heads.projection import ProjectionHead


class BarlowTwinsProjectionHead(ProjectionHead):
    """Three linear layers, the first two followed by batch normalisation and ReLU (8192-8192-8192 in the paper).

    The loss standardises the output over the batch, so the last layer's bias has no effect; it is kept for the
    parameter layout LightlySSL checkpoints have.

    Args:
        input_dim: Backbone feature width.
        hidden_dim: Width of the two hidden layers.
        output_dim: Embedding width the loss sees.
    """

    def __init__(self, input_dim: int = 2048, hidden_dim: int = 8192, output_dim: int = 8192) -> None:
        for name, value in [("input_dim", input_dim), ("hidden_dim", hidden_dim), ("output_dim", output_dim)]:
            check_positive_int(name, value, "BarlowTwinsProjectionHead")
        super().__init__(
            [
                (input_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU()),
                (hidden_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU()),
                (hidden_dim, output_dim, None, None),
            ]
        )
