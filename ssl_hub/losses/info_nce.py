"""Cross-view InfoNCE: MoCo v3's contrastive loss (Chen, Xie, He, 2021, arXiv:2104.02057, eq. 1) and NNCLR's
(Dwibedi et al., 2021, arXiv:2104.14548)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ssl_hub import distributed
from ssl_hub._validation import check_positive
from ssl_hub.losses.utils import at_least_float32


class InfoNCELoss(nn.Module):
    """InfoNCE of anchors against the candidates of the (global) batch; the positive of anchor ``i`` is candidate ``i``.

    With ``a`` and ``c`` l2-normalised, the loss of anchor ``i`` is
    ``-log exp(a_i . c_i / tau) / sum_k exp(a_i . c_k / tau)``, averaged over anchors; ``k`` runs over the ``B``
    candidates of the batch, or the ``W * B`` of all ranks with ``gather_distributed``. Unlike :class:`NTXentLoss`,
    anchors are never compared with each other: the negatives are the other images' candidates only.

    MoCo v3 calls it with queries as anchors and momentum keys as candidates (and scales it by ``2 * tau``, see
    :class:`~ssl_hub.methods.moco.MoCo`); NNCLR with support-set neighbours as anchors and predictions as candidates.

    Args:
        temperature: Softmax temperature ``tau`` (> 0).
        gather_distributed: Use the candidates of all ranks (no effect in a single process). The gather keeps the
            gradient path to this rank's candidates.
    """

    def __init__(self, temperature: float = 0.1, gather_distributed: bool = False) -> None:
        super().__init__()
        check_positive("temperature", temperature, "InfoNCELoss")
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def forward(self, anchors: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Loss of ``(B, D)`` anchors against ``(B, D)`` candidates, row ``i`` of each from the same image."""
        if anchors.shape != candidates.shape or anchors.ndim != 2:
            raise ValueError(
                f"InfoNCELoss expects two (B, D) tensors of one shape, got {tuple(anchors.shape)} and "
                f"{tuple(candidates.shape)}."
            )
        anchors = F.normalize(at_least_float32(anchors), dim=1)
        candidates = F.normalize(at_least_float32(candidates), dim=1)
        offset = 0
        if self.gather_distributed:
            offset = distributed.rank() * candidates.shape[0]
            candidates = distributed.gather(candidates)  # (W * B, D)
        logits = anchors @ candidates.to(anchors.dtype).T / self.temperature  # (B, W * B)
        targets = torch.arange(anchors.shape[0], device=anchors.device) + offset
        return F.cross_entropy(logits, targets)
