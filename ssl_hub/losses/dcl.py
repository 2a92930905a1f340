"""Decoupled contrastive losses DCL and DCLW (Yeh et al., 2022, ECCV, arXiv:2110.06848)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from ssl_hub import distributed
from ssl_hub._validation import check_positive
from ssl_hub.losses.utils import at_least_float32

WeightFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def negative_mises_fisher_weights(
    out0: torch.Tensor, out1: torch.Tensor, sigma: float = 0.5, gather_distributed: bool = False
) -> torch.Tensor:
    """DCLW's weight of each positive pair, from a von Mises-Fisher kernel (DCL paper, section 3.2).

    ``w_i = 2 - exp(<z_i^(1), z_i^(2)> / sigma) / E_j[exp(<z_j^(1), z_j^(2)> / sigma)]``, where the expectation
    runs over the (global, with ``gather_distributed``) batch. Pairs that already agree more than the average get a
    smaller weight; the weights average to 1. They are constants for backpropagation.

    Args:
        out0: ``(B, D)`` unit-norm embeddings of the first views.
        out1: ``(B, D)`` unit-norm embeddings of the second views.
        sigma: Scale of the kernel (> 0).
        gather_distributed: Take the expectation over the embeddings of all ranks.

    Returns:
        ``(B,)`` weights.
    """
    check_positive("sigma", sigma, "negative_mises_fisher_weights")
    with torch.no_grad():
        similarity = (out0 * out1).sum(dim=1) / sigma  # (B,)
        everywhere = distributed.gather_no_grad(similarity) if gather_distributed else similarity  # (W * B,)
        # exp(s_i) / mean_j exp(s_j), computed as N * softmax for stability
        relative = torch.exp(similarity - torch.logsumexp(everywhere, dim=0)) * everywhere.shape[0]
    return 2.0 - relative


class DCLLoss(nn.Module):
    """Decoupled contrastive loss: NT-Xent without the positive pair in the denominator (DCL paper, eq. 6).

    For each of the ``2B`` anchors ``z_i^(k)`` (image ``i``, view ``k``)::

        l_i^(k) = -w_i <z_i^(1), z_i^(2)> / tau + log sum_{l in {1, 2}, j != i} exp(<z_i^(k), z_j^(l)> / tau)

    on L2-normalised embeddings, averaged over all anchors (symmetric in the views). With ``gather_distributed``
    the negatives ``z_j`` run over the global batch of all ranks; the mean of the ranks' losses is then the loss of
    the global batch.

    Args:
        temperature: Softmax temperature ``tau`` (> 0).
        weight_fn: ``w(out0, out1) -> (B,)`` weights of the positive term (``None``: all 1, plain DCL); it receives
            the normalised local embeddings.
        gather_distributed: Use the embeddings of all ranks as negatives (no effect in a single process).
    """

    def __init__(
        self,
        temperature: float = 0.1,
        weight_fn: WeightFn | None = None,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        check_positive("temperature", temperature, type(self).__name__)
        if weight_fn is not None and not callable(weight_fn):
            raise TypeError(f"{type(self).__name__}: weight_fn must be callable or None, got {weight_fn!r}.")
        self.temperature = temperature
        self.weight_fn = weight_fn
        self.gather_distributed = gather_distributed

    def forward(self, out0: torch.Tensor, out1: torch.Tensor) -> torch.Tensor:
        """Loss of two ``(B, D)`` batches of embeddings, row ``i`` of each from the same image."""
        name = type(self).__name__
        if out0.shape != out1.shape or out0.ndim != 2:
            raise ValueError(f"{name} expects two (B, D) tensors of one shape, got {out0.shape} and {out1.shape}.")
        out0 = F.normalize(at_least_float32(out0), dim=1)
        out1 = F.normalize(at_least_float32(out1), dim=1)
        if self.gather_distributed:
            all0, all1 = distributed.gather(out0), distributed.gather(out1)  # (W * B, D)
            offset = distributed.rank() * out0.shape[0]
        else:
            all0, all1, offset = out0, out1, 0
        if all0.shape[0] < 2:
            raise ValueError(f"{name} needs at least 2 images in the (global) batch to have negatives.")
        weights = None
        if self.weight_fn is not None:
            weights = self.weight_fn(out0, out1)
            if weights.shape != (out0.shape[0],):
                raise ValueError(f"{name}: weight_fn must return shape ({out0.shape[0]},), got {tuple(weights.shape)}.")
        loss0 = self._anchor_loss(out0, all0, all1, offset, weights)
        loss1 = self._anchor_loss(out1, all1, all0, offset, weights)
        return 0.5 * (loss0 + loss1)

    def _anchor_loss(
        self,
        anchors: torch.Tensor,
        same_view: torch.Tensor,
        other_view: torch.Tensor,
        offset: int,
        weights: torch.Tensor | None,
    ) -> torch.Tensor:
        """Mean loss of ``anchors`` (one view, ``(B, D)``) against both views of the global batch (``(N, D)``)."""
        rows = torch.arange(anchors.shape[0], device=anchors.device)
        own = rows + offset  # column of each anchor's own image in the global batch
        logits_same = anchors @ same_view.T / self.temperature  # (B, N)
        logits_other = anchors @ other_view.T / self.temperature  # (B, N)
        positive = logits_other[rows, own]  # (B,)
        if weights is not None:
            positive = positive * weights.to(positive.dtype)
        # Decoupling: neither the anchor itself nor its positive is among the negatives.
        minus_inf = logits_same.new_tensor(float("-inf"))
        negatives = torch.cat(
            [logits_same.index_put((rows, own), minus_inf), logits_other.index_put((rows, own), minus_inf)], dim=1
        )  # (B, 2N)
        return (torch.logsumexp(negatives, dim=1) - positive).mean()


class DCLWLoss(DCLLoss):
    """DCL with the von Mises-Fisher weighting of the positive term (DCLW, DCL paper section 3.2).

    See :class:`DCLLoss` and :func:`negative_mises_fisher_weights`; with ``gather_distributed`` the weights are
    normalised over the global batch, so the loss of the global batch does not depend on how it is split.

    Args:
        temperature: Softmax temperature ``tau`` (> 0).
        sigma: Scale of the weighting kernel (> 0).
        gather_distributed: Use the embeddings of all ranks as negatives and for the weights' normalisation.
    """

    def __init__(self, temperature: float = 0.1, sigma: float = 0.5, gather_distributed: bool = False) -> None:
        check_positive("sigma", sigma, "DCLWLoss")
        super().__init__(
            temperature=temperature,
            weight_fn=partial(negative_mises_fisher_weights, sigma=sigma, gather_distributed=gather_distributed),
            gather_distributed=gather_distributed,
        )
        self.sigma = sigma
