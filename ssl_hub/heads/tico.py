"""TiCo's projector (Zhu et al., 2022, arXiv:2206.10698, section 5), with LightlySSL's name."""

from __future__ import annotations

from torch import nn

from ssl_hub._validation import check_positive_int
from ssl_hub.heads.projection import ProjectionHead


class TiCoProjectionHead(ProjectionHead):
    """A linear layer (4096 in the paper), batch normalisation, ReLU, and a final linear layer (256 in the paper).

    Args:
        input_dim: Backbone feature width.
        hidden_dim: Width of the hidden layer.
        output_dim: Embedding width the loss sees (the size of TiCo's covariance matrix).
    """

    def __init__(self, input_dim: int = 2048, hidden_dim: int = 4096, output_dim: int = 256) -> None:
        for name, value in [("input_dim", input_dim), ("hidden_dim", hidden_dim), ("output_dim", output_dim)]:
            check_positive_int(name, value, "TiCoProjectionHead")
        super().__init__(
            [
                (input_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU()),
                (hidden_dim, output_dim, None, None),
            ]
        )
