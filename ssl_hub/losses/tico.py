"""TiCo's loss: transformation invariance plus covariance contrast (Zhu et al., 2022, arXiv:2206.10698)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ssl_hub import distributed
from ssl_hub._validation import check_non_negative, check_positive_int, check_probability
from ssl_hub.losses.utils import at_least_float32


class TiCoLoss(nn.Module):
    """Agreement of the two views plus a contrast against a running covariance matrix (TiCo paper, eq. 4-5).

    On L2-normalised embeddings ``z_a`` (online encoder) and ``z_b`` (momentum encoder) of ``N`` images::

        C_t  = beta * C_{t-1} + (1 - beta) * z_a^T z_a / N
        loss = 1 - mean_i <z_a_i, z_b_i> + rho * mean_i z_a_i^T C_t z_a_i

    ``C_{t-1}`` is a constant for backpropagation and ``C_0`` is zero. The current batch's share of ``C_t`` is a
    constant too by default, as in LightlySSL; with ``batch_covariance_gradient`` the gradient flows through it, as
    in the unofficial code LightlySSL's loss credits (sayannag/TiCo-pytorch, which detaches ``C`` only between
    steps; eq. 5 leaves it open), so the current batch repels itself twice as hard.
    ``C_t`` lives in the buffer :attr:`C`, so ``state_dict``, Trainer checkpoints and the ``ssl/`` folder keep it;
    its ``(D, D)`` shape is given by ``dim``, or else set by the first batch (or a loaded state). With
    ``gather_distributed`` both batches are gathered from all ranks (with their gradient), so every rank computes
    the loss and ``C`` of the global batch and the covariance buffers stay identical across ranks.

    Args:
        beta: Momentum of the covariance matrix, in [0, 1].
        rho: Weight of the covariance contrast term (>= 0); the paper's value is 8.
        gather_distributed: Use the embeddings of all ranks (no effect in a single process).
        update_covariance_matrix: Store ``C_t`` after each forward; ``forward`` can override it per call.
        dim: Embedding width ``D``, to allocate ``C`` at construction (then DDP's buffer broadcast and checkpoints
            see it from the start); ``None`` allocates it at the first batch, as LightlySSL does.
        batch_covariance_gradient: Backpropagate through the current batch's ``z_a^T z_a / N`` in ``C_t``.
    """

    C: torch.Tensor

    def __init__(
        self,
        beta: float = 0.9,
        rho: float = 8.0,
        gather_distributed: bool = False,
        update_covariance_matrix: bool = True,
        dim: int | None = None,
        batch_covariance_gradient: bool = False,
    ) -> None:
        super().__init__()
        check_probability("beta", beta, "TiCoLoss")
        check_non_negative("rho", rho, "TiCoLoss")
        self.beta = beta
        self.rho = rho
        self.gather_distributed = gather_distributed
        self.update_covariance_matrix = update_covariance_matrix
        self.batch_covariance_gradient = batch_covariance_gradient
        if dim is not None:
            check_positive_int("dim", dim, "TiCoLoss")
        self.register_buffer("C", torch.zeros(dim, dim) if dim is not None else torch.empty(0))

    def forward(
        self, z_a: torch.Tensor, z_b: torch.Tensor, update_covariance_matrix: bool | None = None
    ) -> torch.Tensor:
        """Loss of ``(B, D)`` online embeddings ``z_a`` and momentum embeddings ``z_b`` (row ``i``: one image).

        Args:
            z_a: Embeddings of the online (trained) encoder.
            z_b: Embeddings of the momentum encoder (no gradient is needed).
            update_covariance_matrix: Store ``C_t``; ``None`` uses the value given at construction.
        """
        if z_a.shape != z_b.shape or z_a.ndim != 2:
            raise ValueError(f"TiCoLoss expects two (B, D) tensors of one shape, got {z_a.shape} and {z_b.shape}.")
        z_a, z_b = at_least_float32(z_a), at_least_float32(z_b)
        if self.gather_distributed:
            z_a, z_b = distributed.gather(z_a), distributed.gather(z_b)  # (N = W * B, D)
        z_a, z_b = F.normalize(z_a, dim=1), F.normalize(z_b, dim=1)
        dim = z_a.shape[1]
        if self.C.numel() == 0:
            self.C = torch.zeros(dim, dim, dtype=z_a.dtype, device=z_a.device)
        elif self.C.shape != (dim, dim):
            raise ValueError(f"TiCoLoss holds a {tuple(self.C.shape)} covariance matrix, got {dim}-dim embeddings.")
        batch_covariance = z_a.T @ z_a / z_a.shape[0]  # (D, D)
        if not self.batch_covariance_gradient:
            batch_covariance = batch_covariance.detach()
        covariance = self.beta * self.C.to(z_a.dtype) + (1.0 - self.beta) * batch_covariance  # (D, D)
        invariance = 1.0 - (z_a * z_b).sum(dim=1).mean()
        contrast = ((z_a @ covariance) * z_a).sum(dim=1).mean()
        update = self.update_covariance_matrix if update_covariance_matrix is None else update_covariance_matrix
        if update:
            with torch.no_grad():
                self.C.copy_(covariance)
        return invariance + self.rho * contrast

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # The matrix takes its shape from the checkpoint (a fresh loss has not seen a batch yet).
        stored = state_dict.get(prefix + "C")
        if stored is not None and stored.shape != self.C.shape and self.C.numel() == 0:
            self.C = torch.empty_like(stored, device=self.C.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
