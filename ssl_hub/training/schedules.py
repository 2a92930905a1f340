"""Pure schedule functions of the training step, shared by Trainer callbacks and plain PyTorch loops.

Each takes the step (0-based index of the optimizer step) and returns a value, so a resumed run recomputes exactly
the value it would have had.
"""

from __future__ import annotations

import math


def cosine_schedule(
    step: int, max_steps: int, start_value: float, end_value: float, period: int | None = None
) -> float:
    """Cosine from ``start_value`` at step 0 to ``end_value`` at step ``max_steps - 1`` (BYOL's momentum schedule).

    Args:
        step: Current step, ``0 <= step``.
        max_steps: Number of steps; ``step >= max_steps - 1`` gives ``end_value``.
        start_value: Value at step 0.
        end_value: Value at the last step.
        period: If given, the cosine restarts every ``period`` steps instead of spanning ``max_steps``.
    """
    if step < 0 or max_steps < 1:
        raise ValueError(f"cosine_schedule needs step >= 0 and max_steps >= 1, got {step} and {max_steps}.")
    if period is not None:
        if period < 1:
            raise ValueError(f"cosine_schedule: period must be >= 1, got {period}.")
        progress = (step % period) / period
    elif max_steps == 1:
        return end_value
    else:
        progress = min(step / (max_steps - 1), 1.0)
    return end_value - (end_value - start_value) * (math.cos(math.pi * progress) + 1) / 2


def linear_warmup_schedule(step: int, warmup_steps: int, start_value: float, end_value: float) -> float:
    """Linear from ``start_value`` at step 0 to ``end_value`` at ``warmup_steps``, constant after (DINO's
    teacher temperature)."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return end_value
    return start_value + (end_value - start_value) * step / warmup_steps


def steps_per_epoch(batches_per_epoch: int | None, gradient_accumulation_steps: int = 1, max_steps: int = 1) -> int:
    """Optimizer steps in one epoch, counted as ``transformers.Trainer`` counts them: the epoch's batches over the
    gradient accumulation steps, rounded up; a data loader without a length (``batches_per_epoch=None``) makes the
    whole run of ``max_steps`` one epoch, as the Trainer does. Callbacks pass ``len(train_dataloader)``, which the
    Trainer hands them (:func:`~ssl_hub.training.callbacks.trainer_steps_per_epoch`)."""
    if batches_per_epoch is None:
        return max(1, max_steps)
    return max(1, math.ceil(batches_per_epoch / max(gradient_accumulation_steps, 1)))


def linear_schedule(step: int, max_steps: int, start_value: float, end_value: float) -> float:
    """Linear from ``start_value`` at step 0 to ``end_value`` at step ``max_steps - 1``, constant after (the EMA
    momentum of MSN and I-JEPA, 0.996 -> 1).

    Args:
        step: Current step, ``0 <= step``.
        max_steps: Number of steps; ``step >= max_steps - 1`` gives ``end_value``.
        start_value: Value at step 0.
        end_value: Value at the last step.
    """
    if step < 0 or max_steps < 1:
        raise ValueError(f"linear_schedule needs step >= 0 and max_steps >= 1, got {step} and {max_steps}.")
    if max_steps == 1:
        return end_value
    progress = min(step / (max_steps - 1), 1.0)
    return start_value + (end_value - start_value) * progress
