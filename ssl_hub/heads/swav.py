"""SwaV's projection head and prototypes (Caron et al., 2020, arXiv:2006.09882, official ``src/resnet50.py``)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ssl_hub._validation import check_positive_int
from ssl_hub.heads.projection import ProjectionHead


class SwaVProjectionHead(ProjectionHead):
    """SwaV's projector: ``Linear -> BN -> ReLU -> Linear`` (2048 hidden, 128 out in the paper).

    Args:
        input_dim: Backbone feature width.
        hidden_dim: Width of the hidden layer.
        output_dim: Width of the embedding compared with the prototypes.
    """

    def __init__(self, input_dim: int = 2048, hidden_dim: int = 2048, output_dim: int = 128) -> None:
        super().__init__(
            [
                (input_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU()),
                (hidden_dim, output_dim, None, None),
            ]
        )


class SwaVPrototypes(nn.Module):
    """``K`` trainable prototype vectors; scores of an embedding are its dot products with them.

    The prototypes are kept on the unit sphere by :meth:`normalize`, which the SwaV method calls before every
    training forward pass (as the official code does before each iteration), so with L2-normalised embeddings the
    scores are cosine similarities. As in the official code the layer has no bias unless ``bias`` is set.

    Args:
        input_dim: Width of the embeddings.
        n_prototypes: Number of prototypes ``K`` (3000 for ImageNet in the paper).
        n_steps_frozen_prototypes: Optimizer steps at the start of training during which the prototypes do not
            train (313 in the official code: one epoch at batch 4096); the SwaV method's callbacks apply it, a plain
            loop drops the prototypes' gradients itself.
        bias: Add a trainable bias per prototype to its scores (LightlySSL's ``SwaVPrototypes`` has one, a
            ``nn.Linear`` default; the official code has none). Sinkhorn-Knopp's codes are blind to it (it scales each
            prototype's row), so it only shifts the predictions.
    """

    def __init__(
        self, input_dim: int = 128, n_prototypes: int = 3000, n_steps_frozen_prototypes: int = 0, bias: bool = False
    ) -> None:
        super().__init__()
        check_positive_int("n_prototypes", n_prototypes, type(self).__name__)
        check_positive_int("n_steps_frozen_prototypes", n_steps_frozen_prototypes, type(self).__name__, minimum=0)
        self.n_steps_frozen_prototypes = n_steps_frozen_prototypes
        self.layer = nn.Linear(input_dim, n_prototypes, bias=bias)
        self.normalize()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores ``(B, n_prototypes)`` of embeddings ``(B, input_dim)``."""
        return self.layer(x)

    @torch.no_grad()
    def normalize(self) -> None:
        """Project every prototype back onto the unit sphere."""
        self.layer.weight.copy_(F.normalize(self.layer.weight, dim=1))
