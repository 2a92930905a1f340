"""MAE's reconstruction loss: mean squared error on the pixels of the masked patches (He et al., 2021, section 3).

Also AIM's loss (El-Nouby et al., 2024, section 3): the same normalised-pixel regression, on the patches that
follow the prefix.
"""

from __future__ import annotations

import torch
from torch import nn

from ssl_hub._validation import check_positive
from ssl_hub.losses.utils import at_least_float32


class MAELoss(nn.Module):
    """Per-patch mean squared error, averaged over the masked patches.

    With ``norm_pix_loss`` each target patch is normalised by the mean and standard deviation of its own pixels
    first: ``(t - mean(t)) / sqrt(var(t) + eps)``, with the unbiased variance, as the official code's
    ``--norm_pix_loss`` (facebookresearch/mae, ``models_mae.py: forward_loss``), the setting the paper's results use
    (Table 1d: "pixel (w/ norm)"). LightlySSL writes this as ``nn.MSELoss`` on normalised targets of the masked
    patches; this class takes the mask, so it is the paper's loss in one call.

    Args:
        norm_pix_loss: Normalise each target patch.
        eps: Added to the variance of a patch.
    """

    def __init__(self, norm_pix_loss: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        check_positive("eps", eps, "MAELoss")
        self.norm_pix_loss = norm_pix_loss
        self.eps = eps

    def forward(
        self, predictions: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The loss of one batch.

        Args:
            predictions: ``(B, N, P)`` predicted pixels of each patch.
            target: ``(B, N, P)`` true pixels (:func:`ssl_hub.modules.patchify`).
            mask: ``(B, N)`` boolean, ``True`` for the patches the loss covers (at least one); ``None`` for all.

        Returns:
            The scalar loss.
        """
        if predictions.shape != target.shape or predictions.ndim != 3:
            raise ValueError(
                f"MAELoss expects (B, N, P) predictions and targets of one shape, got {tuple(predictions.shape)} and "
                f"{tuple(target.shape)}."
            )
        if mask is not None and mask.shape != predictions.shape[:2]:
            raise ValueError(f"MAELoss: mask must be {tuple(predictions.shape[:2])}, got {tuple(mask.shape)}.")
        predictions, target = at_least_float32(predictions), at_least_float32(target)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)  # (B, N, 1)
            var = target.var(dim=-1, keepdim=True)  # (B, N, 1)
            target = (target - mean) / (var + self.eps).sqrt()
        per_patch = (predictions - target).pow(2).mean(dim=-1)  # (B, N)
        if mask is None:
            return per_patch.mean()
        weights = mask.to(per_patch.dtype)  # (B, N)
        return (per_patch * weights).sum() / weights.sum()
