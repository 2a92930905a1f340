"""SwaV's swapped-prediction loss with Sinkhorn-Knopp codes (Caron et al., 2020, arXiv:2006.09882)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ssl_hub import distributed
from ssl_hub._validation import check_positive, check_positive_int
from ssl_hub.losses.utils import at_least_float32


@torch.no_grad()
def sinkhorn(
    out: torch.Tensor,
    iterations: int = 3,
    epsilon: float = 0.05,
    gather_distributed: bool = False,
    shared: torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft codes of equipartitioned prototype assignments by the Sinkhorn-Knopp algorithm (section 3.1).

    ``Q = exp(scores / epsilon)`` (prototypes x samples) is scaled alternately so that every prototype receives
    ``1 / K`` of the mass and every sample ``1 / N``; the returned codes are ``N Q`` (each sample's code sums to 1).
    With ``gather_distributed`` the sums run over the samples of all ranks (all-reduce of the sums, as the official
    ``distributed_sinkhorn``), so the codes are those of the global batch; ranks may hold different numbers of samples
    (DINOv2's masked patches: the count is all-reduced too).

    Args:
        out: ``(B, K)`` scores of this rank's samples.
        iterations: Sinkhorn iterations.
        epsilon: Entropy regularisation; smaller is sharper.
        gather_distributed: Normalise over the samples of all ranks.
        shared: ``(Q, K)`` scores of more samples that every rank holds identically (SwaV's queue): they take part
            once, not once per rank.

    Returns:
        ``(B, K)`` codes of ``out``.
    """
    reduce = distributed.all_reduce_sum if gather_distributed else (lambda tensor: tensor)
    scores = at_least_float32(out)
    local = torch.exp(scores / epsilon).T  # (K, B)
    extra = torch.exp(at_least_float32(shared).to(scores.dtype) / epsilon).T if shared is not None else local[:, :0]
    n_prototypes = local.shape[0]
    n_samples = reduce(local.new_tensor(float(local.shape[1]))) + extra.shape[1]
    total = reduce(local.sum()) + extra.sum()
    local, extra = local / total, extra / total
    for _ in range(iterations):
        row_sums = reduce(local.sum(dim=1, keepdim=True)) + extra.sum(dim=1, keepdim=True)  # (K, 1)
        local, extra = local / (row_sums * n_prototypes), extra / (row_sums * n_prototypes)
        local = local / (local.sum(dim=0, keepdim=True) * n_samples)
        extra = extra / (extra.sum(dim=0, keepdim=True) * n_samples)
    return (local * n_samples).T


class SwaVLoss(nn.Module):
    """Swapped prediction: the codes of each high-resolution crop are predicted from every other crop.

    For each high-resolution (global) crop ``i``, Sinkhorn-Knopp turns its prototype scores into codes ``q_i``;
    every other crop ``v`` predicts them with ``p_v = softmax(z_v / temperature)``; the loss is the mean over ``i``
    of ``sum_{v != i} -sum_k q_ik log p_vk / (V - 1)``, averaged over the batch (section 3.1 and 3.2). With a queue
    of earlier embeddings' scores the codes are computed over batch and queue together (the paper's small-batch
    setting).

    Argument names and defaults follow LightlySSL's ``SwaVLoss`` (the paper's values).

    Args:
        temperature: Softmax temperature of the predictions.
        sinkhorn_iterations: Sinkhorn-Knopp iterations.
        sinkhorn_epsilon: Entropy regularisation of the codes.
        sinkhorn_gather_distributed: Compute the codes over the global batch under multi-process training.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        sinkhorn_iterations: int = 3,
        sinkhorn_epsilon: float = 0.05,
        sinkhorn_gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_positive("temperature", temperature, owner)
        check_positive_int("sinkhorn_iterations", sinkhorn_iterations, owner, minimum=0)
        check_positive("sinkhorn_epsilon", sinkhorn_epsilon, owner)
        self.temperature = temperature
        self.sinkhorn_iterations = sinkhorn_iterations
        self.sinkhorn_epsilon = sinkhorn_epsilon
        self.sinkhorn_gather_distributed = sinkhorn_gather_distributed

    def subloss(self, z: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of codes ``q`` ``(B, K)`` and the predictions from scores ``z`` ``(B, K)``."""
        return -(q * F.log_softmax(at_least_float32(z) / self.temperature, dim=1)).sum(dim=1).mean()

    def forward(
        self,
        high_resolution_outputs: Sequence[torch.Tensor],
        low_resolution_outputs: Sequence[torch.Tensor],
        queue_outputs: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The SwaV loss of one batch.

        Args:
            high_resolution_outputs: ``(B, K)`` prototype scores of each high-resolution crop (the codes come from
                these).
            low_resolution_outputs: ``(B, K)`` prototype scores of each low-resolution crop.
            queue_outputs: ``(Q, K)`` prototype scores of the queued embeddings, one per high-resolution crop,
                identical on every rank; or ``None``.
        """
        n_high = len(high_resolution_outputs)
        n_crops = n_high + len(low_resolution_outputs)
        if n_high == 0 or n_crops < 2:
            raise ValueError(
                f"SwaVLoss needs at least one high-resolution crop and two crops in all, got {n_high} and {n_crops}."
            )
        if queue_outputs is not None and len(queue_outputs) != n_high:
            raise ValueError(f"SwaVLoss takes one queue per high-resolution crop: {len(queue_outputs)} vs {n_high}.")
        crops = [*high_resolution_outputs, *low_resolution_outputs]
        loss = crops[0].new_zeros((), dtype=at_least_float32(crops[0]).dtype)
        for i in range(n_high):
            codes = sinkhorn(
                crops[i].detach(),
                iterations=self.sinkhorn_iterations,
                epsilon=self.sinkhorn_epsilon,
                gather_distributed=self.sinkhorn_gather_distributed,
                shared=None if queue_outputs is None else queue_outputs[i].detach(),
            )  # (B, K)
            terms = [self.subloss(z, codes) for v, z in enumerate(crops) if v != i]
            loss = loss + torch.stack(terms).sum() / (n_crops - 1)
        return loss / n_high
