"""Label-free measures of representation collapse, to watch during pretraining and to compare trained backbones.

- :func:`std_of_l2_normalized`: SimSiam's collapse monitor (Chen & He, 2021, arXiv:2011.10566, Fig. 2), the name
  LightlySSL gives it. 0 when every embedding is the same vector; about ``1 / sqrt(D)`` when the embeddings spread
  over the unit sphere as a zero-mean isotropic Gaussian's do.
- :func:`effective_rank`: RankMe (Garrido et al., ICML 2023, arXiv:2210.02885), the effective rank of Roy & Vetterli
  (2007). How many dimensions the features use: 1 for a rank-one feature matrix, ``k`` for ``k`` equal singular
  values. Features whose few dominant directions swamp the rest score low; a cosine kNN, which weighs directions as
  they come, can suffer from that where a linear probe, which rescales them, does not.
- :func:`normalized_entropy`: the entropy of softmax predictions over ``K`` classes (prototypes) divided by ``ln K``.
  1 when every prediction is uniform, the trivial solution of prototype methods whose loss is a cross-entropy
  against targets that are uniform too (SwaV's loss then sits at ``ln K``); 0 when every prediction is one-hot.
  :func:`normalized_entropy_of_probabilities` is the same measure of distributions given as probabilities (DINOv2's
  Sinkhorn-Knopp targets, which are no softmax of logits).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from ssl_hub._validation import check_positive
from ssl_hub.losses.utils import at_least_float32


def std_of_l2_normalized(embeddings: torch.Tensor) -> torch.Tensor:
    """The standard deviation over the batch of the l2-normalised embeddings, averaged over the dimensions.

    Args:
        embeddings: ``(B, D)``, ``B >= 2``.

    Returns:
        A scalar tensor (no gradient).
    """
    if embeddings.ndim != 2 or embeddings.shape[0] < 2:
        raise ValueError(f"std_of_l2_normalized takes (B, D) embeddings with B >= 2, got {tuple(embeddings.shape)}.")
    with torch.no_grad():
        return F.normalize(embeddings.float(), dim=1).std(dim=0).mean()


def effective_rank(features: torch.Tensor, epsilon: float = 1e-7) -> float:
    """RankMe: ``exp(-sum_k p_k log p_k)`` with ``p_k = s_k / sum(s) + epsilon`` over the singular values ``s_k`` of
    the ``(N, D)`` feature matrix (paper eq. 1; not centred, as in the paper).

    Args:
        features: ``(N, D)`` features of ``N`` images, e.g. from :func:`~ssl_hub.eval.extract_features`.
        epsilon: Keeps ``log p_k`` finite for zero singular values.

    Returns:
        The effective rank, between 1 and ``min(N, D)``.
    """
    check_positive("epsilon", epsilon, "effective_rank")
    if features.ndim != 2 or min(features.shape) < 1:
        raise ValueError(f"effective_rank takes (N, D) features, got {tuple(features.shape)}.")
    singular_values = torch.linalg.svdvals(features.double())  # (min(N, D),)
    if singular_values.sum() == 0:
        raise ValueError("effective_rank: the features are all zero, so they have no rank.")
    p = singular_values / singular_values.sum() + epsilon
    return float(torch.exp(-(p * p.log()).sum()))


def normalized_entropy(logits: torch.Tensor) -> torch.Tensor:
    """The mean over the rows of ``H(softmax(logits)) / ln K``, in ``[0, 1]``.

    Args:
        logits: ``(B, K)`` logits of ``B`` predictions over ``K >= 2`` classes, temperature applied.

    Returns:
        A scalar tensor (no gradient).
    """
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"normalized_entropy takes (B, K) logits with K >= 2, got {tuple(logits.shape)}.")
    with torch.no_grad():
        return normalized_entropy_of_probabilities(F.softmax(at_least_float32(logits), dim=1))


def normalized_entropy_of_probabilities(probabilities: torch.Tensor) -> torch.Tensor:
    """The mean over the rows of ``H(p) / ln K`` for rows ``p`` that are distributions over ``K`` classes, in
    ``[0, 1]``; zero probabilities add nothing (``0 log 0 = 0``).

    Args:
        probabilities: ``(B, K)``, ``K >= 2``, each row non-negative and summing to 1.

    Returns:
        A scalar tensor (no gradient).
    """
    if probabilities.ndim != 2 or probabilities.shape[1] < 2:
        raise ValueError(
            "normalized_entropy_of_probabilities takes (B, K) probabilities with K >= 2, got "
            f"{tuple(probabilities.shape)}."
        )
    with torch.no_grad():
        p = at_least_float32(probabilities)  # (B, K)
        return -torch.special.xlogy(p, p).sum(dim=1).mean() / math.log(p.shape[1])
