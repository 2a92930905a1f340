"""PMSN's loss: MSN with the mean assignment matched to a power-law (or any) prior instead of the uniform one.

Assran, Balestriero, Duval, Bordes, Misra, Bojanowski, Vincent, Rabbat, Ballas, "The Hidden Uniform Cluster Prior
in Self-Supervised Learning", ICLR 2023 (arXiv:2210.07277), section 6 ("Prior Matching for Siamese Networks").
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ssl_hub._validation import check_non_negative, check_positive_int
from ssl_hub.losses.msn import MSNLoss


def power_law_distribution(
    size: int, exponent: float, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """The power law ``tau_k ∝ k^(-exponent)``, ``k = 1, ..., size``, normalised to sum to one.

    Args:
        size: Number of entries ``K``.
        exponent: The power; 0 gives the uniform distribution.
        device: Device of the result.
        dtype: Floating dtype of the result (the default dtype if ``None``).

    Returns:
        ``(K,)`` probabilities, non-increasing in ``k``.
    """
    check_positive_int("size", size, "power_law_distribution")
    check_non_negative("exponent", exponent, "power_law_distribution")
    ranks = torch.arange(1, size + 1, device=device, dtype=dtype or torch.get_default_dtype())  # (K,)
    weights = ranks.pow(-exponent)
    return weights / weights.sum()


def kl_to_prior(mean_anchor_probs: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """``KL(p || prior) = sum_k p_k (log p_k - log prior_k)`` of the mean assignment ``p`` from ``prior``.

    With the uniform prior this is MSN's mean-entropy maximisation term ``-H(p) + log K``.
    """
    return (torch.xlogy(mean_anchor_probs, mean_anchor_probs) - mean_anchor_probs * prior.log()).sum()


class PMSNLoss(MSNLoss):
    """:class:`MSNLoss` whose regulariser is ``KL(mean p(anchor) || tau)`` with a power-law prior ``tau``.

    PMSN replaces MSN's uniform cluster prior, implicit in mean-entropy maximisation (``KL(p || uniform)``), by a
    power law ``tau_k ∝ k^(-power_law_exponent)`` suited to long-tailed data (section 6). The divergence is taken
    in MSN's direction, ``KL(p || tau)``, so that ``power_law_exponent=0`` gives exactly :class:`MSNLoss`.
    (LightlySSL's ``PMSNLoss`` computes ``torch.nn.functional.kl_div(p.log(), tau)``, i.e. the reverse
    ``KL(tau || p)``.)

    Argument names and defaults follow LightlySSL's ``PMSNLoss``; see :class:`MSNLoss` for the others.

    Args:
        temperature: Temperature of the prototype assignments.
        sinkhorn_iterations: Sinkhorn-Knopp iterations on the targets.
        regularization_weight: Weight of the prior-matching term.
        power_law_exponent: Exponent of the power-law prior (0.25).
        gather_distributed: Use the global batch for the targets and the mean assignment.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        sinkhorn_iterations: int = 3,
        regularization_weight: float = 1.0,
        power_law_exponent: float = 0.25,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__(
            temperature=temperature,
            sinkhorn_iterations=sinkhorn_iterations,
            regularization_weight=regularization_weight,
            gather_distributed=gather_distributed,
        )
        check_non_negative("power_law_exponent", power_law_exponent, type(self).__name__)
        self.power_law_exponent = power_law_exponent

    def regularization_loss(self, mean_anchor_probs: torch.Tensor) -> torch.Tensor:
        """``KL(p || tau)`` of the mean assignment ``p`` ``(K,)`` from the power law ``tau``."""
        prior = power_law_distribution(
            mean_anchor_probs.shape[0],
            self.power_law_exponent,
            device=mean_anchor_probs.device,
            dtype=mean_anchor_probs.dtype,
        )
        return kl_to_prior(mean_anchor_probs, prior)


class PMSNCustomLoss(MSNLoss):
    """:class:`MSNLoss` whose regulariser is ``KL(mean p(anchor) || prior)`` with a prior of your choice.

    Args:
        target_distribution: Maps the mean assignment ``(K,)`` to the prior ``(K,)`` (positive, summing to one).
        temperature: Temperature of the prototype assignments.
        sinkhorn_iterations: Sinkhorn-Knopp iterations on the targets.
        regularization_weight: Weight of the prior-matching term.
        gather_distributed: Use the global batch for the targets and the mean assignment.
    """

    def __init__(
        self,
        target_distribution: Callable[[torch.Tensor], torch.Tensor],
        temperature: float = 0.1,
        sinkhorn_iterations: int = 3,
        regularization_weight: float = 1.0,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__(
            temperature=temperature,
            sinkhorn_iterations=sinkhorn_iterations,
            regularization_weight=regularization_weight,
            gather_distributed=gather_distributed,
        )
        self.target_distribution = target_distribution

    def regularization_loss(self, mean_anchor_probs: torch.Tensor) -> torch.Tensor:
        prior = self.target_distribution(mean_anchor_probs).to(mean_anchor_probs)
        if prior.shape != mean_anchor_probs.shape:
            raise ValueError(
                f"PMSNCustomLoss: target_distribution must return a {tuple(mean_anchor_probs.shape)} distribution, "
                f"got shape {tuple(prior.shape)}."
            )
        return kl_to_prior(mean_anchor_probs, prior)
