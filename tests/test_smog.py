"""SMoG: the group-level contrastive loss and the momentum grouping against the formulas (float64 loops), a whole
training step against them, the periodic k-means / momentum-encoder reset in a Trainer run, multi-crop training on
CNNs and ViTs, and the hub round trip."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from multi_crop_checks import ViewSizes, assert_hub_round_trip, fixed_views, train
from transformers import TrainerCallback

from ssl_hub.heads import SMoGPrototypes
from ssl_hub.losses import SMoGLoss
from ssl_hub.methods import SMoG
from ssl_hub.methods.smog import spherical_kmeans
from ssl_hub.modules import multi_crop_forward

SMALL = {
    "projection_hidden_dim": 16,
    "projection_output_dim": 8,
    "prediction_hidden_dim": 16,
    "n_groups": 6,
    "memory_bank_size": 64,
}


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def assign(features: list[list[float]], groups: list[list[float]]) -> list[int]:
    """The group of each feature: the most cosine-similar group feature."""
    return [max(range(len(groups)), key=lambda k, f=f: cosine(f, groups[k])) for f in features]


def momentum_grouping(features: list[list[float]], groups: list[list[float]], beta: float) -> list[list[float]]:
    """g_k <- beta g_k + (1 - beta) mean of the features assigned to k (groups without members unchanged)."""
    assignment = assign(features, groups)
    updated = []
    for k, group in enumerate(groups):
        members = [f for f, a in zip(features, assignment, strict=True) if a == k]
        if not members:
            updated.append(group)
            continue
        mean = [sum(column) / len(members) for column in zip(*members, strict=True)]
        updated.append([beta * g + (1 - beta) * m for g, m in zip(group, mean, strict=True)])
    return updated


def smog_reference(
    predictions: list[list[list[float]]], assignments: list[list[int]], groups: list[list[float]], tau: float
) -> float:
    """Group-level InfoNCE: -log exp(cos(p_v, g_a) / tau) / sum_k exp(cos(p_v, g_k) / tau) for the assignment a of
    each other assigned crop i, averaged as mean_i sum_{v != i} / (V - 1) and over the batch."""
    total = 0.0
    for i, targets in enumerate(assignments):
        crop_sum = 0.0
        for v, crop in enumerate(predictions):
            if v == i:
                continue
            for p, target in zip(crop, targets, strict=True):
                logits = [cosine(p, g) / tau for g in groups]
                crop_sum += -(logits[target] - math.log(sum(math.exp(x) for x in logits))) / len(crop)
        total += crop_sum / (len(predictions) - 1)
    return total / len(assignments)


def tensors(count: int, rows: int, dim: int = 5, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(rows, dim, generator=generator, dtype=torch.float64) for _ in range(count)]


@pytest.mark.parametrize(("n_crops", "temperature"), [(2, 0.1), (6, 0.1), (4, 0.5)])
def test_loss_matches_the_group_level_contrastive_formula(n_crops: int, temperature: float) -> None:
    predictions = tensors(n_crops, rows=4)
    (groups,) = tensors(1, rows=7, seed=1)
    generator = torch.Generator().manual_seed(2)
    assignments = [torch.randint(0, 7, (4,), generator=generator) for _ in range(2)]
    loss = SMoGLoss(temperature=temperature)(predictions, assignments, groups)
    assert loss.dtype == torch.float64
    expected = smog_reference(
        [p.tolist() for p in predictions], [a.tolist() for a in assignments], groups.tolist(), temperature
    )
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_momentum_grouping_matches_the_formula() -> None:
    features, groups = tensors(2, rows=9)
    groups = groups[:4]
    prototypes = SMoGPrototypes(groups, beta=0.9)
    assert prototypes.assign_groups(features).tolist() == assign(features.tolist(), groups.tolist())
    updated = prototypes.get_updated_group_features(features)
    expected = momentum_grouping(features.tolist(), groups.tolist(), beta=0.9)
    torch.testing.assert_close(updated, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    assert torch.equal(prototypes.group_features, groups)  # not stored until set_group_features
    prototypes.set_group_features(updated)
    assert torch.equal(prototypes.group_features, updated)


def test_a_training_step_assigns_with_the_momentum_encoder_updates_the_groups_then_contrasts() -> None:
    method = SMoG("test_resnet", **SMALL, group_reset_interval=0, beta=0.8).double()
    views = [v.double() for v in fixed_views(method, method.make_transform(64, crop_counts=(2, 2)))]
    method.train()
    reference = copy.deepcopy(method)
    groups = method.prototypes.group_features.tolist()
    with torch.no_grad():  # the same networks on the same size groups (batch-norm statistics per size)
        predictions = multi_crop_forward(
            lambda x: reference.prediction_head(reference.projection_head(reference.backbone(x))), views
        )
        targets = multi_crop_forward(
            lambda x: reference.teacher_projection_head(reference.teacher_backbone(x)), views[:2]
        )
    loss = method(views=views).loss
    targets = [t / t.norm(dim=1, keepdim=True) for t in targets]  # the groups follow L2-normalised embeddings
    assignments = [assign(t.tolist(), groups) for t in targets]  # with the groups before the update
    updated = momentum_grouping([row for t in targets for row in t.tolist()], groups, beta=0.8)
    torch.testing.assert_close(method.prototypes.group_features, torch.tensor(updated, dtype=torch.float64))
    expected = smog_reference([p.tolist() for p in predictions], assignments, updated, tau=0.1)
    assert loss.item() == pytest.approx(expected, rel=1e-9)


def test_spherical_kmeans_finds_separated_clusters() -> None:
    generator = torch.Generator().manual_seed(0)
    centers = torch.eye(4, 6, dtype=torch.float64)
    points = torch.cat([c + 0.05 * torch.randn(10, 6, generator=generator, dtype=torch.float64) for c in centers])
    found = spherical_kmeans(points[torch.randperm(40, generator=generator)], n_clusters=4, iterations=10)
    torch.testing.assert_close(found.norm(dim=1), torch.ones(4, dtype=torch.float64))
    assert (found @ centers.T).max(dim=0).values.min() > 0.99  # every true center found


class ResetRecorder(TrainerCallback):
    """After SMoG's callbacks at the start of each step: the group features, the bank, and teacher vs student."""

    def __init__(self, method: SMoG) -> None:
        self.method = method
        self.steps: list[dict[str, Any]] = []
        self._bank: tuple[torch.Tensor, int] | None = None

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        assert self.method.memory_bank is not None
        self._bank = (self.method.memory_bank.memory.clone(), int(self.method.memory_bank_count))

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        teacher, student = self.method.teacher_backbone.state_dict(), self.method.backbone.state_dict()
        self.steps.append(
            {
                "groups": self.method.prototypes.group_features.clone(),
                "bank_before": self._bank,
                "teacher_is_student": all(torch.equal(teacher[k], student[k]) for k in teacher),
            }
        )


def test_group_features_and_momentum_encoder_are_reset_periodically(tmp_path: Path) -> None:
    method = SMoG("test_resnet", **SMALL, group_reset_interval=2, momentum_start=0.5, momentum_end=0.5)
    recorder = ResetRecorder(method)
    train(method, tmp_path, image_size=32, max_steps=5, callbacks=[recorder], learning_rate=1e-2)
    steps = recorder.steps
    assert [s["teacher_is_student"] for s in steps] == [True, False, True, False, True]  # reset before steps 2, 4
    for k in (2, 4):
        bank, count = steps[k]["bank_before"]
        assert count == min(64, k * 2 * 8)  # 2 global crops of 8 images per step
        expected = spherical_kmeans(bank[:count], n_clusters=6, iterations=10)
        torch.testing.assert_close(steps[k]["groups"], expected)


def test_no_reset_before_the_bank_holds_one_feature_per_group() -> None:
    method = SMoG("test_resnet", **{**SMALL, "n_groups": 40, "memory_bank_size": 64})
    before = method.prototypes.group_features.clone()
    method.reset_group_features()  # empty bank
    assert torch.equal(method.prototypes.group_features, before)


@pytest.mark.parametrize("backbone", ["test_resnet", "test_vit"])
def test_trains_on_global_and_local_crops_and_round_trips(backbone: str, tmp_path: Path) -> None:
    method = SMoG(backbone, **SMALL)
    transform = method.make_transform(input_size=64, crop_counts=(2, 4))
    sizes = ViewSizes(method)
    before = copy.deepcopy(method.backbone.state_dict())
    groups_before = method.prototypes.group_features.clone()
    result = train(method, tmp_path / "run", max_steps=3, transform=transform)
    assert sizes.sizes[0] == [(64, 64)] * 2 + [(32, 32)] * 4
    losses = [loss for _, loss in result.training["loss_history"]]
    assert len(losses) == 3
    assert all(math.isfinite(x) for x in losses)
    assert any(not torch.equal(before[k], v) for k, v in method.backbone.state_dict().items())
    assert not torch.equal(method.prototypes.group_features, groups_before)
    restored = assert_hub_round_trip(method, tmp_path / "hub", fixed_views(method, transform))
    assert torch.equal(restored.prototypes.group_features, method.prototypes.group_features)


def test_bad_arguments_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="beta"):
        SMoG("test_resnet", beta=1.5)
    with pytest.raises(ValueError, match="memory_bank_size"):
        SMoG("test_resnet", n_groups=100, memory_bank_size=10)


def test_logits_stay_float32_under_mixed_precision() -> None:
    predictions = [p.bfloat16() for p in tensors(3, rows=4, dim=16)]
    (groups,) = tensors(1, rows=7, dim=16, seed=1)
    assignments = [torch.tensor([0, 3, 6, 2]), torch.tensor([1, 1, 5, 4])]
    expected = SMoGLoss()([p.float() for p in predictions], assignments, groups.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = SMoGLoss()(predictions, assignments, groups.float())
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
