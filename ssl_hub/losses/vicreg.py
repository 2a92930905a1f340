"""VICReg's variance-invariance-covariance loss (Bardes, Ponce, LeCun, ICLR 2022, arXiv:2105.04906)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ssl_hub import distributed
from ssl_hub._validation import check_non_negative
from ssl_hub.losses.utils import at_least_float32, sum_of_terms


def invariance_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared distance of paired ``(B, D)`` embeddings (paper eq. 5), averaged over the batch and, as in the
    official code, over the dimensions too."""
    return F.mse_loss(x, y)


def variance_loss(x: torch.Tensor, eps: float = 1e-4, gamma: float = 1.0) -> torch.Tensor:
    """Hinge on the standard deviation of each dimension over the ``(B, D)`` batch (paper eq. 1-2); over the batch
    of each slot ``k`` of a ``(B, K, D)`` one, averaged.

    ``mean_j max(0, gamma - sqrt(Var(x_j) + eps))`` with the unbiased variance.
    """
    std = torch.sqrt(x.var(dim=0) + eps)  # (D,) or (K, D)
    return F.relu(gamma - std).mean()


def covariance_loss(x: torch.Tensor) -> torch.Tensor:
    """Sum of squared off-diagonal covariances of the ``(B, D)`` batch, divided by ``D`` (paper eq. 3-4).

    A ``(B, K, D)`` batch (``K`` matched locations per image, VICRegL's local term) gives the mean over ``k`` of the
    term of each ``(B, D)`` slice ``x[:, k]``.
    """
    batch_size, dim = x.shape[0], x.shape[-1]
    centered = (x - x.mean(dim=0)).reshape(batch_size, -1, dim).transpose(0, 1)  # (K, B, D)
    covariance = centered.transpose(1, 2) @ centered / (batch_size - 1)  # (K, D, D)
    eye = torch.eye(dim, dtype=torch.bool, device=x.device)
    return covariance.masked_fill(eye, 0.0).pow(2).sum(dim=(1, 2)).mean() / dim


class VICRegLoss(nn.Module):
    """VICReg's loss (paper eq. 6) with the official ``main_vicreg.py``'s scaling, which its defaults are tuned for::

        loss = lambda_param * s(z_a, z_b) + mu_param * (v(z_a) + v(z_b)) / 2 + nu_param * (c(z_a) + c(z_b))

    with ``s`` :func:`invariance_loss`, ``v`` :func:`variance_loss` (``gamma = 1``) and ``c``
    :func:`covariance_loss`. With ``gather_distributed`` the variance and covariance terms use the embeddings of
    all ranks (gathered with their gradient, as the official code does), while the invariance term stays local;
    the mean of the ranks' losses is then the loss of the global batch.

    Args:
        lambda_param: Weight of the invariance term (>= 0).
        mu_param: Weight of the variance term (>= 0).
        nu_param: Weight of the covariance term (>= 0).
        gather_distributed: Compute variance and covariance over all ranks (no effect in a single process).
        eps: Added to the variance before the square root, for numerical stability (>= 0).
    """

    def __init__(
        self,
        lambda_param: float = 25.0,
        mu_param: float = 25.0,
        nu_param: float = 1.0,
        gather_distributed: bool = False,
        eps: float = 1e-4,
    ) -> None:
        super().__init__()
        for name, value in [
            ("lambda_param", lambda_param),
            ("mu_param", mu_param),
            ("nu_param", nu_param),
            ("eps", eps),
        ]:
            check_non_negative(name, value, "VICRegLoss")
        self.lambda_param = lambda_param
        self.mu_param = mu_param
        self.nu_param = nu_param
        self.gather_distributed = gather_distributed
        self.eps = eps

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        """Loss of two ``(B, D)`` batches of embeddings, row ``i`` of each from the same image."""
        return sum_of_terms(self.terms(z_a, z_b))

    def terms(self, z_a: torch.Tensor, z_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss's three weighted terms, ``invariance``, ``variance`` and ``covariance``, which sum to it."""
        if z_a.shape != z_b.shape or z_a.ndim != 2:
            raise ValueError(f"VICRegLoss expects two (B, D) tensors of one shape, got {z_a.shape} and {z_b.shape}.")
        z_a, z_b = at_least_float32(z_a), at_least_float32(z_b)
        invariance = invariance_loss(z_a, z_b)
        if self.gather_distributed:
            z_a, z_b = distributed.gather(z_a), distributed.gather(z_b)  # (W * B, D)
        if z_a.shape[0] < 2:
            raise ValueError("VICRegLoss needs at least 2 images in the (global) batch for its variance term.")
        variance = 0.5 * (variance_loss(z_a, self.eps) + variance_loss(z_b, self.eps))
        covariance = covariance_loss(z_a) + covariance_loss(z_b)
        return {
            "invariance": self.lambda_param * invariance,
            "variance": self.mu_param * variance,
            "covariance": self.nu_param * covariance,
        }
