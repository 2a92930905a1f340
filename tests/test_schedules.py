"""Schedule functions and the generic step-dependent callbacks (EMA teachers, frozen parameters)."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import nn
from transformers import TrainerControl, TrainerState, TrainingArguments

from ssl_hub.modules import ema_copy, update_momentum
from ssl_hub.training import (
    EMAUpdateCallback,
    FreezeParametersCallback,
    LinearEMAUpdateCallback,
    cosine_schedule,
    linear_warmup_schedule,
    steps_per_epoch,
)


def test_cosine_schedule_follows_byol_formula() -> None:
    # BYOL: tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2, here with K = max_steps - 1 so the last step ends it.
    for step in range(11):
        expected = 1 - (1 - 0.99) * (math.cos(math.pi * step / 10) + 1) / 2
        assert cosine_schedule(step, 11, 0.99, 1.0) == pytest.approx(expected)
    assert cosine_schedule(50, 11, 0.99, 1.0) == 1.0
    assert cosine_schedule(0, 1, 0.5, 1.0) == 1.0
    assert cosine_schedule(5, 100, 0.0, 1.0, period=10) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="step"):
        cosine_schedule(-1, 10, 0.0, 1.0)


def test_linear_warmup_then_constant() -> None:
    assert [linear_warmup_schedule(s, 4, 0.04, 0.08) for s in (0, 2, 4, 9)] == pytest.approx([0.04, 0.06, 0.08, 0.08])
    assert linear_warmup_schedule(0, 0, 0.04, 0.08) == 0.08
    assert steps_per_epoch(100, 3) == 34  # 100 batches, 3 accumulation steps: the Trainer's count, rounded up
    assert steps_per_epoch(None, 3, max_steps=7) == 7  # no length: the whole run is one epoch, as for the Trainer


def test_update_momentum_is_the_exact_moving_average() -> None:
    student = nn.Linear(3, 2)
    teacher = ema_copy(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    before = [p.clone() for p in teacher.parameters()]
    update_momentum(student, teacher, 0.9)
    for t, b, s in zip(teacher.parameters(), before, student.parameters(), strict=True):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * s)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        update_momentum(student, teacher, 1.5)


def state_at(step: int, max_steps: int = 10, epochs: float = 2.0) -> TrainerState:
    state = TrainerState()
    state.global_step, state.max_steps, state.num_train_epochs = step, max_steps, epochs
    return state


def test_ema_callback_applies_the_scheduled_momentum_of_the_step_just_taken() -> None:
    student = nn.Linear(2, 2)
    teacher = ema_copy(student)
    with torch.no_grad():
        student.weight.fill_(1.0)
        teacher.weight.fill_(0.0)
    callback = EMAUpdateCallback([(student, teacher)], momentum_start=0.9, momentum_end=1.0)
    args = TrainingArguments(output_dir="unused", report_to="none")
    callback.on_step_end(args, state_at(step=3), TrainerControl())  # after the optimizer step with index 2
    m = cosine_schedule(2, 10, 0.9, 1.0)
    torch.testing.assert_close(teacher.weight, torch.full((2, 2), 1.0 - m))


@pytest.mark.parametrize("callback_class", [EMAUpdateCallback, LinearEMAUpdateCallback])
def test_initial_weight_share_is_what_the_updates_leave_of_the_initial_teacher(callback_class: type) -> None:
    # A teacher starting at 1 and pulled towards a student held at 0 keeps exactly its initial share; the reference
    # runs the callback's own updates in float64.
    student, teacher = nn.Linear(1, 1, bias=False).double(), nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        student.weight.fill_(0.0)
        teacher.weight.fill_(1.0)
    callback = callback_class([(student, teacher)], momentum_start=0.9, momentum_end=1.0)
    args = TrainingArguments(output_dir="unused", report_to="none")
    for step in range(1, 31):
        callback.on_step_end(args, state_at(step, max_steps=30), TrainerControl())
    assert callback.initial_weight_share(30) == pytest.approx(teacher.weight.item(), rel=1e-12)
    assert 0.9**30 < teacher.weight.item() < 0.9  # momenta from 0.9 up to 1: neither extreme


class PublishesTeacher(nn.Module):
    published_backbone = "teacher_backbone"

    def __init__(self) -> None:
        super().__init__()
        self.backbone, self.teacher_backbone = nn.Linear(1, 1), nn.Linear(1, 1)


@pytest.mark.parametrize(
    ("max_steps", "published", "warned"),
    [(95, "teacher_backbone", True), (936, "teacher_backbone", True), (1200, "teacher_backbone", False),
     (95, "backbone", False)],
)  # fmt: skip
def test_a_published_teacher_left_near_its_initialisation_is_warned_about(
    max_steps: int, published: str, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    model = PublishesTeacher()
    model.published_backbone = published
    callback = LinearEMAUpdateCallback([(model.backbone, model.teacher_backbone)], 0.996, 1.0)
    args = TrainingArguments(output_dir="unused", report_to="none")
    with caplog.at_level(logging.WARNING, logger="ssl_hub.training.callbacks"):
        callback.on_train_begin(args, state_at(0, max_steps=max_steps), TrainerControl(), model=model)
    assert ("EMA teacher" in caplog.text) == warned
    if warned:
        share = callback.initial_weight_share(max_steps)
        assert f"{100 * share:.0f}% of its initial weights" in caplog.text
        assert f"over {max_steps} steps" in caplog.text
        suggested = callback.momentum_start_for_share(max_steps, 0.1)
        assert f"lower momentum_start to {suggested:.3f} or below" in caplog.text
        shares = [LinearEMAUpdateCallback([], start, 1.0).initial_weight_share(max_steps)
                  for start in (suggested, suggested + 0.001)]  # fmt: skip
        assert shares[0] <= 0.1 < shares[1]


@pytest.mark.parametrize(("batches", "accumulation"), [(5, 1), (9, 2), (10, 2)])
def test_frozen_parameters_lose_their_gradient_during_the_frozen_epochs_only(batches: int, accumulation: int) -> None:
    """An epoch is the Trainer's: its data loader's batches over the accumulation steps, rounded up (5 steps here),
    whatever max_steps / num_train_epochs (here 10 / 3) says."""
    layer = nn.Linear(2, 2)
    callback = FreezeParametersCallback(list(layer.parameters()), frozen_epochs=1)
    args = TrainingArguments(output_dir="unused", report_to="none", gradient_accumulation_steps=accumulation)
    for step, frozen in [(0, True), (4, True), (5, False)]:
        layer.weight.grad = torch.ones(2, 2)
        state = state_at(step, max_steps=10, epochs=3)
        callback.on_pre_optimizer_step(args, state, TrainerControl(), train_dataloader=[None] * batches)
        assert (layer.weight.grad is None) == frozen, step
    layer.weight.grad = torch.ones(2, 2)  # a data loader without a length: the run is one epoch, as for the Trainer
    callback.on_pre_optimizer_step(args, state_at(9), TrainerControl(), train_dataloader=iter([]))
    assert layer.weight.grad is None
    with pytest.raises(ValueError, match="exactly one"):
        FreezeParametersCallback([], frozen_steps=1, frozen_epochs=1)
