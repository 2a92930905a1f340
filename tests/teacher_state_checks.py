"""Checks shared by the tests of methods with an EMA teacher or a memory bank (BYOL, MoCo, NNCLR, and the EMA update
of the masked-image teacher methods)."""

from __future__ import annotations

import math
import unittest
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from conftest import random_images
from torch import nn
from transformers import TrainerCallback

import ssl_hub
from ssl_hub.data import ArrayImageDataset
from ssl_hub.training import EMAUpdateCallback


def pretrain_a_few_steps(
    method: ssl_hub.SSLMethod, output_dir: Path, steps: int = 3, callbacks: Sequence[TrainerCallback] = ()
) -> Any:
    """A real ``ssl_hub.pretrain`` run: stock Trainer, the method's callbacks, 32 px views, batch 8."""
    args = {
        "output_dir": str(output_dir),
        "max_steps": steps,
        "per_device_train_batch_size": 8,
        "learning_rate": 1e-2,
        "warmup_steps": 0,  # the first step must move the student too
        "save_strategy": "no",
        "use_cpu": True,
        "disable_tqdm": True,
        "report_to": "none",
    }
    data = ArrayImageDataset(random_images(16, 32))
    return ssl_hub.pretrain(method, data, args, image_size=32, callbacks=callbacks, save=False)


def flat(modules: Sequence[nn.Module]) -> torch.Tensor:
    """All parameters of ``modules``, flattened into one float64 vector."""
    return torch.cat([p.detach().double().flatten() for m in modules for p in m.parameters()])


class TeacherRecorder(TrainerCallback):
    """Snapshots teacher and student around every optimizer step of a Trainer run.

    ``on_pre_optimizer_step`` sees the teacher before the step's EMA update; ``on_step_end`` runs after the method's
    own callbacks (``pretrain`` lists them first), so it sees the teacher after the update and the student after the
    optimizer step.
    """

    def __init__(self, pairs: Sequence[tuple[nn.Module, nn.Module]]) -> None:
        self.students = [student for student, _ in pairs]
        self.teachers = [teacher for _, teacher in pairs]
        self.records: list[dict[str, Any]] = []
        self._before: torch.Tensor | None = None

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._before = flat(self.teachers)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.records.append(
            {
                "step": state.global_step - 1,
                "max_steps": state.max_steps,
                "before": self._before,
                "after": flat(self.teachers),
                "student": flat(self.students),
            }
        )


def ema_callback(method: ssl_hub.SSLMethod) -> EMAUpdateCallback:
    """The method's one EMA callback."""
    (ema,) = [c for c in method.callbacks() if isinstance(c, EMAUpdateCallback)]
    return ema


def check_ema_follows(
    method: ssl_hub.SSLMethod, tmp_path: Path, schedule: Callable[[int, int], float], *, publishes_teacher: bool
) -> None:
    """During ``ssl_hub.pretrain``, after every step ``teacher == m * teacher_before + (1 - m) * student`` with
    ``m = schedule(step, max_steps)``, for every (student, teacher) pair of the method's EMA callback, and the
    momentum fitted from the data matches ``m``. A run that publishes its teacher warns that the teacher is left near
    its initialisation and records the share of its initial weights it keeps; one that publishes its student does
    neither."""
    recorder = TeacherRecorder(ema_callback(method).pairs)
    if publishes_teacher:
        with unittest.TestCase().assertLogs("ssl_hub.training.callbacks", level="WARNING") as logs:
            result = pretrain_a_few_steps(method, tmp_path, steps=3, callbacks=[recorder])
        assert any("EMA teacher" in line and "over 3 steps" in line for line in logs.output), logs.output
        expected_share = math.prod(schedule(step, 3) for step in range(3))
        assert result.training["teacher_initial_share"] == pytest.approx(expected_share, rel=1e-12)
    else:
        with unittest.TestCase().assertNoLogs("ssl_hub.training.callbacks", level="WARNING"):
            result = pretrain_a_few_steps(method, tmp_path, steps=3, callbacks=[recorder])
        assert "teacher_initial_share" not in result.training
    assert [r["step"] for r in recorder.records] == [0, 1, 2]
    for record in recorder.records:
        m = schedule(record["step"], record["max_steps"])
        before, after, student = record["before"], record["after"], record["student"]
        torch.testing.assert_close(after, m * before + (1 - m) * student, rtol=0, atol=5e-7)
        pull = student - before  # the teacher moves by (1 - m) * pull
        if m < 1:
            assert pull.abs().max() > 1e-3, "the student must have moved away from the teacher"
            fitted = 1 - float((after - before) @ pull / (pull @ pull))
            assert abs(fitted - m) < 1e-5, (record["step"], fitted, m)
        else:
            assert torch.equal(after, before)


def check_save_and_load(method: ssl_hub.SSLMethod, tmp_path: Path, state_prefixes: Sequence[str]) -> None:
    """After a short ``pretrain``: timm loads the published backbone with identical features, and ``load_method``
    restores every tensor whose key starts with one of ``state_prefixes`` (teachers, queues) exactly."""
    pretrain_a_few_steps(method, tmp_path / "run", steps=2)
    folder = method.save_pretrained(tmp_path / "hub")
    method.eval()
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    published = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(published(images), method.published(images), rtol=0, atol=0)

    restored = ssl_hub.load_method(folder)
    assert restored.config == method.config
    original, loaded = method.state_dict(), restored.state_dict()
    keys = [k for k in original if k.startswith(tuple(state_prefixes))]
    assert {k.split(".")[0] for k in keys} == {p.split(".")[0] for p in state_prefixes}, "every prefix has state"
    for key in keys:
        assert torch.equal(loaded[key], original[key]), key
