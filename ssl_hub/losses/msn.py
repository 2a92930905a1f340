"""MSN's loss: prototype cross-entropy with sharpened Sinkhorn targets and mean-entropy maximisation.

Assran, Caron, Misra, Bojanowski, Bordes, Vincent, Joulin, Rabbat, Ballas, "Masked Siamese Networks for
Label-Efficient Learning", ECCV 2022 (arXiv:2204.07141), section 3 and the official ``src/losses.py``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ssl_hub import distributed
from ssl_hub._validation import check_non_negative, check_positive, check_positive_int
from ssl_hub.losses.swav import sinkhorn
from ssl_hub.losses.utils import at_least_float32, sum_of_terms


class MSNLoss(nn.Module):
    """Cross-entropy between the anchors' and the sharpened targets' prototype assignments, plus me-max.

    Anchor, target and prototype vectors are L2-normalised; an embedding ``z`` is assigned to the ``K`` prototypes
    ``q_k`` with ``p(z) = softmax(z . q / tau)`` (``tau = temperature``). The target assignment is sharpened,
    ``p^(1/T) / sum p^(1/T)`` with ``T = target_sharpen_temperature``, and balanced over the (global) batch by
    ``sinkhorn_iterations`` Sinkhorn-Knopp steps. The loss is the mean over the anchors of
    ``H(p+, p(anchor)) = -sum_k p+_k log p_k(anchor)`` (every anchor view of an image predicts its target), plus
    ``regularization_weight`` times the mean-entropy maximisation term ``-H(mean p(anchor)) + log K``, the KL
    divergence of the mean anchor assignment from the uniform distribution (section 3, eq. 3).

    Argument names and defaults follow LightlySSL's ``MSNLoss`` (the paper's values, ``configs/pretrain/
    msn_vits16.yaml``).

    Args:
        temperature: Temperature ``tau`` of the prototype assignments.
        sinkhorn_iterations: Sinkhorn-Knopp iterations on the targets (0: none).
        regularization_weight: Weight ``lambda`` of the regularisation term (0: none).
        gather_distributed: Under multi-process training, balance the targets over the global batch (the official
            ``distributed_sinkhorn``) and take the mean anchor assignment over all ranks (the official
            ``AllReduce``), so the loss is that of the global batch.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        sinkhorn_iterations: int = 3,
        regularization_weight: float = 1.0,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_positive("temperature", temperature, owner)
        check_positive_int("sinkhorn_iterations", sinkhorn_iterations, owner, minimum=0)
        check_non_negative("regularization_weight", regularization_weight, owner)
        self.temperature = temperature
        self.sinkhorn_iterations = sinkhorn_iterations
        self.regularization_weight = regularization_weight
        self.gather_distributed = gather_distributed

    def forward(
        self,
        anchors: torch.Tensor,
        targets: torch.Tensor,
        prototypes: torch.Tensor,
        target_sharpen_temperature: float = 0.25,
    ) -> torch.Tensor:
        """The loss of one batch: the mean cross-entropy over the anchors plus the weighted regularisation term.

        Args:
            anchors: ``(V * B, D)`` embeddings of ``V`` anchor views of ``B`` images, view by view (rows
                ``v * B + b`` belong to image ``b``).
            targets: ``(B, D)`` target embeddings (no gradient flows into them).
            prototypes: ``(K, D)`` prototypes.
            target_sharpen_temperature: Sharpening temperature ``T`` of the targets (0.25).
        """
        return sum_of_terms(self.terms(anchors, targets, prototypes, target_sharpen_temperature))

    def terms(
        self,
        anchors: torch.Tensor,
        targets: torch.Tensor,
        prototypes: torch.Tensor,
        target_sharpen_temperature: float = 0.25,
    ) -> dict[str, torch.Tensor]:
        """The loss's terms, which sum to it: ``cross_entropy``, and ``regularization`` (weighted) when its weight
        is not 0. Arguments as :meth:`forward`."""
        if anchors.ndim != 2 or targets.ndim != 2 or prototypes.ndim != 2:
            raise ValueError(
                f"{type(self).__name__} takes (V * B, D) anchors, (B, D) targets and (K, D) prototypes, got shapes "
                f"{tuple(anchors.shape)}, {tuple(targets.shape)} and {tuple(prototypes.shape)}."
            )
        if len(targets) == 0 or len(anchors) % len(targets):
            raise ValueError(
                f"{type(self).__name__}: the {len(anchors)} anchors must be a whole number of views of the "
                f"{len(targets)} targets."
            )
        check_positive("target_sharpen_temperature", target_sharpen_temperature, type(self).__name__)
        num_views = len(anchors) // len(targets)
        with torch.autocast(anchors.device.type, enabled=False):  # K-long sums in float32 under mixed precision
            anchor_log_probs = F.log_softmax(self.anchor_logits(anchors, prototypes), dim=1)  # (V * B, K)
            with torch.no_grad():
                unit_prototypes = F.normalize(at_least_float32(prototypes.detach()), dim=1)  # (K, D)
                target_logits = F.normalize(at_least_float32(targets.detach()), dim=1) @ unit_prototypes.T  # (B, K)
                # Sharpening softmax(x / tau) with T is softmax(x / (tau * T)), computed in log space.
                sharpened = F.log_softmax(target_logits / (self.temperature * target_sharpen_temperature), dim=1)
                if self.sinkhorn_iterations > 0:
                    target_probs = sinkhorn(
                        sharpened,
                        iterations=self.sinkhorn_iterations,
                        epsilon=1.0,
                        gather_distributed=self.gather_distributed,
                    )  # (B, K), exp(sharpened) balanced over the prototypes
                else:
                    target_probs = sharpened.exp()
                target_probs = target_probs.repeat(num_views, 1)  # (V * B, K)
            terms = {"cross_entropy": -(target_probs * anchor_log_probs).sum(dim=1).mean()}
            if self.regularization_weight > 0:
                terms["regularization"] = self.regularization_weight * self.regularization_loss(
                    self.mean_probabilities(anchor_log_probs.exp())
                )
        return terms

    def anchor_logits(self, anchors: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """``(N, D), (K, D) -> (N, K)``: the logits ``z . q / tau`` of the anchors' assignments, in float32."""
        with torch.autocast(anchors.device.type, enabled=False):
            prototypes = F.normalize(at_least_float32(prototypes), dim=1)  # (K, D)
            return F.normalize(at_least_float32(anchors), dim=1) @ prototypes.T / self.temperature

    def mean_probabilities(self, probabilities: torch.Tensor) -> torch.Tensor:
        """``(N, K) -> (K,)``: the mean assignment, over all ranks' rows with ``gather_distributed``.

        The all-reduce keeps the gradient path to every rank's rows; ranks hold equally many rows.
        """
        total = probabilities.sum(dim=0)  # (K,)
        count = len(probabilities)
        if self.gather_distributed:
            total = distributed.all_reduce_sum(total)
            count *= distributed.world_size()
        return total / count

    def regularization_loss(self, mean_anchor_probs: torch.Tensor) -> torch.Tensor:
        """Mean-entropy maximisation: ``sum_k p_k log p_k + log K = KL(p || uniform)`` of the mean assignment."""
        num_prototypes = mean_anchor_probs.shape[0]
        return torch.xlogy(mean_anchor_probs, mean_anchor_probs).sum() + math.log(num_prototypes)
