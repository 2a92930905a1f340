"""I-JEPA's loss: regression of the target encoder's layer-normalised patch features.

Assran, Duval, Misra, Bojanowski, Vincent, Rabbat, LeCun, Ballas, "Self-Supervised Learning from Images with a
Joint-Embedding Predictive Architecture", CVPR 2023 (arXiv:2301.08243), section 3 and the official ``src/train.py``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ssl_hub._validation import check_one_of, check_positive
from ssl_hub.losses.utils import at_least_float32

LOSS_TYPES = ("smooth_l1", "l2")


class IJEPALoss(nn.Module):
    """Distance between the predicted and the target representations of the target blocks' patches.

    The targets are the target encoder's output tokens, layer-normalised over the feature dimension without
    affine parameters (``F.layer_norm(h, (D,))`` in the official code). The official code minimises their smooth-L1
    distance to the predictions (``F.smooth_l1_loss``, beta 1), averaged over all elements; the paper writes the
    squared L2 distance (eq. 1), here ``"l2"``: the mean squared error over all elements.

    Args:
        loss_type: ``"smooth_l1"`` (official code) or ``"l2"`` (the paper's eq. 1, averaged over the features).
        beta: Transition point of the smooth-L1 loss.
        normalize_targets: Layer-normalise the target features (as the paper: "we normalize the target features").
    """

    def __init__(self, loss_type: str = "smooth_l1", beta: float = 1.0, normalize_targets: bool = True) -> None:
        super().__init__()
        check_one_of("loss_type", loss_type, LOSS_TYPES, type(self).__name__)
        check_positive("beta", beta, type(self).__name__)
        self.loss_type = loss_type
        self.beta = beta
        self.normalize_targets = normalize_targets

    def forward(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss of one batch.

        Args:
            predictions: ``(..., D)`` predicted representations (e.g. ``(B, T, M, D)``: ``T`` blocks of ``M``).
            targets: ``(..., D)`` target encoder outputs at the same patches (no gradient flows into them).

        Returns:
            The mean distance over all elements.
        """
        if predictions.shape != targets.shape:
            raise ValueError(
                f"IJEPALoss: predictions {tuple(predictions.shape)} and targets {tuple(targets.shape)} differ."
            )
        predictions = at_least_float32(predictions)
        targets = at_least_float32(targets.detach()).to(predictions.dtype)
        if self.normalize_targets:
            targets = F.layer_norm(targets, targets.shape[-1:])
        if self.loss_type == "smooth_l1":
            return F.smooth_l1_loss(predictions, targets, beta=self.beta)
        return F.mse_loss(predictions, targets)
