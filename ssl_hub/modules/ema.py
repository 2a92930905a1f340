"""Exponential moving averages of networks: BYOL's / MoCo's / DINO's teacher (LightlySSL's helper names)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ssl_hub._validation import check_probability


def deactivate_requires_grad(module: nn.Module) -> None:
    """Stop gradients into every parameter of ``module`` (a teacher is updated by EMA only)."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)


def activate_requires_grad(module: nn.Module) -> None:
    """Let gradients into every parameter of ``module`` again."""
    for parameter in module.parameters():
        parameter.requires_grad_(True)


def ema_copy(module: nn.Module) -> nn.Module:
    """A frozen deep copy of ``module`` to serve as its EMA teacher."""
    teacher = copy.deepcopy(module)
    deactivate_requires_grad(teacher)
    return teacher


@torch.no_grad()
def update_momentum(model: nn.Module, model_ema: nn.Module, m: float) -> None:
    """``model_ema <- m * model_ema + (1 - m) * model``, parameter by parameter.

    Buffers (batch-norm statistics) are left alone: the teacher computes its own in its forward passes.

    Args:
        model: The student.
        model_ema: The teacher, with the same parameter layout.
        m: Momentum in [0, 1]; 1 keeps the teacher, 0 copies the student.
    """
    check_probability("m", m, "update_momentum")
    teacher: list[torch.Tensor] = list(model_ema.parameters())
    student: list[torch.Tensor] = [p.detach() for p in model.parameters()]
    if len(teacher) != len(student):
        raise ValueError(f"update_momentum: {len(student)} student vs {len(teacher)} teacher parameters.")
    torch._foreach_lerp_(teacher, student, 1.0 - m)
