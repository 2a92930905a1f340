"""TiCoLoss against the paper's eq. 4-5 computed independently over several steps of the running covariance
(float64, loops); the momentum encoder during a real ``ssl_hub.pretrain`` run; saving and restoring the covariance.

Global-batch loss and covariance on 2 gloo ranks: tests/test_gathered_losses.py.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import random_images
from transformers import TrainerCallback

import ssl_hub
from ssl_hub.data import ArrayImageDataset
from ssl_hub.heads import TiCoProjectionHead
from ssl_hub.losses import TiCoLoss
from ssl_hub.methods.tico import TiCo, TiCoConfig
from ssl_hub.transforms import BYOLView1Transform, BYOLView2Transform, TiCoTransform

Matrix = list[list[float]]


def unit_rows(z: torch.Tensor) -> Matrix:
    rows = z.tolist()
    return [[x / math.sqrt(sum(y * y for y in row)) for x in row] for row in rows]


def tico_reference(
    batches: list[tuple[torch.Tensor, torch.Tensor]], beta: float, rho: float
) -> tuple[list[float], Matrix]:
    """Eq. 4-5 step after step: C_t = beta C_{t-1} + (1 - beta) / N sum_i z_i z_i^T (C_0 = 0), and
    loss_t = 1 - 1/N sum_i <z_i, z'_i> + rho / N sum_i z_i^T C_t z_i on unit-norm embeddings."""
    dim = batches[0][0].shape[1]
    c = [[0.0] * dim for _ in range(dim)]
    losses = []
    for z_a, z_b in batches:
        a, b = unit_rows(z_a), unit_rows(z_b)
        n = len(a)
        c = [
            [beta * c[i][j] + (1 - beta) * sum(row[i] * row[j] for row in a) / n for j in range(dim)]
            for i in range(dim)
        ]
        invariance = 1.0 - sum(sum(x * y for x, y in zip(ra, rb, strict=True)) for ra, rb in zip(a, b, strict=True)) / n
        contrast = sum(row[i] * c[i][j] * row[j] for row in a for i in range(dim) for j in range(dim)) / n
        losses.append(invariance + rho * contrast)
    return losses, c


def batches(steps: int, batch_size: int = 5, dim: int = 4, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    result = []
    for _ in range(steps):
        z_a = torch.randn(batch_size, dim, generator=generator, dtype=torch.float64)
        result.append((z_a, z_a + 0.4 * torch.randn(batch_size, dim, generator=generator, dtype=torch.float64)))
    return result


@pytest.mark.parametrize("batch_covariance_gradient", [False, True])
@pytest.mark.parametrize(("beta", "rho"), [(0.9, 8.0), (0.9, 20.0), (0.5, 1.0), (0.0, 3.0), (1.0, 2.0)])
def test_loss_and_covariance_match_the_paper_over_several_steps(
    beta: float, rho: float, batch_covariance_gradient: bool
) -> None:
    data = batches(4)
    expected_losses, expected_covariance = tico_reference(data, beta, rho)
    criterion = TiCoLoss(beta=beta, rho=rho, batch_covariance_gradient=batch_covariance_gradient)
    for step, (z_a, z_b) in enumerate(data):
        loss = criterion(z_a, z_b)
        assert loss.dtype == torch.float64
        assert loss.item() == pytest.approx(expected_losses[step], rel=1e-10, abs=1e-12), f"step {step}"
        _, covariance = tico_reference(data[: step + 1], beta, rho)
        torch.testing.assert_close(criterion.C, torch.tensor(covariance, dtype=torch.float64), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(criterion.C, torch.tensor(expected_covariance, dtype=torch.float64))


def test_covariance_is_a_constant_for_backpropagation() -> None:
    (z_a, z_b), (z_a2, z_b2) = batches(2, seed=1)
    criterion = TiCoLoss(beta=0.7, rho=5.0)
    criterion(z_a, z_b)
    z_a2.requires_grad_(True)
    loss = criterion(z_a2, z_b2)
    (grad,) = torch.autograd.grad(loss, z_a2)
    # The same loss with C_t given as a fixed matrix, differentiated by autograd.
    covariance = criterion.C.clone()
    a, b = torch.nn.functional.normalize(z_a2, dim=1), torch.nn.functional.normalize(z_b2, dim=1)
    fixed = 1 - (a * b).sum(dim=1).mean() + 5.0 * torch.einsum("ni,ij,nj->n", a, covariance, a).mean()
    (expected,) = torch.autograd.grad(fixed, z_a2)
    torch.testing.assert_close(grad, expected)


def test_batch_covariance_gradient_flows_through_the_current_batch() -> None:
    (z_a, z_b), (z_a2, z_b2) = batches(2, seed=4)
    beta, rho = 0.7, 5.0
    criterion = TiCoLoss(beta=beta, rho=rho, batch_covariance_gradient=True)
    criterion(z_a, z_b)
    previous = criterion.C.clone()
    z_a2.requires_grad_(True)
    (grad,) = torch.autograd.grad(criterion(z_a2, z_b2), z_a2)
    # C_t = beta C_{t-1} + (1 - beta) B with B = z^T z / N built from the differentiated embeddings.
    a, b = torch.nn.functional.normalize(z_a2, dim=1), torch.nn.functional.normalize(z_b2, dim=1)
    covariance = beta * previous + (1 - beta) * torch.einsum("ni,nj->ij", a, a) / a.shape[0]
    loss = 1 - (a * b).sum(dim=1).mean() + rho * torch.einsum("ni,ij,nj->n", a, covariance, a).mean()
    (expected,) = torch.autograd.grad(loss, z_a2)
    torch.testing.assert_close(grad, expected)
    constant = TiCoLoss(beta=beta, rho=rho)
    constant.load_state_dict({"C": previous})  # the same C_{t-1}, the current batch detached
    (detached,) = torch.autograd.grad(constant(z_a2, z_b2), z_a2)
    assert not torch.allclose(grad, detached)  # the option changes the gradient (not just the docs)
    assert not criterion.C.requires_grad  # the stored matrix never carries the graph into the next step


def test_update_covariance_matrix_can_be_switched_off() -> None:
    (z_a, z_b), (z_a2, z_b2) = batches(2, seed=2)
    frozen = TiCoLoss(update_covariance_matrix=False)
    first = frozen(z_a, z_b)
    assert torch.equal(frozen.C, torch.zeros(4, 4, dtype=torch.float64))
    assert frozen(z_a, z_b).item() == first.item()  # nothing carried over
    running = TiCoLoss()
    running(z_a, z_b)
    stored = running.C.clone()
    running(z_a2, z_b2, update_covariance_matrix=False)  # per-call override, as LightlySSL's forward argument
    assert torch.equal(running.C, stored)


def test_covariance_buffer_is_saved_and_restored() -> None:
    data = batches(4, seed=3)
    criterion = TiCoLoss()
    for z_a, z_b in data[:2]:
        criterion(z_a, z_b)
    assert "C" in criterion.state_dict()
    restored = TiCoLoss()
    restored.load_state_dict(criterion.state_dict())  # a fresh loss takes the matrix's shape from the state
    for z_a, z_b in data[2:]:
        assert restored(z_a, z_b).item() == criterion(z_a, z_b).item()
    with pytest.raises(ValueError, match="covariance matrix"):
        restored(torch.randn(3, 6), torch.randn(3, 6))


def test_dim_allocates_the_covariance_at_construction() -> None:
    data = batches(2, seed=6)
    eager, lazy = TiCoLoss(dim=4).double(), TiCoLoss()
    assert torch.equal(eager.C, torch.zeros(4, 4, dtype=torch.float64))
    for z_a, z_b in data:
        assert eager(z_a, z_b).item() == lazy(z_a, z_b).item()
    torch.testing.assert_close(eager.C, lazy.C, rtol=0, atol=0)
    with pytest.raises(ValueError, match="dim"):
        TiCoLoss(dim=0)


def test_gather_distributed_is_a_no_op_in_one_process() -> None:
    (z_a, z_b), *_ = batches(1)
    torch.testing.assert_close(TiCoLoss(gather_distributed=True)(z_a, z_b), TiCoLoss()(z_a, z_b))


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"beta": -0.1}, "beta"),
        ({"beta": 1.5}, "beta"),
        ({"rho": -1.0}, "rho"),
        ({"rho": float("nan")}, "rho"),
    ],
)
def test_bad_loss_hyperparameters_are_refused_naming_the_argument(kwargs: dict[str, float], argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        TiCoLoss(**kwargs)
    with pytest.raises(ValueError, match=argument):
        ssl_hub.create_method("tico", backbone="test_resnet", **kwargs)


@pytest.mark.parametrize("argument", ["momentum_start", "momentum_end"])
@pytest.mark.parametrize("value", [-0.01, 1.01])
def test_bad_momentum_is_refused_naming_the_argument(argument: str, value: float) -> None:
    with pytest.raises(ValueError, match=argument):
        ssl_hub.create_method("tico", backbone="test_resnet", **{argument: value})


def test_paper_defaults() -> None:
    config = TiCoConfig()
    assert (config.beta, config.rho, config.momentum_start, config.momentum_end) == (0.9, 8.0, 0.99, 1.0)
    assert (config.projection_hidden_dim, config.projection_output_dim) == (4096, 256)
    head_defaults = {k: p.default for k, p in inspect.signature(TiCoProjectionHead).parameters.items()}
    assert head_defaults == {"input_dim": 2048, "hidden_dim": 4096, "output_dim": 256}
    transform = ssl_hub.create_method("tico", backbone="test_resnet").make_transform(32)
    assert isinstance(transform, TiCoTransform)
    assert [type(t) for t in transform.transforms] == [BYOLView1Transform, BYOLView2Transform]


class RecordEMA(TrainerCallback):
    """Teacher before each step (the EMA update runs in on_step_end), and student and teacher after it."""

    def __init__(self, method: TiCo) -> None:
        self.method = method
        self.records: list[dict[str, Any]] = []

    def _params(self, module: torch.nn.Module) -> torch.Tensor:
        return torch.cat([p.detach().double().flatten() for p in module.parameters()])

    def _pair(self) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.method
        student = torch.cat([self._params(m.backbone), self._params(m.projection_head)])
        teacher = torch.cat([self._params(m.teacher_backbone), self._params(m.teacher_projection_head)])
        return student, teacher

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.records.append({"teacher_before": self._pair()[1]})

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        student, teacher = self._pair()
        self.records[-1].update(student=student, teacher_after=teacher, step=state.global_step - 1)


def small_tico() -> TiCo:
    method = ssl_hub.create_method("tico", backbone="test_resnet", projection_hidden_dim=32, projection_output_dim=16)
    assert isinstance(method, TiCo)
    return method


def pretrain(method: TiCo, output_dir: Path, steps: int, callbacks: Sequence[TrainerCallback] = ()) -> Any:
    args = {
        "output_dir": str(output_dir),
        "max_steps": steps,
        "per_device_train_batch_size": 8,
        "learning_rate": 0.05,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "save_strategy": "no",
        "use_cpu": True,
        "disable_tqdm": True,
        "report_to": [],
    }
    data = ArrayImageDataset(random_images(24, 32))
    return ssl_hub.pretrain(method, data, args, image_size=32, save=False, callbacks=callbacks)


def test_momentum_encoder_moves_by_exactly_the_scheduled_momentum(tmp_path: Path) -> None:
    method = small_tico()
    recorder = RecordEMA(method)
    steps = 4
    pretrain(method, tmp_path, steps, [recorder])
    assert [r["step"] for r in recorder.records] == list(range(steps))
    for record in recorder.records:
        k = record["step"]
        momentum = 1.0 - (1.0 - 0.99) * (math.cos(math.pi * k / (steps - 1)) + 1) / 2  # BYOL's cosine, 0.99 -> 1
        before, after, student = record["teacher_before"], record["teacher_after"], record["student"]
        pull = student - before
        if momentum == 1.0:
            assert torch.equal(after, before)  # the last update keeps the teacher
            continue
        assert pull.norm() > 1e-3  # the student moved away from the teacher: the update is measurable
        # after = m * before + (1 - m) * student  =>  the momentum the update used, by least squares:
        implied = 1.0 - float((after - before) @ pull / (pull @ pull))
        assert implied == pytest.approx(momentum, abs=1e-6), f"step {k}"
        torch.testing.assert_close(after, momentum * before + (1 - momentum) * student, rtol=1e-6, atol=1e-7)


def test_load_method_restores_the_teacher_and_the_covariance(tmp_path: Path) -> None:
    method = small_tico()
    pretrain(method, tmp_path / "run", steps=2)
    assert method.criterion.C.shape == (16, 16)
    assert method.criterion.C.abs().sum() > 0
    teacher = torch.cat([p.flatten() for p in method.teacher_backbone.parameters()])
    student = torch.cat([p.flatten() for p in method.backbone.parameters()])
    assert not torch.equal(teacher, student)
    folder = method.save_pretrained(tmp_path / "hub")

    restored = ssl_hub.load_method(folder)
    assert isinstance(restored, TiCo)
    torch.testing.assert_close(restored.criterion.C, method.criterion.C, rtol=0, atol=0)
    for name in ("teacher_backbone", "teacher_projection_head"):
        for (key, value), (_, restored_value) in zip(
            getattr(method, name).state_dict().items(), getattr(restored, name).state_dict().items(), strict=True
        ):
            torch.testing.assert_close(restored_value, value, rtol=0, atol=0, msg=f"{name}.{key}")
    assert all(not p.requires_grad for p in restored.teacher_backbone.parameters())
    assert all(p.requires_grad for p in restored.backbone.parameters())


def test_a_method_saved_before_training_loads_and_trains(tmp_path: Path) -> None:
    method = small_tico()
    assert torch.equal(method.criterion.C, torch.zeros(16, 16))  # allocated by the method, the paper's C_0 = 0
    restored = ssl_hub.load_method(method.save_pretrained(tmp_path / "hub"))
    assert isinstance(restored, TiCo)
    assert torch.equal(restored.criterion.C, torch.zeros(16, 16))
    before = {name: value.detach().clone() for name, value in restored.backbone.named_parameters()}
    pretrain(restored, tmp_path / "run", steps=1)
    assert restored.criterion.C.shape == (16, 16)
    assert restored.criterion.C.abs().sum() > 0  # the step updated the covariance, and the weights
    assert any(not torch.equal(value, before[name]) for name, value in restored.backbone.named_parameters())
