"""SMoG's heads and group features (Pang et al., 2022, arXiv:2207.06167), with LightlySSL's names."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ssl_hub._validation import check_positive, check_probability
from ssl_hub.heads.projection import ProjectionHead


class SMoGProjectionHead(ProjectionHead):
    """SMoG's projector: ``Linear -> BN -> ReLU -> Linear -> BN`` (the output BN has no affine parameters).

    "The two kinds of head are both a two-layer MLP and their hidden layer is followed by a BatchNorm and an
    activation function. (...) The output layer of projection head also has BN" (the paper, as quoted by
    LightlySSL's ``SMoGProjectionHead``).

    Args:
        input_dim: Backbone feature width.
        hidden_dim: Width of the hidden layer.
        output_dim: Width of the projection.
    """

    def __init__(self, input_dim: int = 2048, hidden_dim: int = 2048, output_dim: int = 128) -> None:
        super().__init__(
            [
                (input_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU()),
                (hidden_dim, output_dim, nn.BatchNorm1d(output_dim, affine=False), None),
            ]
        )


class SMoGPredictionHead(ProjectionHead):
    """SMoG's predictor on the online branch: ``Linear -> BN -> ReLU -> Linear``.

    Args:
        input_dim: Width of the projection it reads.
        hidden_dim: Width of the hidden layer.
        output_dim: Width of the prediction.
    """

    def __init__(self, input_dim: int = 128, hidden_dim: int = 2048, output_dim: int = 128) -> None:
        super().__init__(
            [
                (input_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.ReLU()),
                (hidden_dim, output_dim, None, None),
            ]
        )


class SMoGPrototypes(nn.Module):
    """The group features of synchronous momentum grouping.

    Each embedding belongs to the group whose feature is most cosine-similar; after each batch every group feature
    moves towards the mean of its members: ``g_k <- beta * g_k + (1 - beta) * mean_{i in k} z_i`` (groups without
    members keep their feature). The features are a buffer, not trained by gradients: they are part of the state
    (checkpoints, ``ssl/``) but not of the optimizer.

    Args:
        group_features: Initial group features ``(n_groups, dim)``.
        beta: Momentum of the group features.
    """

    group_features: torch.Tensor

    def __init__(self, group_features: torch.Tensor, beta: float) -> None:
        super().__init__()
        if group_features.ndim != 2:
            raise ValueError(
                f"SMoGPrototypes: group_features must be (n_groups, dim), got {tuple(group_features.shape)}."
            )
        check_probability("beta", beta, type(self).__name__)
        self.beta = beta
        self.register_buffer("group_features", group_features.detach().clone())

    def forward(self, x: torch.Tensor, group_features: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
        """Logits ``(B, n_groups)``: cosine similarities of ``x`` ``(B, dim)`` and ``group_features`` over
        ``temperature``."""
        check_positive("temperature", temperature, type(self).__name__)
        return F.normalize(x, dim=1) @ F.normalize(group_features, dim=1).T / temperature

    @torch.no_grad()
    def assign_groups(self, x: torch.Tensor) -> torch.Tensor:
        """Index ``(B,)`` of the group of each embedding of ``x`` ``(B, dim)``: the most cosine-similar feature."""
        return self.forward(x, self.group_features, temperature=1.0).argmax(dim=1)

    @torch.no_grad()
    def get_updated_group_features(self, x: torch.Tensor) -> torch.Tensor:
        """The group features after the momentum update with the embeddings ``x`` ``(B, dim)`` (not stored)."""
        x = x.detach().to(self.group_features.dtype)
        assignments = self.assign_groups(x)  # (B,)
        n_groups = self.group_features.shape[0]
        sums = torch.zeros_like(self.group_features).index_add_(0, assignments, x)  # (n_groups, dim)
        counts = torch.bincount(assignments, minlength=n_groups).unsqueeze(1)  # (n_groups, 1)
        means = sums / counts.clamp(min=1)
        moved = self.beta * self.group_features + (1.0 - self.beta) * means
        return torch.where(counts > 0, moved, self.group_features)

    @torch.no_grad()
    def set_group_features(self, x: torch.Tensor) -> None:
        """Store ``x`` ``(n_groups, dim)`` as the group features."""
        if x.shape != self.group_features.shape:
            raise ValueError(
                f"SMoGPrototypes holds {tuple(self.group_features.shape)} group features, got {tuple(x.shape)}."
            )
        self.group_features.copy_(x)
