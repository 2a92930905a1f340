"""SimMIM's reconstruction loss: L1 on the pixels of the masked patches (Xie et al., 2022, arXiv:2111.09886, eq. 1)."""

from __future__ import annotations

import torch
from torch import nn

from ssl_hub.losses.utils import at_least_float32


class SimMIMLoss(nn.Module):
    """``1 / Omega(x_M) * ||y_M - x_M||_1``: the mean absolute error over every pixel value of the masked patches.

    ``x`` are the (normalised) input pixels, ``y`` the predictions and ``Omega(x_M)`` the number of masked pixel
    values. The official code divides by that number plus 1e-5 (microsoft/SimMIM, ``models/simmim.py``); this is the
    paper's formula. LightlySSL writes it as ``nn.L1Loss`` on the masked patches.
    """

    def forward(self, predictions: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The loss of one batch.

        Args:
            predictions: ``(B, N, P)`` predicted pixels of each patch.
            target: ``(B, N, P)`` true pixels (:func:`ssl_hub.modules.patchify`).
            mask: ``(B, N)`` boolean, ``True`` for the masked patches (at least one).

        Returns:
            The scalar loss.
        """
        if predictions.shape != target.shape or predictions.ndim != 3:
            raise ValueError(
                f"SimMIMLoss expects (B, N, P) predictions and targets of one shape, got {tuple(predictions.shape)} "
                f"and {tuple(target.shape)}."
            )
        if mask.shape != predictions.shape[:2]:
            raise ValueError(f"SimMIMLoss: mask must be {tuple(predictions.shape[:2])}, got {tuple(mask.shape)}.")
        errors = (at_least_float32(predictions) - at_least_float32(target)).abs().mean(dim=-1)  # (B, N)
        weights = mask.to(errors.dtype)  # (B, N)
        return (errors * weights).sum() / weights.sum()
