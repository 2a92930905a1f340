"""DINO's self-distillation loss with centering and sharpening (Caron et al., 2021, arXiv:2104.14294)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ssl_hub import distributed
from ssl_hub._validation import check_positive, check_positive_int, check_probability
from ssl_hub.losses.utils import at_least_float32


class DINOLoss(nn.Module):
    """Cross-entropy between the centred, sharpened teacher distribution and the student distribution.

    With teacher outputs ``t_i`` of the global crops and student outputs ``s_j`` of all crops (the global crops
    first, in the same order), the loss is the mean over the pairs ``i != j`` of
    ``-sum_k softmax((t_i - c) / tau_t)_k * log_softmax(s_j / tau_s)_k``, averaged over the batch (section 3.1 and
    algorithm 1). After each call the center ``c`` moves towards the mean teacher output of the batch:
    ``c <- m c + (1 - m) mean(t)`` (section 3.1, "avoiding collapse"), the mean over the global batch when training
    on several processes.

    Argument names and defaults follow LightlySSL's ``DINOLoss`` (the official code's defaults).

    Args:
        output_dim: Width ``K`` of the head outputs.
        warmup_teacher_temp: Teacher temperature at the start of training.
        teacher_temp: Teacher temperature after the warm-up (the paper warms up to 0.07; 0.04 is the official
            code's default).
        warmup_teacher_temp_epochs: Epochs of the linear warm-up from ``warmup_teacher_temp`` to ``teacher_temp``.
        student_temp: Student temperature ``tau_s``.
        center_momentum: Momentum ``m`` of the center.
    """

    center: torch.Tensor

    def __init__(
        self,
        output_dim: int = 65536,
        warmup_teacher_temp: float = 0.04,
        teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 30,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_positive_int("output_dim", output_dim, owner)
        check_positive("warmup_teacher_temp", warmup_teacher_temp, owner)
        check_positive("teacher_temp", teacher_temp, owner)
        check_positive_int("warmup_teacher_temp_epochs", warmup_teacher_temp_epochs, owner, minimum=0)
        check_positive("student_temp", student_temp, owner)
        check_probability("center_momentum", center_momentum, owner)
        self.warmup_teacher_temp = warmup_teacher_temp
        self.teacher_temp = teacher_temp
        self.warmup_teacher_temp_epochs = warmup_teacher_temp_epochs
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, output_dim))

    def teacher_temperature(self, epoch: int) -> float:
        """The scheduled teacher temperature of ``epoch``: linear warm-up, then constant."""
        from ssl_hub.training.schedules import linear_warmup_schedule  # ssl_hub.training imports the methods

        return linear_warmup_schedule(
            epoch, self.warmup_teacher_temp_epochs, self.warmup_teacher_temp, self.teacher_temp
        )

    def forward(
        self,
        teacher_out: Sequence[torch.Tensor],
        student_out: Sequence[torch.Tensor],
        teacher_temp: float | torch.Tensor | None = None,
        epoch: int | None = None,
    ) -> torch.Tensor:
        """The loss of one batch; updates the center.

        Args:
            teacher_out: ``(B, K)`` teacher outputs, one per global crop.
            student_out: ``(B, K)`` student outputs, one per crop, the global crops first in the same order.
            teacher_temp: Teacher temperature to use; by default the scheduled one of ``epoch``, or ``teacher_temp``
                without an epoch.
            epoch: Current epoch, for the teacher temperature schedule.

        Returns:
            The mean cross-entropy over all pairs of a teacher and a different student crop.
        """
        n_teacher, n_student = len(teacher_out), len(student_out)
        if n_teacher == 0 or n_student == 0 or n_teacher > n_student or (n_teacher == 1 and n_student == 1):
            raise ValueError(
                f"DINOLoss needs teacher outputs of the global crops and student outputs of all crops (global crops "
                f"first) with at least one pair of different crops, got {n_teacher} teacher and {n_student} student "
                "output(s)."
            )
        if teacher_temp is None:
            teacher_temp = self.teacher_temp if epoch is None else self.teacher_temperature(epoch)
        teacher = at_least_float32(torch.stack(list(teacher_out)))  # (T, B, K)
        student = at_least_float32(torch.stack(list(student_out)))  # (S, B, K)
        with torch.autocast(teacher.device.type, enabled=False):  # the K-long sums in float32 under mixed precision
            targets = self.teacher_targets(teacher, teacher_temp)  # (T, B, K)
            log_probs = F.log_softmax(student / self.student_temp, dim=-1)  # (S, B, K)
            cross_entropy = -torch.einsum("tbk,sbk->ts", targets, log_probs) / teacher.shape[1]  # (T, S)
        different_crop = ~torch.eye(n_teacher, n_student, dtype=torch.bool, device=cross_entropy.device)
        loss = cross_entropy[different_crop].mean()
        self.update_center(teacher)
        return loss

    @torch.no_grad()
    def teacher_targets(self, teacher_out: torch.Tensor, teacher_temp: float | torch.Tensor) -> torch.Tensor:
        """``(..., K) -> (..., K)``: the teacher distributions ``softmax((t - c) / tau_t)`` that the students
        predict, with the center as it is now (before this batch's update)."""
        return F.softmax((at_least_float32(teacher_out.detach()) - self.center) / teacher_temp, dim=-1)

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        """Move the center towards the mean of ``teacher_out`` ``(T, B, K)`` over all ranks."""
        teacher_out = teacher_out.detach()
        total = distributed.all_reduce_sum(teacher_out.sum(dim=(0, 1)))  # (K,)
        count = teacher_out.shape[0] * teacher_out.shape[1] * distributed.world_size()
        batch_center = (total / count).to(self.center.dtype)
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1.0 - self.center_momentum)
