"""SMoG's group-level contrastive loss (Pang et al., 2022, arXiv:2207.06167)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ssl_hub._validation import check_positive
from ssl_hub.losses.utils import at_least_float32


class SMoGLoss(nn.Module):
    """Contrast each crop's prediction with the group features; the positive is the group of another crop.

    With group features ``g_k``, the online prediction ``p_v`` of crop ``v`` and the group ``a_i`` that the momentum
    encoder assigned crop ``i`` to, each pair (``i``, ``v != i``) contributes the InfoNCE term
    ``-log exp(cos(p_v, g_{a_i}) / tau) / sum_k exp(cos(p_v, g_k) / tau)``: groups, not instances, are the
    contrastive units. The loss averages the pairs like SwaV's swapped prediction (the mean over ``i`` of
    ``sum_{v != i} / (V - 1)``), and over the batch; with two crops it is the symmetric loss
    ``(l(p_1, a_2) + l(p_2, a_1)) / 2``.

    Args:
        temperature: Softmax temperature ``tau``.
    """

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        check_positive("temperature", temperature, type(self).__name__)
        self.temperature = temperature

    def forward(
        self, predictions: Sequence[torch.Tensor], assignments: Sequence[torch.Tensor], group_features: torch.Tensor
    ) -> torch.Tensor:
        """The loss of one batch.

        Args:
            predictions: ``(B, D)`` online predictions, one per crop; the assigned crops first, in the same order.
            assignments: ``(B,)`` group indices of the assigned (global) crops.
            group_features: ``(n_groups, D)`` group features.
        """
        n_assigned, n_crops = len(assignments), len(predictions)
        if n_assigned == 0 or n_assigned > n_crops or n_crops < 2:
            raise ValueError(
                f"SMoGLoss needs predictions of at least two crops and group assignments of some of them (those "
                f"first), got {n_crops} prediction(s) and {n_assigned} assignment(s)."
            )
        groups = F.normalize(at_least_float32(group_features), dim=1)  # (n_groups, D)
        normalized = [F.normalize(at_least_float32(p), dim=1) for p in predictions]  # (B, D) each
        with torch.autocast(groups.device.type, enabled=False):  # float32 logits under mixed precision
            logits = [q @ groups.to(q.dtype).T / self.temperature for q in normalized]  # (B, n_groups) each
        total = logits[0].new_zeros(())
        for i, targets in enumerate(assignments):
            terms = [F.cross_entropy(z, targets) for v, z in enumerate(logits) if v != i]
            total = total + torch.stack(terms).sum() / (n_crops - 1)
        return total / n_assigned
