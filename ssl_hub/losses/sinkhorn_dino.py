"""DINO's loss with Sinkhorn-Knopp centering of the teacher, as DINOv2 trains (Oquab et al., 2023,
arXiv:2304.07193, section 4; official ``dinov2/loss/dino_clstoken_loss.py``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ssl_hub._validation import check_positive, check_positive_int
from ssl_hub.losses.swav import sinkhorn
from ssl_hub.losses.utils import at_least_float32


class SinkhornDINOLoss(nn.Module):
    """:class:`~ssl_hub.losses.DINOLoss` with the teacher's centering and softmax replaced by Sinkhorn-Knopp.

    "We replace the teacher softmax-centering step of DINO and iBOT by the Sinkhorn-Knopp batch normalization of
    SwAV" (DINOv2, section 4): the teacher distributions of all global crops of the global batch are
    ``exp(t / tau_t)`` balanced over the ``K`` outputs by ``sinkhorn_iterations`` iterations, with no center to
    keep. The loss is, as DINO's, the mean over the pairs of a teacher crop ``i`` and a different student crop
    ``j`` of the batch mean of ``-sum_k P_t(x_i)_k log softmax(s_j / tau_s)_k``.

    Args:
        student_temp: Student temperature ``tau_s``.
        sinkhorn_iterations: Sinkhorn-Knopp iterations (3 in DINOv2).
    """

    def __init__(self, student_temp: float = 0.1, sinkhorn_iterations: int = 3) -> None:
        super().__init__()
        check_positive("student_temp", student_temp, type(self).__name__)
        check_positive_int("sinkhorn_iterations", sinkhorn_iterations, type(self).__name__)
        self.student_temp = student_temp
        self.sinkhorn_iterations = sinkhorn_iterations

    def forward(
        self,
        teacher_out: Sequence[torch.Tensor],
        student_out: Sequence[torch.Tensor],
        teacher_temp: float | torch.Tensor = 0.07,
    ) -> torch.Tensor:
        """The loss of one batch.

        Args:
            teacher_out: ``(B, K)`` teacher outputs, one per global crop.
            student_out: ``(B, K)`` student outputs, one per crop, the global crops first in the same order.
            teacher_temp: Teacher temperature ``tau_t``.

        Returns:
            The mean cross-entropy over all pairs of a teacher and a different student crop.
        """
        n_teacher, n_student = len(teacher_out), len(student_out)
        if n_teacher == 0 or n_teacher > n_student or (n_teacher == 1 and n_student == 1):
            raise ValueError(
                f"{type(self).__name__} needs teacher outputs of the global crops and student outputs of all crops "
                f"(global crops first) with at least one pair of different crops, got {n_teacher} teacher and "
                f"{n_student} student output(s)."
            )
        teacher = torch.cat(list(teacher_out))  # (T * B, K)
        student = at_least_float32(torch.stack(list(student_out)))  # (S, B, K)
        with torch.autocast(teacher.device.type, enabled=False):
            targets = self.teacher_targets(teacher, teacher_temp).view(n_teacher, -1, teacher.shape[-1])  # (T, B, K)
            log_probs = F.log_softmax(student / self.student_temp, dim=-1)  # (S, B, K)
            cross_entropy = -torch.einsum("tbk,sbk->ts", targets, log_probs) / targets.shape[1]  # (T, S)
        different_crop = ~torch.eye(n_teacher, n_student, dtype=torch.bool, device=cross_entropy.device)
        return cross_entropy[different_crop].mean()

    @torch.no_grad()
    def teacher_targets(self, teacher_out: torch.Tensor, teacher_temp: float | torch.Tensor) -> torch.Tensor:
        """``(N, K) -> (N, K)``: the teacher distributions that the students predict, ``exp(t / tau_t)`` balanced by
        Sinkhorn-Knopp over the ``K`` outputs and over the ``N`` teacher outputs of every global crop of the global
        batch (its sums all-reduced on several processes); each row sums to 1."""
        with torch.autocast(teacher_out.device.type, enabled=False):
            return sinkhorn(
                at_least_float32(teacher_out.detach()) / teacher_temp,
                iterations=self.sinkhorn_iterations,
                epsilon=1.0,
                gather_distributed=True,
            )
