"""Negative cosine similarity: SimSiam's loss (Chen & He, 2021, arXiv:2011.10566, eq. 1), BYOL's up to constants."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ssl_hub._validation import check_positive
from ssl_hub.losses.utils import at_least_float32


class NegativeCosineSimilarity(nn.Module):
    """``-cos(x0, x1)`` averaged over the batch, with the arguments of ``torch.nn.CosineSimilarity``.

    SimSiam's ``D(p, z) = -p / ||p|| . z / ||z||`` (eq. 1); the caller stops the target's gradient (``z.detach()``).
    BYOL's ``||p / ||p|| - z / ||z|| ||^2 = 2 - 2 cos(p, z)`` (Grill et al., 2020, eq. 2) is ``2 + 2 *`` this loss,
    so it has the same minimiser and a gradient twice as large.

    Args:
        dim: Dimension along which the cosine similarity is computed.
        eps: Lower bound of each norm (guards against division by zero).
    """

    def __init__(self, dim: int = 1, eps: float = 1e-8) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise ValueError(f"NegativeCosineSimilarity: dim must be an integer, got {dim!r}.")
        check_positive("eps", eps, "NegativeCosineSimilarity")
        self.dim = dim
        self.eps = eps

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """Mean negative cosine similarity of two tensors of one shape, e.g. ``(B, D)`` predictions and targets."""
        if x0.shape != x1.shape:
            raise ValueError(
                "NegativeCosineSimilarity expects two tensors of one shape, got "
                f"{tuple(x0.shape)} and {tuple(x1.shape)}."
            )
        return -F.cosine_similarity(at_least_float32(x0), at_least_float32(x1), dim=self.dim, eps=self.eps).mean()
