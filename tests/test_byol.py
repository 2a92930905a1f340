"""BYOL: the loss against the paper's formula, the EMA target during a real pretrain run, saved state, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import std_of_l2_normalized_reference
from teacher_state_checks import check_ema_follows, check_save_and_load

import ssl_hub
from ssl_hub.methods import BYOL, BYOLConfig
from ssl_hub.training import cosine_schedule
from ssl_hub.transforms import BYOLTransform

SMALL = {"projection_hidden_dim": 32, "projection_output_dim": 8, "prediction_hidden_dim": 16}


def byol_reference(p0: torch.Tensor, p1: torch.Tensor, z0: torch.Tensor, z1: torch.Tensor) -> float:
    """BYOL eq. 2 plus its symmetric term, ||q_1/|q_1| - z'_2/|z'_2| ||^2 + ||q_2/|q_2| - z'_1/|z'_1| ||^2, mean."""

    def normalised_squared_error(q: list[float], z: list[float]) -> float:
        q_norm, z_norm = math.sqrt(sum(x * x for x in q)), math.sqrt(sum(x * x for x in z))
        return sum((a / q_norm - b / z_norm) ** 2 for a, b in zip(q, z, strict=True))

    pairs = [*zip(p0.tolist(), z1.tolist(), strict=True), *zip(p1.tolist(), z0.tolist(), strict=True)]
    return sum(normalised_squared_error(q, z) for q, z in pairs) / len(p0)


@pytest.mark.parametrize("backbone", ["test_resnet", "test_vit"])
def test_loss_is_the_papers_symmetric_loss_of_online_predictions_and_target_projections(backbone: str) -> None:
    torch.manual_seed(0)
    method = ssl_hub.create_method("byol", backbone=backbone, **SMALL).double()
    with torch.no_grad():  # a target different from the online network, as after some training
        for parameter in method.teacher_projection_head.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    generator = torch.Generator().manual_seed(1)
    views = [torch.randn(4, 3, 32, 32, generator=generator, dtype=torch.float64) for _ in range(2)]
    with torch.no_grad():
        p0, p1 = (method.prediction_head(method.projection_head(method.backbone(v))) for v in views)
        z0, z1 = (method.teacher_projection_head(method.teacher_backbone(v)) for v in views)
        loss = method(views=views).loss
    # Our loss is -(cos(p0, z1) + cos(p1, z0)) / 2; the paper's symmetric loss is 4 + 4 * it.
    assert 4 + 4 * loss.item() == pytest.approx(byol_reference(p0, p1, z0, z1), rel=1e-10)


def test_logs_simsiams_collapse_monitor_on_the_online_projection() -> None:
    torch.manual_seed(0)
    method = ssl_hub.create_method("byol", backbone="test_resnet", **SMALL).double()
    views = [torch.randn(4, 3, 32, 32, dtype=torch.float64) for _ in range(2)]
    with torch.no_grad():
        output = method(views=views)
        z0 = method.projection_head(method.backbone(views[0]))
    expected = std_of_l2_normalized_reference(z0.tolist())
    assert output.metrics["l2_normalized_std"].item() == pytest.approx(expected, rel=1e-6)


def test_gradient_flows_into_the_online_network_only() -> None:
    method = ssl_hub.create_method("byol", backbone="test_resnet", **SMALL)
    method(views=[torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]).loss.backward()
    online = [method.backbone, method.projection_head, method.prediction_head]
    assert all(p.grad is not None for module in online for p in module.parameters())
    for target in (method.teacher_backbone, method.teacher_projection_head):
        assert all(not p.requires_grad and p.grad is None for p in target.parameters())


def test_target_starts_as_a_copy_of_the_online_backbone_and_projector() -> None:
    method = ssl_hub.create_method("byol", backbone="test_resnet", **SMALL)
    for student, teacher in [
        (method.backbone, method.teacher_backbone),
        (method.projection_head, method.teacher_projection_head),
    ]:
        for (name, s), (_, t) in zip(student.state_dict().items(), teacher.state_dict().items(), strict=True):
            assert torch.equal(s, t), name
    (ema,) = method.callbacks()
    assert (ema.momentum_start, ema.momentum_end) == (0.99, 1.0)


@pytest.mark.parametrize("backbone", ["test_resnet", "test_vit"])
def test_target_moves_by_the_cosine_momentum_schedule_during_pretrain(backbone: str, tmp_path: Path) -> None:
    method = ssl_hub.create_method("byol", backbone=backbone, **SMALL, momentum_start=0.9)
    check_ema_follows(
        method, tmp_path, lambda step, steps: cosine_schedule(step, steps, 0.9, 1.0), publishes_teacher=False
    )


def test_save_publishes_the_online_backbone_and_load_restores_the_target(tmp_path: Path) -> None:
    method = ssl_hub.create_method("byol", backbone="test_resnet", **SMALL, momentum_start=0.9)
    check_save_and_load(method, tmp_path, ["teacher_backbone.", "teacher_projection_head.", "prediction_head."])
    assert method.published_backbone == "backbone"
    assert method.published is method.backbone
    teacher, student = method.teacher_backbone.state_dict(), method.backbone.state_dict()
    assert any(not torch.equal(teacher[k], student[k]) for k in student), "the target lags behind after training"


def test_defaults_are_the_papers() -> None:
    config = BYOLConfig()
    assert (config.projection_hidden_dim, config.projection_output_dim, config.prediction_hidden_dim) == (
        4096,
        256,
        4096,
    )
    assert (config.momentum_start, config.momentum_end) == (0.99, 1.0)
    assert BYOL.transform_class is BYOLTransform
    method = ssl_hub.create_method("byol", backbone="test_resnet")
    assert method.projection_head.layers[0].in_features == method.feature_dim
    assert method.prediction_head.layers[-1].out_features == 256


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("momentum_start", 1.5),
        ("momentum_start", -0.1),
        ("momentum_end", 1.01),
        ("projection_hidden_dim", 0),
        ("projection_output_dim", -4),
        ("prediction_hidden_dim", 2.5),
    ],
)
def test_bad_hyperparameters_fail_at_construction_naming_the_argument(argument: str, value: float) -> None:
    with pytest.raises(ValueError, match=argument):
        ssl_hub.create_method("byol", backbone="test_resnet", **{argument: value})


def test_wrong_number_of_views_is_refused() -> None:
    method = ssl_hub.create_method("byol", backbone="test_resnet", **SMALL)
    with pytest.raises(ValueError, match="2 views"):
        method(views=[torch.randn(2, 3, 32, 32)])
