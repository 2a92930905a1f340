"""MMCR's loss: maximum manifold capacity (Yerxa, Kuang, Simoncelli, Chung, 2023, arXiv:2303.03307)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ssl_hub import distributed
from ssl_hub._validation import check_non_negative
from ssl_hub.losses.utils import at_least_float32, sum_of_terms


class MMCRLoss(nn.Module):
    """Minus the nuclear norm of the matrix of view centroids, plus a weighted nuclear norm of each image's views.

    On L2-normalised embeddings, ``Z_i`` the ``(k, D)`` views of image ``i`` and ``C`` the ``(N, D)`` matrix whose row
    ``i`` is their mean (the centroid of image ``i``'s manifold), over the ``N`` images of the batch (paper eq. 5)::

        loss = -||C||_* + lmda / N * sum_i ||Z_i||_*

    where ``||.||_*`` is the nuclear norm, the sum of the singular values. Centroids of unit-norm views reach norm 1
    only when the views agree, and ``||C||_*`` is largest when the centroids also spread over many orthogonal
    directions. With ``momentum`` embeddings (the official ImageNet code's momentum encoder), each centroid is the
    mean of the online and the momentum views, and ``Z_i`` holds the online views only, as in the official code;
    LightlySSL's ``MMCRLoss`` takes ``Z_i`` from both and does not normalise the embeddings.

    Args:
        lmda: Weight of the per-image nuclear norms (>= 0); 0 in the official code (LightlySSL's default is 5e-3).
            At 0 they are not computed.
        gather_distributed: Use the embeddings of all ranks (no effect in a single process): ``C`` is the matrix of
            the global batch's centroids.
    """

    def __init__(self, lmda: float = 0.0, gather_distributed: bool = False) -> None:
        super().__init__()
        check_non_negative("lmda", lmda, "MMCRLoss")
        self.lmda = lmda
        self.gather_distributed = gather_distributed

    def forward(self, online: torch.Tensor, momentum: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of ``(B, k, D)`` online embeddings (``k`` views of each of ``B`` images) and optional momentum
        embeddings of the same views."""
        return sum_of_terms(self.terms(online, momentum))

    def terms(self, online: torch.Tensor, momentum: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The loss's terms, which sum to it: ``centroid_nuclear_norm`` (``-||C||_*``) and, when ``lmda > 0``,
        ``view_nuclear_norm`` (``lmda / N * sum_i ||Z_i||_*``)."""
        if online.ndim != 3 or (momentum is not None and momentum.shape != online.shape):
            got = [tuple(online.shape)] + ([] if momentum is None else [tuple(momentum.shape)])
            raise ValueError(f"MMCRLoss expects (B, k, D) embeddings (momentum ones of the same shape), got {got}.")
        embeddings = [F.normalize(at_least_float32(z), dim=-1) for z in (online, momentum) if z is not None]
        if self.gather_distributed:
            embeddings = [distributed.gather(z) for z in embeddings]  # (N = W * B, k, D) each
        online = embeddings[0]
        centroids = torch.cat(embeddings, dim=1).mean(dim=1)  # (N, D), over the k or 2k views of each image
        terms = {"centroid_nuclear_norm": -torch.linalg.svdvals(centroids).sum()}
        if self.lmda > 0:
            # (N, min(k, D)) singular values of every image's (k, D) view matrix
            terms["view_nuclear_norm"] = self.lmda * torch.linalg.svdvals(online).sum() / online.shape[0]
        return terms
