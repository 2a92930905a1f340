"""SimSiam: the loss against the paper's formula, the stop-gradient, heads, augmentation defaults, the recipe (SGD, the
predictor at a fixed rate), bad input."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import std_of_l2_normalized_reference
from PIL import Image
from teacher_state_checks import pretrain_a_few_steps
from torchvision.transforms import v2
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

import ssl_hub
from ssl_hub.heads import SimSiamPredictionHead, SimSiamProjectionHead
from ssl_hub.methods import SimSiam, SimSiamConfig
from ssl_hub.training import FixedLearningRateCallback
from ssl_hub.transforms import SimSiamTransform, SimSiamViewTransform

SMALL = {"projection_hidden_dim": 32, "projection_output_dim": 16, "prediction_hidden_dim": 8}


def simsiam_reference(p0: torch.Tensor, p1: torch.Tensor, z0: torch.Tensor, z1: torch.Tensor) -> float:
    """SimSiam eq. 4: L = D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2 with D(p, z) = -p/||p|| . z/||z||, batch mean."""

    def d(p: list[float], z: list[float]) -> float:
        dot = sum(a * b for a, b in zip(p, z, strict=True))
        return -dot / (math.sqrt(sum(a * a for a in p)) * math.sqrt(sum(b * b for b in z)))

    total = sum(d(p, z) for p, z in zip(p0.tolist(), z1.tolist(), strict=True)) / 2
    total += sum(d(p, z) for p, z in zip(p1.tolist(), z0.tolist(), strict=True)) / 2
    return total / len(p0)


def small_views(dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(4, 3, 32, 32, generator=generator, dtype=dtype) for _ in range(2)]


@pytest.mark.parametrize("backbone", ["test_resnet", "test_vit"])
def test_loss_is_the_papers_symmetric_negative_cosine(backbone: str) -> None:
    torch.manual_seed(0)
    method = ssl_hub.create_method("simsiam", backbone=backbone, **SMALL).double()
    views = small_views(torch.float64)
    with torch.no_grad():
        z0, z1 = (method.projection_head(method.backbone(v)) for v in views)
        p0, p1 = method.prediction_head(z0), method.prediction_head(z1)
        loss = method(views=views).loss
    assert loss.item() == pytest.approx(simsiam_reference(p0, p1, z0, z1), rel=1e-10)


def test_logs_the_papers_collapse_monitor_on_the_first_views_projection() -> None:
    torch.manual_seed(0)
    method = ssl_hub.create_method("simsiam", backbone="test_resnet", **SMALL).double()
    views = small_views(torch.float64)
    with torch.no_grad():
        output = method(views=views)
        z0 = method.projection_head(method.backbone(views[0]))
    expected = std_of_l2_normalized_reference(z0.tolist())
    assert output.metrics["l2_normalized_std"].item() == pytest.approx(expected, rel=1e-6)


def gradients(method: SimSiam, loss: torch.Tensor) -> list[torch.Tensor]:
    method.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in method.backbone.parameters() if p.grad is not None]


def test_the_gradient_is_stopped_at_the_target_projections() -> None:
    torch.manual_seed(0)
    method = ssl_hub.create_method("simsiam", backbone="test_resnet", **SMALL).double()
    views = small_views(torch.float64)
    ours = gradients(method, method(views=views).loss)

    def loss_with(stop_gradient: bool) -> torch.Tensor:
        z0, z1 = (method.projection_head(method.backbone(v)) for v in views)
        p0, p1 = method.prediction_head(z0), method.prediction_head(z1)
        t0, t1 = (z0.detach(), z1.detach()) if stop_gradient else (z0, z1)
        cos = torch.nn.functional.cosine_similarity
        return -(cos(p0, t1).mean() + cos(p1, t0).mean()) / 2

    stopped, not_stopped = gradients(method, loss_with(True)), gradients(method, loss_with(False))
    for g, expected in zip(ours, stopped, strict=True):
        torch.testing.assert_close(g, expected)
    assert any(not torch.allclose(g, other) for g, other in zip(ours, not_stopped, strict=True))


def test_heads_follow_the_paper() -> None:
    projector = SimSiamProjectionHead(64)
    linears = [m for m in projector.layers if isinstance(m, torch.nn.Linear)]
    norms = [m for m in projector.layers if isinstance(m, torch.nn.BatchNorm1d)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 2048), (2048, 2048), (2048, 2048)]
    assert len(norms) == 3, "BN after every layer"
    assert norms[-1].weight is None, "the output BN has no affine parameters"
    assert isinstance(projector.layers[-1], torch.nn.BatchNorm1d), "no ReLU after the output"
    predictor = SimSiamPredictionHead()
    linears = [m for m in predictor.layers if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(2048, 512), (512, 2048)]
    assert linears[-1].bias is not None
    assert isinstance(predictor.layers[-1], torch.nn.Linear)
    config = SimSiamConfig()
    assert (config.projection_hidden_dim, config.projection_output_dim, config.prediction_hidden_dim) == (
        2048,
        2048,
        512,
    )
    callbacks = ssl_hub.create_method("simsiam", backbone="test_resnet").callbacks()
    assert [type(c) for c in callbacks] == [FixedLearningRateCallback], "no EMA: only the predictor's fixed rate"


def test_augmentation_is_moco_v2s_recipe() -> None:
    view = SimSiamViewTransform(input_size=32)
    crop = next(t for t in view.transforms if isinstance(t, v2.RandomResizedCrop))
    assert crop.scale == (0.2, 1.0)
    jitter = next(t.transforms[0] for t in view.transforms if isinstance(t, v2.RandomApply) and t.p == 0.8)
    assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue) == (
        (0.6, 1.4),
        (0.6, 1.4),
        (0.6, 1.4),
        (-0.1, 0.1),
    )
    blur = next(
        t for t in view.transforms if isinstance(t, v2.RandomApply) and isinstance(t.transforms[0], v2.GaussianBlur)
    )
    assert blur.p == 0.5
    assert SimSiam.transform_class is SimSiamTransform
    views = SimSiamTransform(input_size=32)(Image.new("RGB", (40, 40), (200, 30, 30)))
    assert [tuple(v.shape) for v in views] == [(3, 32, 32), (3, 32, 32)]


@pytest.mark.parametrize("argument", ["projection_hidden_dim", "projection_output_dim", "prediction_hidden_dim"])
@pytest.mark.parametrize("value", [0, -1, 1.5])
def test_bad_hyperparameters_fail_at_construction_naming_the_argument(argument: str, value: float) -> None:
    with pytest.raises(ValueError, match=argument):
        ssl_hub.create_method("simsiam", backbone="test_resnet", **{argument: value})


def test_the_recipe_is_the_papers_sgd_scaled_per_256_images() -> None:
    method = SimSiam("test_resnet", **SMALL)
    args = ssl_hub.training_arguments(method, output_dir="unused", report_to="none", per_device_train_batch_size=512)
    assert (args.optim, args.optim_args) == ("sgd", "momentum=0.9")
    assert args.learning_rate == pytest.approx(0.05 * 512 / 256)  # lr x BatchSize / 256, base 0.05
    assert (args.weight_decay, args.lr_scheduler_type, args.warmup_steps) == (1e-4, "cosine", 0)


class RateRecorder(TrainerCallback):
    """The learning rate of every parameter group at each optimizer step, as the step used it."""

    def __init__(self) -> None:
        self.rates: list[list[float]] = []

    def on_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.rates.append([group["lr"] for group in kwargs["optimizer"].param_groups])


def test_the_predictor_trains_at_a_fixed_rate_while_the_rest_follows_the_cosine_schedule(tmp_path: Path) -> None:
    method = SimSiam("test_resnet", **SMALL)
    predictor = {id(p) for p in method.prediction_head.parameters()}
    groups = method.parameter_groups(1e-4)
    assert [g["fixed_learning_rate"] for g in groups] == [False, True, False, True]
    assert [g["weight_decay"] for g in groups] == [1e-4, 1e-4, 0.0, 0.0]
    assert {id(p) for g in groups if g["fixed_learning_rate"] for p in g["params"]} == predictor
    assert sum(len(g["params"]) for g in groups) == len([p for p in method.parameters() if p.requires_grad])

    recorder = RateRecorder()
    pretrain_a_few_steps(method, tmp_path, steps=4, callbacks=[recorder])  # lr 1e-2, cosine, no warm-up
    cosine = [1e-2 * 0.5 * (1 + math.cos(math.pi * step / 4)) for step in range(4)]
    assert len(recorder.rates) == 4, "one record per optimizer step"
    for step, rates in enumerate(recorder.rates):
        assert rates == pytest.approx([cosine[step], 1e-2, cosine[step], 1e-2]), step


def test_the_predictor_rate_decays_too_when_not_fixed() -> None:
    method = SimSiam("test_resnet", **SMALL, fixed_prediction_learning_rate=False)
    assert [set(g) for g in method.parameter_groups(1e-4)] == [{"params", "weight_decay"}] * 2
    assert not any(isinstance(c, FixedLearningRateCallback) for c in method.callbacks())
