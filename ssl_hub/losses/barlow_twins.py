"""Barlow Twins' redundancy-reduction loss (Zbontar et al., 2021, ICML, arXiv:2103.03230)."""

from __future__ import annotations

import torch
from torch import nn

from ssl_hub import distributed
from ssl_hub._validation import check_non_negative
from ssl_hub.losses.utils import at_least_float32, sum_of_terms

# Added to the variance before the square root, as the official code's BatchNorm1d(affine=False) does.
BATCH_NORM_EPS = 1e-5


class BarlowTwinsLoss(nn.Module):
    """Push the cross-correlation matrix of two views' embeddings towards the identity (paper eq. 1-2).

    Each embedding dimension is standardised over the batch (mean 0, std 1, biased variance as batch
    normalisation), then ``C = z_a^T z_b / N`` and::

        loss = sum_i (1 - C_ii)^2 + lambda_param * sum_{i != j} C_ij^2

    With ``gather_distributed`` the means, variances and ``C`` are those of the global batch of all ranks: each
    rank sums its share through an all-reduce that keeps the gradient (the official code's all-reduce of ``C``
    over SyncBatchNorm-normalised embeddings), so every rank gets the loss of the global batch.

    Args:
        lambda_param: Weight of the redundancy-reduction (off-diagonal) term (>= 0).
        gather_distributed: Compute the statistics over all ranks (no effect in a single process).
    """

    def __init__(self, lambda_param: float = 5e-3, gather_distributed: bool = False) -> None:
        super().__init__()
        check_non_negative("lambda_param", lambda_param, "BarlowTwinsLoss")
        self.lambda_param = lambda_param
        self.gather_distributed = gather_distributed

    def _sum_over_ranks(self, tensor: torch.Tensor) -> torch.Tensor:
        return distributed.all_reduce_sum(tensor) if self.gather_distributed else tensor

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        """Loss of two ``(B, D)`` batches of embeddings, row ``i`` of each from the same image."""
        return sum_of_terms(self.terms(z_a, z_b))

    def terms(self, z_a: torch.Tensor, z_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss's two weighted terms, ``invariance`` (on the diagonal) and ``redundancy`` (off it), which sum
        to it."""
        if z_a.shape != z_b.shape or z_a.ndim != 2:
            raise ValueError(
                f"BarlowTwinsLoss expects two (B, D) tensors of one shape, got {z_a.shape} and {z_b.shape}."
            )
        z = torch.stack([at_least_float32(z_a), at_least_float32(z_b)])  # (2, B, D): both views at once
        count = z.new_full((2, 1), z.shape[1])  # (2, 1)
        sums = self._sum_over_ranks(torch.cat([z.sum(dim=1), count], dim=1))  # (2, D + 1)
        size = sums[0, -1]  # global batch size N
        if size < 2:
            raise ValueError("BarlowTwinsLoss needs at least 2 images in the (global) batch to standardise them.")
        centered = z - (sums[:, :-1] / size).unsqueeze(1)  # (2, B, D)
        variance = self._sum_over_ranks(centered.pow(2).sum(dim=1)) / size  # (2, D)
        normalized = centered / torch.sqrt(variance + BATCH_NORM_EPS).unsqueeze(1)  # (2, B, D)
        correlation = self._sum_over_ranks(normalized[0].T @ normalized[1]) / size  # (D, D)
        diagonal = torch.diagonal(correlation)  # (D,)
        invariance = (1.0 - diagonal).pow(2).sum()
        eye = torch.eye(correlation.shape[0], dtype=torch.bool, device=correlation.device)
        redundancy = correlation.masked_fill(eye, 0.0).pow(2).sum()
        return {"invariance": invariance, "redundancy": self.lambda_param * redundancy}
