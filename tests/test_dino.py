"""DINO: the loss against the paper's formulas (float64 loops), its schedules in a real Trainer run, multi-crop
training on CNNs and ViTs (a ViT built for 224 px taking 96 px crops), the hub round trip, the global center."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import normalized_entropy_reference
from multi_crop_checks import ViewSizes, assert_hub_round_trip, fixed_views, train
from test_distributed import WORLD_SIZE, free_port
from transformers import TrainerCallback

import ssl_hub
from ssl_hub.heads import DINOProjectionHead
from ssl_hub.losses import DINOLoss
from ssl_hub.methods import DINO
from ssl_hub.training import cosine_schedule, training_arguments

SMALL = {"output_dim": 32, "projection_hidden_dim": 16, "bottleneck_dim": 8}


def softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


def dino_reference(
    teacher: list[torch.Tensor], student: list[torch.Tensor], center: torch.Tensor, t_temp: float, s_temp: float
) -> float:
    """Sec. 3.1 / algorithm 1: mean over teacher crops i and student crops j != i of the batch mean of
    H(P_t(x_i), P_s(x_j)) = -sum_k P_t,k log P_s,k, with P_t = softmax((g_t - c) / t_t), P_s = softmax(g_s / t_s)."""
    total, pairs = 0.0, 0
    for i, t in enumerate(teacher):
        for j, s in enumerate(student):
            if i == j:
                continue
            batch = 0.0
            for b in range(t.shape[0]):
                p_t = softmax([(float(t[b, k]) - float(center[k])) / t_temp for k in range(t.shape[1])])
                p_s = softmax([float(s[b, k]) / s_temp for k in range(s.shape[1])])
                batch += -sum(p_t[k] * math.log(p_s[k]) for k in range(t.shape[1]))
            total += batch / t.shape[0]
            pairs += 1
    return total / pairs


def outputs(views: int, batch: int = 3, dim: int = 5, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, dim, generator=generator, dtype=torch.float64) * 2 for _ in range(views)]


@pytest.mark.parametrize(("n_student", "teacher_temp", "student_temp"), [(2, 0.04, 0.1), (6, 0.07, 0.1), (4, 0.5, 0.3)])
def test_loss_and_center_update_match_the_paper(n_student: int, teacher_temp: float, student_temp: float) -> None:
    teacher, student = outputs(2, seed=1), outputs(n_student, seed=2)
    criterion = DINOLoss(output_dim=5, student_temp=student_temp, center_momentum=0.8).double()
    center = torch.randn(5, dtype=torch.float64)
    criterion.center.copy_(center)
    loss = criterion(teacher, student, teacher_temp=teacher_temp)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(dino_reference(teacher, student, center, teacher_temp, student_temp), rel=1e-10)
    # c <- m c + (1 - m) * mean of the teacher outputs over crops and images (the global batch)
    mean = [sum(float(t[b, k]) for t in teacher for b in range(3)) / 6 for k in range(5)]
    expected = [0.8 * float(center[k]) + 0.2 * mean[k] for k in range(5)]
    torch.testing.assert_close(criterion.center[0], torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_teacher_temperature_warms_up_linearly_over_epochs_then_stays() -> None:
    criterion = DINOLoss(output_dim=5, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=30)
    assert [criterion.teacher_temperature(e) for e in (0, 15, 30, 99)] == pytest.approx([0.04, 0.055, 0.07, 0.07])
    teacher, student = outputs(2), outputs(4)
    by_epoch = copy.deepcopy(criterion).double()(teacher, student, epoch=15)
    explicit = copy.deepcopy(criterion).double()(teacher, student, teacher_temp=0.055)
    assert by_epoch.item() == pytest.approx(explicit.item(), rel=1e-12)
    default = copy.deepcopy(criterion).double()(teacher, student)  # no epoch: the final temperature
    assert default.item() == pytest.approx(dino_reference(teacher, student, torch.zeros(5), 0.07, 0.1), rel=1e-10)


def test_loss_refuses_views_without_a_pair_of_different_crops() -> None:
    with pytest.raises(ValueError, match="at least one pair"):
        DINOLoss(output_dim=5)(outputs(1), outputs(1))
    with pytest.raises(ValueError, match="teacher_temp"):
        DINOLoss(teacher_temp=0.0)


def test_head_has_the_paper_structure_and_a_unit_norm_frozen_magnitude_last_layer() -> None:
    head = DINOProjectionHead(input_dim=12, hidden_dim=16, bottleneck_dim=8, output_dim=20, freeze_last_layer=1)
    linears = [m for m in head.layers if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(12, 16), (16, 16), (16, 8)]
    assert sum(isinstance(m, torch.nn.GELU) for m in head.layers) == 2
    magnitude = head.last_layer.parametrizations.weight.original0
    assert not magnitude.requires_grad
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(20))  # weight-normalised, g = 1
    head(torch.randn(4, 12)).sum().backward()
    head.cancel_last_layer_gradients(current_epoch=0)
    assert all(p.grad is None for p in head.last_layer.parameters())
    assert DINOProjectionHead(
        12, 16, 8, 20, norm_last_layer=False
    ).last_layer.parametrizations.weight.original0.requires_grad


class ScheduleRecorder(TrainerCallback):
    """Reads, during the run, what DINO's callbacks set: teacher temperature, weight decay, teacher momentum, last
    layer. Runs after the method's callbacks (ssl_hub.pretrain puts them first)."""

    def __init__(self, method: DINO) -> None:
        self.method = method
        self.steps: list[dict[str, Any]] = []
        self._teacher_before: dict[str, torch.Tensor] = {}

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.steps.append(
            {
                "temperature": float(self.method.teacher_temperature),
                "weight_decay": [group["weight_decay"] for group in kwargs["optimizer"].param_groups],
                "last_layer_before": self.method.projection_head.last_layer.parametrizations.weight.original1.clone(),
            }
        )
        self._teacher_before = copy.deepcopy(self.method.teacher_head.state_dict())

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        record = self.steps[-1]
        record["teacher_before"] = self._teacher_before
        record["teacher_after"] = copy.deepcopy(self.method.teacher_head.state_dict())
        record["student_after"] = copy.deepcopy(self.method.projection_head.state_dict())
        record["last_layer_after"] = self.method.projection_head.last_layer.parametrizations.weight.original1.clone()


def test_schedules_during_a_trainer_run_follow_the_paper(tmp_path: Path) -> None:
    method = DINO(
        "test_vit",
        **SMALL,
        warmup_teacher_temp=0.04,
        teacher_temp=0.07,
        warmup_teacher_temp_epochs=1,
        momentum_start=0.9,
        freeze_last_layer=1,
    )
    recorder = ScheduleRecorder(method)
    # 32 images, batch 8: 4 steps per epoch, 2 epochs.
    result = train(method, tmp_path, image_size=32, images=32, num_train_epochs=2, callbacks=[recorder])
    assert result.trainer.state.global_step == 8
    steps = recorder.steps
    # Teacher temperature: linear from 0.04 over the first epoch (4 steps), then 0.07.
    assert [s["temperature"] for s in steps] == pytest.approx([0.04, 0.0475, 0.055, 0.0625] + [0.07] * 4)
    # Weight decay: cosine from 0.04 to 0.4 on the decayed group; the Trainer's no-decay group stays at 0.
    for k, step in enumerate(steps):
        assert step["weight_decay"] == pytest.approx([cosine_schedule(k, 8, 0.04, 0.4), 0.0]), k
    # Teacher = m * teacher + (1 - m) * student after each step, m on a cosine from 0.9 to 1.
    for k, step in enumerate(steps):
        m = cosine_schedule(k, 8, 0.9, 1.0)
        for key, after in step["teacher_after"].items():
            expected = m * step["teacher_before"][key] + (1 - m) * step["student_after"][key]
            torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-6, msg=f"step {k} {key}")
    # The last layer is frozen during the first epoch, trains afterwards.
    first = steps[0]["last_layer_before"]
    assert all(torch.equal(s["last_layer_after"], first) for s in steps[:4])
    assert not torch.equal(steps[4]["last_layer_after"], first)
    # DINO does not decay biases and norm weights: neither does the Trainer's decayed group (on a ViT).
    names = {id(p): n for n, p in method.named_parameters()}
    decayed = [names[id(p)] for p in result.trainer.optimizer.param_groups[0]["params"]]
    assert decayed
    assert not [n for n in decayed if n.endswith("bias") or "norm" in n]
    assert not [n for n in decayed if n.startswith("teacher_")]  # the teacher is not optimised


@pytest.mark.parametrize(("arguments", "steps"), [({"max_steps": 6}, 6), ({"num_train_epochs": 1.5}, 6)])
def test_epoch_schedules_count_the_epochs_steps_in_a_run_of_partial_epochs(
    tmp_path: Path, arguments: dict[str, Any], steps: int
) -> None:
    """An epoch is 4 steps here (32 images, batch 8) however long the run: the Trainer rounds its num_train_epochs up
    to 2 for 6 steps, which would make a 3-step epoch of max_steps / num_train_epochs."""
    method = DINO("test_resnet", **SMALL, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=1)
    recorder = ScheduleRecorder(method)
    result = train(method, tmp_path, image_size=32, images=32, callbacks=[recorder], **arguments)
    assert (result.trainer.state.global_step, result.trainer.state.num_train_epochs) == (steps, 2)
    assert [s["temperature"] for s in recorder.steps] == pytest.approx([0.04, 0.0475, 0.055, 0.0625, 0.07, 0.07])


def test_default_training_arguments_are_the_official_recipe() -> None:
    args = training_arguments(DINO("test_resnet", **SMALL), output_dir="unused", report_to="none")
    assert args.max_grad_norm == 3.0
    assert args.weight_decay == 0.04
    assert args.learning_rate == pytest.approx(5e-4 * 64 / 256)
    assert args.per_device_train_batch_size == 64
    assert args.optim == "adamw_torch"


@pytest.mark.parametrize("backbone", ["test_resnet", "test_vit"])
def test_trains_on_global_and_local_crops_and_round_trips(backbone: str, tmp_path: Path) -> None:
    method = DINO(backbone, **SMALL)
    transform = method.make_transform(input_size=64, n_local_views=4)
    sizes = ViewSizes(method)
    before = copy.deepcopy(method.backbone.state_dict())
    result = train(method, tmp_path / "run", max_steps=3, transform=transform)
    assert sizes.sizes[0] == [(64, 64)] * 2 + [(32, 32)] * 4
    losses = [loss for _, loss in result.training["loss_history"]]
    assert len(losses) == 3
    assert all(math.isfinite(x) for x in losses)
    assert any(not torch.equal(before[k], v) for k, v in method.backbone.state_dict().items())
    restored = assert_hub_round_trip(method, tmp_path / "hub", fixed_views(method, transform))
    assert isinstance(restored, DINO)
    torch.testing.assert_close(restored.criterion.center, method.criterion.center, rtol=0, atol=0)
    assert torch.count_nonzero(method.criterion.center) > 0  # the center moved during training
    # The published weights are the teacher's, which differ from the student's after training.
    teacher, student = method.teacher_backbone.state_dict(), method.backbone.state_dict()
    assert any(not torch.equal(teacher[k], student[k]) for k in teacher if teacher[k].is_floating_point())


def test_logs_the_normalized_entropy_of_the_centred_sharpened_teacher_targets() -> None:
    torch.manual_seed(0)
    method = DINO("test_resnet", **SMALL).double().eval()  # batch norm on running statistics: crop by crop alike
    generator = torch.Generator().manual_seed(0)
    method.criterion.center.copy_(torch.randn(1, 32, generator=generator, dtype=torch.float64))
    method.teacher_temperature.fill_(0.07)
    center = method.criterion.center.clone()
    views = [torch.randn(4, 3, size, size, generator=generator, dtype=torch.float64) for size in (32, 32, 16, 16)]
    with torch.no_grad():
        output = method(views=views)
        teacher = torch.cat([method.teacher_head(method.teacher_backbone(v)) for v in views[:2]])
    assert not torch.equal(method.criterion.center, center)  # the loss moved it; the metric used the one before
    logits = [[(t - c) / 0.07 for t, c in zip(row, center[0].tolist(), strict=True)] for row in teacher.tolist()]
    expected = normalized_entropy_reference(logits)
    assert output.metrics["teacher_entropy"].item() == pytest.approx(expected, rel=1e-9)
    assert 0.0 < output.metrics["teacher_entropy"].item() < 1.0


def test_a_vit_built_for_224_px_takes_96_px_local_crops_and_publishes_the_same_model(tmp_path: Path) -> None:
    method = DINO("vit_tiny_patch16_224", **SMALL)
    assert method.backbone.dynamic_img_size
    assert method.teacher_backbone.dynamic_img_size
    transform = method.make_transform(input_size=224, n_local_views=2)
    views = fixed_views(method, transform, count=2, size=240)
    assert [tuple(v.shape[-2:]) for v in views] == [(224, 224)] * 2 + [(96, 96)] * 2
    method.train()
    method(views=views).loss.backward()
    method.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architecture"] == "vit_tiny_patch16_224"
    assert config["model_args"]["dynamic_img_size"] is True
    backbone = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    with torch.no_grad():
        for view in (views[0], views[2]):
            torch.testing.assert_close(backbone(view), method.teacher_backbone.eval()(view), rtol=0, atol=0)


def test_a_fixed_size_vit_instance_is_rebuilt_dynamic_with_its_weights_and_drop_path() -> None:
    model = timm.create_model("vit_tiny_patch16_224", drop_path_rate=0.1, num_classes=5)
    method = DINO(model, **SMALL)
    backbone = method.backbone
    assert backbone.dynamic_img_size
    assert backbone.num_classes == 0
    assert backbone.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)
    assert method.teacher_backbone.blocks[-1].drop_path1.drop_prob == 0.0  # the teacher has no stochastic depth
    original = model.state_dict()
    assert all(torch.equal(original[k], v) for k, v in backbone.state_dict().items())
    assert backbone.pretrained_cfg is model.pretrained_cfg
    with torch.no_grad():
        assert backbone.eval()(torch.randn(1, 3, 96, 96)).shape == (1, 192)


def test_views_are_checked() -> None:
    method = DINO("test_resnet", **SMALL)
    with pytest.raises(ValueError, match="2 global crops"):
        method(views=[torch.randn(2, 3, 32, 32)])
    with pytest.raises(ValueError, match="share one size"):
        method(views=[torch.randn(2, 3, 32, 32), torch.randn(2, 3, 16, 16)])
    with pytest.raises(ValueError, match="same B images"):
        method(views=[torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32), torch.randn(3, 3, 16, 16)])
    with pytest.raises(ValueError, match="teacher_temp"):
        ssl_hub.create_method("dino", "test_resnet", teacher_temp=-1.0)


def _center_worker(rank: int, port: int, output: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        teacher, student = outputs(2, batch=6, seed=1), outputs(5, batch=6, seed=2)
        local = slice(rank * 3, rank * 3 + 3)
        criterion = DINOLoss(output_dim=5, center_momentum=0.7).double()
        losses = [criterion([t[local] for t in teacher], [s[local] for s in student]) for _ in range(2)]
        torch.save({"losses": torch.stack(losses), "center": criterion.center}, f"{output}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(180)
def test_center_is_updated_with_the_global_batch_mean_across_processes(tmp_path: Path) -> None:
    mp.spawn(_center_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD_SIZE)]
    teacher, student = outputs(2, batch=6, seed=1), outputs(5, batch=6, seed=2)
    single = DINOLoss(output_dim=5, center_momentum=0.7).double()
    losses = torch.stack([single(teacher, student) for _ in range(2)])  # the second step uses the updated center
    for rank in ranks:
        torch.testing.assert_close(rank["center"], single.center, rtol=1e-12, atol=1e-12)
    # Each rank's loss is its half-batch mean, so the ranks' mean is the global batch's loss.
    torch.testing.assert_close((ranks[0]["losses"] + ranks[1]["losses"]) / 2, losses, rtol=1e-12, atol=1e-12)


def test_loss_sums_in_float32_under_mixed_precision() -> None:
    teacher = [t.bfloat16() for t in outputs(2, dim=64)]
    student = [s.bfloat16() for s in outputs(4, dim=64, seed=3)]
    expected = DINOLoss(output_dim=64)([t.float() for t in teacher], [s.float() for s in student])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = DINOLoss(output_dim=64)(teacher, student)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
