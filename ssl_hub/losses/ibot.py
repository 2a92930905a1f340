"""iBOT's masked-patch self-distillation loss (Zhou et al., ICLR 2022, arXiv:2111.07832), as DINOv2 uses it."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ssl_hub import distributed
from ssl_hub._validation import check_one_of, check_positive, check_positive_int, check_probability
from ssl_hub.losses.swav import sinkhorn
from ssl_hub.losses.utils import at_least_float32

CENTER_MODES = ("mean", "sinkhorn_knopp")


class IBOTPatchLoss(nn.Module):
    """Cross-entropy between the teacher's and the student's outputs at the patches masked for the student.

    The student sees a global crop with some patches replaced by a mask token, the teacher the unmasked crop;
    at every masked patch the student's distribution ``softmax(s / tau_s)`` is trained towards the teacher's. Each
    image's masked patches are averaged, then the images (those without masked patches count as zero):
    ``L = 1/B sum_b 1/|M_b| sum_{i in M_b} -sum_k P_t(i)_k log P_s(i)_k`` (iBOT eq. 2 / ``main_ibot.py``; DINOv2's
    ``iBOTPatchLoss.forward_masked``).

    The teacher's distribution is centred and sharpened as in DINO, ``softmax((t - c) / tau_t)`` with the center
    ``c`` updated to ``m c + (1 - m) mean(t)`` over the masked patches of the global batch (``center_mode="mean"``,
    DINOv2's "centering"; iBOT averages over all patches), or balanced over the masked patches of the global batch
    by Sinkhorn-Knopp, ``exp(t / tau_t)`` normalised for 3 iterations (``center_mode="sinkhorn_knopp"``, DINOv2
    section 4, after SwAV).

    Argument names and defaults follow LightlySSL's ``IBOTPatchLoss``.

    Args:
        output_dim: Width ``K`` of the head outputs.
        teacher_temp: Teacher temperature ``tau_t`` when ``forward`` is given none.
        student_temp: Student temperature ``tau_s``.
        center_mode: ``"mean"`` (centering) or ``"sinkhorn_knopp"``.
        center_momentum: Momentum ``m`` of the center (``"mean"`` mode).
        sinkhorn_iterations: Sinkhorn-Knopp iterations (``"sinkhorn_knopp"`` mode).
    """

    def __init__(
        self,
        output_dim: int = 65536,
        teacher_temp: float = 0.04,
        student_temp: float = 0.1,
        center_mode: str = "mean",
        center_momentum: float = 0.9,
        sinkhorn_iterations: int = 3,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_positive_int("output_dim", output_dim, owner)
        check_positive("teacher_temp", teacher_temp, owner)
        check_positive("student_temp", student_temp, owner)
        check_one_of("center_mode", center_mode, CENTER_MODES, owner)
        check_probability("center_momentum", center_momentum, owner)
        check_positive_int("sinkhorn_iterations", sinkhorn_iterations, owner)
        self.teacher_temp = teacher_temp
        self.student_temp = student_temp
        self.center_mode = center_mode
        self.center_momentum = center_momentum
        self.sinkhorn_iterations = sinkhorn_iterations
        self.center: torch.Tensor | None
        if center_mode == "mean":
            self.register_buffer("center", torch.zeros(1, output_dim))
        else:
            self.center = None

    def forward(
        self,
        teacher_out: torch.Tensor,
        student_out: torch.Tensor,
        mask: torch.Tensor,
        teacher_temp: float | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss of one batch; updates the center in ``"mean"`` mode.

        Args:
            teacher_out: ``(M, K)`` teacher outputs at the masked patches, in the order of ``mask.nonzero()``
                (image by image, raster order within an image): ``teacher_tokens[mask]``.
            student_out: ``(M, K)`` student outputs at the same patches.
            mask: ``(B, N)`` (or ``(B, h, w)``) boolean, ``True`` at the ``M`` masked patches.
            teacher_temp: Teacher temperature; ``self.teacher_temp`` if ``None``.

        Returns:
            The mean over the ``B`` images of the mean cross-entropy over each image's masked patches.
        """
        mask = mask.flatten(1)  # (B, N)
        if mask.dtype != torch.bool or teacher_out.ndim != 2 or teacher_out.shape != student_out.shape:
            raise ValueError(
                f"{type(self).__name__} takes (M, K) teacher and student outputs and a boolean mask, got "
                f"{tuple(teacher_out.shape)}, {tuple(student_out.shape)} and a {mask.dtype} mask."
            )
        if len(teacher_out) != mask.sum():  # a device synchronisation, cheap next to the head's matmul
            raise ValueError(
                f"{type(self).__name__}: {len(teacher_out)} outputs for {int(mask.sum())} masked patches; pass the "
                "outputs at the masked patches, tokens[mask]."
            )
        temperature = self.teacher_temp if teacher_temp is None else teacher_temp
        teacher = at_least_float32(teacher_out.detach())
        with torch.autocast(teacher.device.type, enabled=False):  # K-long sums in float32 under mixed precision
            with torch.no_grad():
                if self.center is None:
                    # the ranks hold different numbers of masked patches: sinkhorn all-reduces the count
                    targets = sinkhorn(teacher / temperature, self.sinkhorn_iterations, 1.0, gather_distributed=True)
                else:
                    targets = F.softmax((teacher - self.center) / temperature, dim=-1)  # (M, K)
            log_probs = F.log_softmax(at_least_float32(student_out) / self.student_temp, dim=-1)  # (M, K)
            cross_entropy = -(targets * log_probs).sum(dim=-1)  # (M,)
            per_image = mask.sum(dim=1, keepdim=True).clamp(min=1).to(cross_entropy.dtype)  # (B, 1)
            weights = (1.0 / per_image).expand(mask.shape)[mask]  # (M,): 1 / masked patches of the patch's image
            loss = (cross_entropy * weights).sum() / len(mask)
        if self.center is not None:
            self.update_center(teacher)
        return loss

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        """Move the center towards the mean of ``teacher_out`` ``(M, K)`` over all ranks (kept if none has any)."""
        if self.center is None:
            raise RuntimeError(f"{type(self).__name__} has no center in center_mode={self.center_mode!r}.")
        total = distributed.all_reduce_sum(teacher_out.sum(dim=0))  # (K,)
        count = distributed.all_reduce_sum(teacher_out.new_tensor(float(len(teacher_out))))
        batch_center = (total / count.clamp(min=1.0)).to(self.center.dtype)
        updated = self.center * self.center_momentum + batch_center * (1.0 - self.center_momentum)
        self.center.copy_(torch.where(count > 0, updated, self.center))
