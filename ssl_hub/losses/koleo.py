"""The KoLeo regulariser: the Kozachenko-Leonenko differential entropy estimator of a batch of features.

Sablayrolles, Douze, Schmid, Jégou, "Spreading vectors for similarity search", ICLR 2019 (arXiv:1806.03198),
section 3.2; used by DINOv2 (Oquab et al. 2023, arXiv:2304.07193, section 4) on the class tokens.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ssl_hub._validation import check_positive
from ssl_hub.losses.utils import at_least_float32


class KoLeoLoss(nn.Module):
    """``-1/n sum_i log(rho_i)`` with ``rho_i = min_{j != i} ||x_i - x_j||`` of the L2-normalised features.

    Minimising it pushes every feature away from its nearest neighbour in the batch, spreading the batch uniformly
    over the sphere. Argument names and defaults follow LightlySSL's ``KoLeoLoss`` (DINOv2's ``koleo_loss.py``).

    Args:
        p: Norm degree of the distance to the nearest neighbour (found by cosine similarity).
        eps: Added to the distances (and to the norms when normalising) to avoid ``log(0)``.
    """

    def __init__(self, p: float = 2.0, eps: float = 1e-8) -> None:
        super().__init__()
        check_positive("p", p, type(self).__name__)
        check_positive("eps", eps, type(self).__name__)
        self.p = p
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, D) -> ()``; needs ``B >= 2``."""
        if x.ndim != 2 or len(x) < 2:
            raise ValueError(f"KoLeoLoss takes (B, D) features with B >= 2, got shape {tuple(x.shape)}.")
        with torch.autocast(x.device.type, enabled=False):
            x = F.normalize(at_least_float32(x), p=2, dim=-1, eps=self.eps)  # (B, D)
            with torch.no_grad():
                similarity = x @ x.T  # (B, B)
                similarity.fill_diagonal_(-2.0)  # below any cosine similarity: never one's own neighbour
                neighbour = similarity.argmax(dim=1)  # (B,)
            distance = F.pairwise_distance(x, x[neighbour], p=self.p, eps=self.eps)  # (B,)
            return -(distance + self.eps).log().mean()
