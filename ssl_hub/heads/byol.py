"""Heads of the non-contrastive siamese methods: BYOL (Grill et al., 2020) and SimSiam (Chen & He, 2021)."""

from __future__ import annotations

from torch import nn

from ssl_hub.heads.projection import ProjectionHead


class BYOLProjectionHead(ProjectionHead):
    """BYOL's projector: ``Linear -> BN -> ReLU -> Linear`` (arXiv:2006.07733, sec. 3.3: 4096 hidden, 256 out).

    Args:
        input_dim: Backbone feature width.
        hidden_dim: Width of the hidden layer.
        output_dim: Width of the projection.
    """

    def __init__(self, input_dim: int = 2048, hidden_dim: int = 4096, output_dim: int = 256) -> None:
        super().__init__(
            [
                (input_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU()),
                (hidden_dim, output_dim, None, None),
            ]
        )


class BYOLPredictionHead(ProjectionHead):
    """BYOL's predictor, the online network's extra MLP: same structure as :class:`BYOLProjectionHead` (sec. 3.3).

    Args:
        input_dim: Width of the projection it reads.
        hidden_dim: Width of the hidden layer.
        output_dim: Width of the prediction (the projection's width).
    """

    def __init__(self, input_dim: int = 256, hidden_dim: int = 4096, output_dim: int = 256) -> None:
        super().__init__(
            [
                (input_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU()),
                (hidden_dim, output_dim, None, None),
            ]
        )


class SimSiamProjectionHead(ProjectionHead):
    """SimSiam's projector: 3 layers, BN after each, ReLU after the first two (arXiv:2011.10566, "Baseline settings").

    The output BN has no affine parameters, as in the official code (facebookresearch/simsiam, ``builder.py``).

    Args:
        input_dim: Backbone feature width.
        hidden_dim: Width of the two hidden layers.
        output_dim: Width of the projection.
    """

    def __init__(self, input_dim: int = 2048, hidden_dim: int = 2048, output_dim: int = 2048) -> None:
        super().__init__(
            [
                (input_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU()),
                (hidden_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU()),
                (hidden_dim, output_dim, nn.BatchNorm1d(output_dim, affine=False), None),
            ]
        )


class SimSiamPredictionHead(ProjectionHead):
    """SimSiam's predictor: a bottleneck ``Linear -> BN -> ReLU -> Linear`` (2048 -> 512 -> 2048).

    Args:
        input_dim: Width of the projection it reads.
        hidden_dim: Width of the bottleneck.
        output_dim: Width of the prediction (the projection's width).
    """

    def __init__(self, input_dim: int = 2048, hidden_dim: int = 512, output_dim: int = 2048) -> None:
        super().__init__(
            [
                (input_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU()),
                (hidden_dim, output_dim, None, None),
            ]
        )
