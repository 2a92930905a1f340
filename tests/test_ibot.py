"""iBOT: the masked-patch loss against the paper's formula (float64 loops) with its center, the method's loss as DINO's
class-token loss plus the patch loss on its own masks, the masking, shared and separate patch heads, the schedules
of a real Trainer run, and the hub round trip of the published teacher. The gathered patch loss is checked in
test_msn.py's 2-process test."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import probability_entropy_reference
from masked_image_reference import Capture
from masked_siamese_reference import dino_pairs_reference, ibot_patch_reference, rows, softmax
from teacher_method_checks import check_hub_round_trip, transform_views
from teacher_state_checks import check_ema_follows, pretrain_a_few_steps
from transformers import TrainerCallback

import ssl_hub
from ssl_hub.losses import IBOTPatchLoss
from ssl_hub.methods import IBOT
from ssl_hub.modules import MaskingRNG, UnsupportedBackboneError
from ssl_hub.training import cosine_schedule, training_arguments
from ssl_hub.transforms import IBOTTransform

SMALL = {"output_dim": 32, "patch_output_dim": 24, "projection_hidden_dim": 16, "bottleneck_dim": 8}


def centred_softmax(logits: torch.Tensor, center: torch.Tensor, temperature: float) -> list[list[float]]:
    return [softmax([(x - c) / temperature for x, c in zip(row, center.tolist(), strict=True)]) for row in rows(logits)]


def test_patch_loss_and_center_match_the_paper() -> None:
    generator = torch.Generator().manual_seed(0)
    mask = torch.rand(4, 3, 3, generator=generator) < 0.4  # (B, h, w)
    mask[1] = False  # an image without masked patches counts as zero
    count = int(mask.sum())
    teacher = torch.randn(count, 6, generator=generator, dtype=torch.float64) * 2
    student = torch.randn(count, 6, generator=generator, dtype=torch.float64) * 2
    criterion = IBOTPatchLoss(output_dim=6, student_temp=0.2, center_momentum=0.7).double()
    center = torch.randn(6, dtype=torch.float64)
    criterion.center.copy_(center)
    loss = criterion(teacher, student, mask, teacher_temp=0.05)
    expected = ibot_patch_reference(centred_softmax(teacher, center, 0.05), student, mask, 0.2)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    # c <- m c + (1 - m) * mean of the teacher outputs at the masked patches (DINOv2's patch center)
    mean = [sum(float(teacher[i, k]) for i in range(count)) / count for k in range(6)]
    expected_center = [0.7 * float(center[k]) + 0.3 * mean[k] for k in range(6)]
    torch.testing.assert_close(criterion.center[0], torch.tensor(expected_center, dtype=torch.float64))
    # No masked patch at all: no loss, the center stays.
    empty = torch.zeros(2, 4, dtype=torch.bool)
    before = criterion.center.clone()
    assert criterion(teacher[:0], student[:0], empty).item() == 0.0
    assert torch.equal(criterion.center, before)


def test_patch_loss_defaults_and_errors() -> None:
    criterion = IBOTPatchLoss()
    assert criterion.center.shape == (1, 65536)
    assert (criterion.teacher_temp, criterion.student_temp, criterion.center_momentum) == (0.04, 0.1, 0.9)
    assert IBOTPatchLoss(8, center_mode="sinkhorn_knopp").center is None
    with pytest.raises(ValueError, match="center_mode"):
        IBOTPatchLoss(center_mode="median")
    with pytest.raises(ValueError, match="masked patches"):
        IBOTPatchLoss(4)(torch.randn(3, 4), torch.randn(3, 4), torch.ones(1, 2, dtype=torch.bool))


def test_masks_follow_ibots_ratios_and_replay_from_the_seed() -> None:
    method = IBOT("test_vit", **SMALL)
    replay = MaskingRNG(method.mask_rng.seed)
    masks = method.sample_masks(400, (10, 10), torch.device("cpu"))  # (400, 100)
    counts = masks.sum(dim=1)
    masked = counts > 0
    assert 0.4 < masked.float().mean() < 0.6  # mask_probability 0.5
    assert counts[masked].min() >= 10
    assert counts[masked].max() <= 50
    assert counts[masked].float().std() > 5  # the ratio varies per crop
    # The smallest rectangle is iBOT's (min(h, w) // 3) ** 2 = 9 patches: a masked crop is no scatter of patches.
    grid = masks[masked][0].view(10, 10).float()
    neighbours = torch.nn.functional.conv2d(grid[None, None], torch.ones(1, 1, 3, 3), padding=1)[0, 0]
    assert (neighbours[grid.bool()] >= 3).float().mean() > 0.8
    replayed = copy.deepcopy(method)
    replayed.mask_rng.load_state_dict(replay.state_dict())
    torch.testing.assert_close(replayed.sample_masks(400, (10, 10), torch.device("cpu")), masks)


def views_of(batch: int = 3) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(batch, 3, 64, 64, generator=generator) for _ in range(2)] + [
        torch.randn(batch, 3, 32, 32, generator=generator) for _ in range(3)
    ]


def test_loss_is_dinos_class_token_loss_plus_the_patch_loss_on_its_masks() -> None:
    torch.manual_seed(0)
    method = IBOT("test_vit", **SMALL, warmup_teacher_temp=0.05, warmup_teacher_patch_temp=0.06)
    method.criterion.center.normal_()
    method.patch_criterion.center.normal_()
    twin = copy.deepcopy(method)  # the same weights, centers and mask sequence
    encoder = Capture(method.encoder)
    views = views_of()
    with torch.no_grad():
        output = method(views=views)

        global_crops = torch.cat(views[:2])  # (6, 3, 64, 64): 4 x 4 patches
        mask = twin.sample_masks(6, (4, 4), global_crops.device)
        assert torch.equal(encoder.kwargs["mask"], mask)  # the student's global crops are masked ...
        tokens = twin.teacher_backbone.forward_features(global_crops)  # ... the teacher's are not
        teacher_cls = twin.teacher_head(tokens[:, 0])
        teacher_patch = twin.teacher_head(tokens[:, 1:][mask])  # the patch tokens share the class token's head
        student = twin.encoder(global_crops, mask=mask).tokens
        student_cls = [*twin.projection_head(student[:, 0]).chunk(2)]
        student_cls += [twin.projection_head(twin.backbone(v)) for v in views[2:]]
        student_patch = twin.projection_head(student[:, 1:][mask])
    teacher_probs = [centred_softmax(t, twin.criterion.center[0], 0.05) for t in teacher_cls.chunk(2)]
    cls_loss = dino_pairs_reference(teacher_probs, student_cls, 0.1)
    patch_probs = centred_softmax(teacher_patch, twin.patch_criterion.center[0], 0.06)
    patch_loss = ibot_patch_reference(patch_probs, student_patch, mask, 0.1)
    assert int(mask.sum()) > 0
    assert output.loss.item() == pytest.approx(cls_loss + patch_loss, rel=1e-5)
    assert output.metrics["loss_cls"].item() == pytest.approx(cls_loss, rel=1e-5)  # the logged terms
    assert output.metrics["loss_patch"].item() == pytest.approx(patch_loss, rel=1e-5)
    # the class token's targets with the center from before the loss moved it
    assert not torch.equal(method.criterion.center, twin.criterion.center)
    expected_entropy = probability_entropy_reference(teacher_probs[0] + teacher_probs[1])
    assert output.metrics["teacher_entropy"].item() == pytest.approx(expected_entropy, rel=1e-5)
    assert 0.0 < expected_entropy < 1.0


def test_a_separate_patch_head_has_its_own_teacher_and_center() -> None:
    method = IBOT("test_vit", **SMALL, separate_head=True)
    assert method.patch_head is not None
    assert method.teacher_patch_head is not None
    assert method.patch_head.last_layer.out_features == 24
    assert method.patch_criterion.center.shape == (1, 24)
    ema = next(c for c in method.callbacks() if hasattr(c, "pairs"))
    assert (method.patch_head, method.teacher_patch_head) in ema.pairs
    student, teacher = method.patch_heads()
    assert student is method.patch_head
    assert teacher is method.teacher_patch_head
    assert torch.isfinite(method(views=views_of()).loss)
    shared = IBOT("test_vit", **SMALL)
    assert shared.patch_heads() == (shared.projection_head, shared.teacher_head)
    assert shared.patch_criterion.center.shape == (1, 32)


class ScheduleRecorder(TrainerCallback):
    """Reads the teacher temperatures and the last layer at each step (after the method's callbacks)."""

    def __init__(self, method: IBOT) -> None:
        self.method = method
        self.steps: list[dict[str, Any]] = []

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        last_layer = self.method.projection_head.last_layer.parametrizations.weight.original1
        self.steps.append(
            {
                "temperatures": (float(self.method.teacher_temperature), float(self.method.teacher_patch_temperature)),
                "last_layer": last_layer.detach().clone(),
            }
        )


def test_teacher_temperatures_warm_up_and_the_last_layer_waits_an_epoch(tmp_path: Path) -> None:
    method = IBOT(
        "test_vit",
        **SMALL,
        warmup_teacher_temp=0.04,
        teacher_temp=0.08,
        warmup_teacher_patch_temp=0.02,
        teacher_patch_temp=0.06,
        warmup_teacher_temp_epochs=1,
    )
    recorder = ScheduleRecorder(method)
    pretrain_a_few_steps(method, tmp_path, steps=4, callbacks=[recorder])  # 16 images, batch 8: 2 steps per epoch
    assert [s["temperatures"] for s in recorder.steps] == [
        pytest.approx(t) for t in [(0.04, 0.02), (0.06, 0.04), (0.08, 0.06), (0.08, 0.06)]
    ]
    first = recorder.steps[0]["last_layer"]
    assert torch.equal(recorder.steps[2]["last_layer"], first)  # frozen during the first epoch
    assert not torch.equal(recorder.steps[3]["last_layer"], first)


def test_teacher_follows_the_cosine_momentum_schedule(tmp_path: Path) -> None:
    method = IBOT("test_vit", **SMALL, momentum_start=0.9, freeze_last_layer=0)
    check_ema_follows(
        method, tmp_path, lambda step, steps: cosine_schedule(step, steps, 0.9, 1.0), publishes_teacher=True
    )


def test_published_backbone_is_the_teacher_and_load_method_restores_the_rest(tmp_path: Path) -> None:
    method = IBOT("test_vit", **SMALL)
    prefixes = ["teacher_head.", "projection_head.", "backbone.", "encoder.mask_token", "criterion.center"]
    restored = check_hub_round_trip(
        method, tmp_path, transform_views(method), [*prefixes, "patch_criterion.center", "mask_rng."]
    )
    assert restored.mask_rng.step == method.mask_rng.step > 0
    assert torch.count_nonzero(restored.patch_criterion.center) > 0


def test_a_vit_built_for_224_px_takes_the_local_crops() -> None:
    method = IBOT("vit_tiny_patch16_224", backbone_kwargs={"depth": 1}, **SMALL)
    assert method.backbone.dynamic_img_size
    assert method.teacher_backbone.dynamic_img_size
    assert len(method.backbone.blocks) == 1
    assert torch.isfinite(method(views=views_of(batch=2)).loss)


def test_transform_and_defaults_are_ibots() -> None:
    from PIL import Image

    views = IBOTTransform()(Image.new("RGB", (300, 260)))
    assert [tuple(v.shape[-2:]) for v in views] == [(224, 224)] * 2 + [(96, 96)] * 10
    method = IBOT("test_vit", **SMALL)
    views = method.make_transform(input_size=32)(Image.new("RGB", (40, 40)))
    assert [tuple(v.shape[-2:]) for v in views] == [(32, 32)] * 2 + [(16, 16)] * 10
    config = IBOT.config_class()
    assert (config.output_dim, config.separate_head, config.teacher_temp, config.teacher_patch_temp) == (
        8192,
        False,
        0.07,
        0.07,
    )
    assert (config.mask_probability, config.mask_ratio_min, config.mask_ratio_max) == (0.5, 0.1, 0.5)
    args = training_arguments(method, output_dir="unused", report_to="none")
    assert (args.max_grad_norm, args.weight_decay) == (3.0, 0.04)
    assert args.learning_rate == pytest.approx(5e-4 * 64 / 256)
    assert IBOT.published_backbone == "teacher_backbone"
    assert "2111.07832" in IBOT.paper.url


def test_a_cnn_backbone_or_bad_values_fail_at_construction() -> None:
    with pytest.raises(UnsupportedBackboneError, match="Vision Transformer"):
        ssl_hub.create_method("ibot", backbone="test_resnet")
    with pytest.raises(ValueError, match="mask_ratio_min"):
        ssl_hub.create_method("ibot", backbone="test_vit", mask_ratio_min=0.6)
    with pytest.raises(ValueError, match=r"iBOT: teacher_patch_temp"):
        ssl_hub.create_method("ibot", backbone="test_vit", teacher_patch_temp=0.0)
    with pytest.raises(ValueError, match="2 global crops"):
        IBOT("test_vit", **SMALL)(views=[torch.randn(2, 3, 32, 32)])
