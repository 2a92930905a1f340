"""NNCLR's heads (Dwibedi et al., 2021, arXiv:2104.14548, "Implementation details")."""

from __future__ import annotations

from torch import nn

from ssl_hub.heads.projection import ProjectionHead


class NNCLRProjectionHead(ProjectionHead):
    """NNCLR's projector: 3 linear layers ``[2048, 2048, d]``, each followed by BN, ReLU after all but the last.

    Args:
        input_dim: Backbone feature width.
        hidden_dim: Width of the two hidden layers.
        output_dim: Embedding width ``d`` (256 in the paper).
    """

    def __init__(self, input_dim: int = 2048, hidden_dim: int = 2048, output_dim: int = 256) -> None:
        super().__init__(
            [
                (input_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU()),
                (hidden_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU()),
                (hidden_dim, output_dim, nn.BatchNorm1d(output_dim), None),
            ]
        )


class NNCLRPredictionHead(ProjectionHead):
    """NNCLR's predictor: 2 linear layers ``[4096, d]``, BN and ReLU after the hidden one only.

    Args:
        input_dim: Embedding width ``d``.
        hidden_dim: Width of the hidden layer.
        output_dim: Width of the prediction (``d``).
    """

    def __init__(self, input_dim: int = 256, hidden_dim: int = 4096, output_dim: int = 256) -> None:
        super().__init__(
            [
                (input_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU()),
                (hidden_dim, output_dim, None, None),
            ]
        )
