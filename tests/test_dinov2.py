"""DINOv2: KoLeo, the Sinkhorn-Knopp centred class-token and patch losses against the papers' formulas (float64
loops), the method's loss as iBOT's plus KoLeo, DINOv2's masking and defaults, the teacher's EMA in a real Trainer run
and the hub round trip of the published teacher. The gathered Sinkhorn-Knopp losses are checked in test_msn.py's
2-process test."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from conftest import probability_entropy_reference
from masked_image_reference import Capture
from masked_siamese_reference import (
    dino_pairs_reference,
    ibot_patch_reference,
    koleo_reference,
    rows,
    sinkhorn_knopp,
)
from teacher_method_checks import check_hub_round_trip, transform_views
from teacher_state_checks import check_ema_follows

import ssl_hub
from ssl_hub.losses import DINOLoss, IBOTPatchLoss, KoLeoLoss, SinkhornDINOLoss
from ssl_hub.methods import DINOv2
from ssl_hub.modules import UnsupportedBackboneError
from ssl_hub.training import cosine_schedule, training_arguments

SMALL = {"output_dim": 32, "patch_output_dim": 24, "projection_hidden_dim": 16, "bottleneck_dim": 8}


def randn(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_koleo_matches_the_formula() -> None:
    x = randn(7, 5, seed=1, scale=3.0)
    assert KoLeoLoss()(x).item() == pytest.approx(koleo_reference(x), rel=1e-6)
    assert (KoLeoLoss().p, KoLeoLoss().eps) == (2.0, 1e-8)
    spread, crowded = torch.eye(4, dtype=torch.float64), torch.eye(4, dtype=torch.float64) + 5
    assert KoLeoLoss()(spread) < KoLeoLoss()(crowded)  # minimising it spreads the features
    with pytest.raises(ValueError, match="B >= 2"):
        KoLeoLoss()(x[:1])


def sinkhorn_probs(logits: torch.Tensor, temperature: float) -> list[list[float]]:
    """DINOv2's sinkhorn_knopp_teacher: 3 iterations on exp(t / tau_t)."""
    return sinkhorn_knopp([[math.exp(v / temperature) for v in row] for row in rows(logits)], 3)


@pytest.mark.parametrize("n_student", [2, 5])
def test_sinkhorn_class_token_loss_matches_the_paper(n_student: int) -> None:
    teacher = [randn(4, 6, seed=1), randn(4, 6, seed=2)]
    student = [randn(4, 6, seed=3 + i, scale=2.0) for i in range(n_student)]
    loss = SinkhornDINOLoss(student_temp=0.2)(teacher, student, teacher_temp=0.5)
    # Sinkhorn-Knopp runs over the teacher outputs of both global crops together, then DINO's pairs i != j.
    probs = sinkhorn_probs(torch.cat(teacher), 0.5)
    assert loss.item() == pytest.approx(dino_pairs_reference([probs[:4], probs[4:]], student, 0.2), rel=1e-10)
    with pytest.raises(ValueError, match="pair of different crops"):
        SinkhornDINOLoss()(teacher[:1], student[:1])


def test_sinkhorn_patch_loss_matches_the_paper() -> None:
    mask = torch.rand(3, 6, generator=torch.Generator().manual_seed(0)) < 0.5
    count = int(mask.sum())
    teacher, student = randn(count, 5, seed=1), randn(count, 5, seed=2, scale=2.0)
    criterion = IBOTPatchLoss(5, student_temp=0.3, center_mode="sinkhorn_knopp").double()
    loss = criterion(teacher, student, mask, teacher_temp=0.4)
    expected = ibot_patch_reference(sinkhorn_probs(teacher, 0.4), student, mask, 0.3)
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def views_of(batch: int = 4) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(batch, 3, 64, 64, generator=generator) for _ in range(2)] + [
        torch.randn(batch, 3, 32, 32, generator=generator) for _ in range(2)
    ]


def test_loss_is_ibots_with_sinkhorn_knopp_plus_koleo_on_the_global_class_tokens() -> None:
    torch.manual_seed(0)
    method = DINOv2("test_vit", **SMALL, koleo_loss_weight=0.3)
    assert isinstance(method.criterion, SinkhornDINOLoss)
    assert method.patch_criterion.center_mode == "sinkhorn_knopp"
    twin = copy.deepcopy(method)  # the same weights and mask sequence
    assert twin.patch_head is None  # the official default: the patch tokens share the class token's head
    encoder = Capture(method.encoder)
    views = views_of()
    with torch.no_grad():
        output = method(views=views)

        global_crops = torch.cat(views[:2])  # (8, 3, 64, 64): 4 x 4 patches
        mask = twin.sample_masks(8, (4, 4), global_crops.device)
        assert torch.equal(encoder.kwargs["mask"], mask)  # the student's global crops are masked ...
        tokens = twin.teacher_backbone.forward_features(global_crops)  # ... the teacher's are not
        teacher_cls = twin.teacher_head(tokens[:, 0])  # (8, K)
        teacher_patch = twin.teacher_head(tokens[:, 1:][mask])  # (M, K)
        student = twin.encoder(global_crops, mask=mask).tokens
        features = student[:, 0]  # (8, D): the student backbone's class token, of the masked global crops
        student_cls = [*twin.projection_head(features).chunk(2)]
        student_cls += [twin.projection_head(twin.backbone(v)) for v in views[2:]]
        student_patch = twin.projection_head(student[:, 1:][mask])
    # Sinkhorn-Knopp runs over both global crops' class tokens together, and over all masked patches together.
    cls_probs = sinkhorn_probs(teacher_cls.double(), float(twin.teacher_temperature))
    cls_loss = dino_pairs_reference([cls_probs[:4], cls_probs[4:]], student_cls, 0.1)
    patch_probs = sinkhorn_probs(teacher_patch.double(), float(twin.teacher_patch_temperature))
    patch_loss = ibot_patch_reference(patch_probs, student_patch, mask, 0.1)
    koleo = koleo_reference(features[:4]) + koleo_reference(features[4:])  # per global crop, not across them
    assert int(mask.sum()) > 0
    assert output.loss.item() == pytest.approx(cls_loss + patch_loss + 0.3 * koleo, rel=1e-5)
    # the logged terms
    assert output.metrics["loss_koleo"].item() == pytest.approx(0.3 * koleo, rel=1e-5)
    assert output.metrics["loss_cls"].item() == pytest.approx(cls_loss, rel=1e-5)
    assert output.metrics["loss_patch"].item() == pytest.approx(patch_loss, rel=1e-5)
    # the entropy of the class token's Sinkhorn-Knopp targets, over both global crops together
    expected_entropy = probability_entropy_reference(cls_probs)
    assert output.metrics["teacher_entropy"].item() == pytest.approx(expected_entropy, rel=1e-5)
    assert 0.0 < expected_entropy < 1.0


def test_centering_mode_uses_dinos_center() -> None:
    method = DINOv2("test_vit", **SMALL, centering="centering")
    assert isinstance(method.criterion, DINOLoss)
    assert method.patch_criterion.center_mode == "mean"
    assert torch.isfinite(method(views=views_of()).loss)
    with pytest.raises(ValueError, match="centering"):
        DINOv2("test_vit", **SMALL, centering="softmax")


def test_masks_half_of_the_global_crops_at_evenly_spread_ratios() -> None:
    method = DINOv2("test_vit", **SMALL)
    masks = method.sample_masks(40, (10, 10), torch.device("cpu"))  # (40, 100)
    counts = masks.sum(dim=1)
    assert int((counts > 0).sum()) == 20  # exactly int(40 * 0.5)
    strata = torch.linspace(0.1, 0.5, 21)
    for i, count in enumerate(sorted(counts[counts > 0].tolist())):
        assert int(strata[i] * 100) <= count <= int(strata[i + 1] * 100)  # one ratio from each stratum
    assert masks[:20].sum(dim=1).gt(0).sum() not in (0, 20)  # in random order


def test_teacher_follows_the_cosine_momentum_schedule(tmp_path: Path) -> None:
    method = DINOv2("test_vit", **SMALL, momentum_start=0.9)
    check_ema_follows(
        method, tmp_path, lambda step, steps: cosine_schedule(step, steps, 0.9, 1.0), publishes_teacher=True
    )


def test_published_backbone_is_the_teacher_and_load_method_restores_the_rest(tmp_path: Path) -> None:
    method = DINOv2("test_vit", **SMALL, separate_head=True)
    prefixes = ["teacher_head.", "teacher_patch_head.", "patch_head.", "projection_head.", "encoder.mask_token"]
    restored = check_hub_round_trip(method, tmp_path, transform_views(method), [*prefixes, "backbone.", "mask_rng."])
    assert restored.mask_rng.step == method.mask_rng.step > 0


def test_register_tokens_of_the_backbone_are_used() -> None:
    method = DINOv2("vit_tiny_patch16_224", backbone_kwargs={"depth": 1, "reg_tokens": 4}, **SMALL)
    assert method.encoder.num_prefix_tokens == 5  # class token + 4 registers
    assert torch.isfinite(method(views=views_of(batch=2)).loss)


def test_defaults_are_dinov2s() -> None:
    from PIL import Image

    config = DINOv2.config_class()
    assert (config.output_dim, config.projection_hidden_dim, config.bottleneck_dim) == (65536, 2048, 256)
    assert (config.centering, config.sinkhorn_iterations, config.koleo_loss_weight) == ("sinkhorn_knopp", 3, 0.1)
    assert (config.warmup_teacher_temp, config.teacher_temp, config.warmup_teacher_temp_epochs) == (0.04, 0.07, 30)
    assert (config.momentum_start, config.norm_last_layer, config.separate_head) == (0.992, False, False)
    assert (config.mask_probability, config.mask_ratio_min, config.mask_ratio_max) == (0.5, 0.1, 0.5)
    assert config.mask_min_block_patches == 4
    method = DINOv2("test_vit", **SMALL)
    transform = method.make_transform(input_size=32)
    views = transform(Image.new("RGB", (40, 40)))
    assert [tuple(v.shape[-2:]) for v in views] == [(32, 32)] * 2 + [(16, 16)] * 8
    assert transform.transforms[0].transforms[0].scale == (0.32, 1.0)
    assert transform.transforms[2].transforms[0].scale == (0.05, 0.32)
    args = training_arguments(method, output_dir="unused", report_to="none")
    assert args.learning_rate == pytest.approx(4e-3 * math.sqrt(64 / 1024))  # sqrt_wrt_1024
    assert (args.max_grad_norm, args.weight_decay) == (3.0, 0.04)
    assert DINOv2.published_backbone == "teacher_backbone"
    assert "2304.07193" in DINOv2.paper.url


def test_a_cnn_backbone_fails_at_construction() -> None:
    with pytest.raises(UnsupportedBackboneError, match="Vision Transformer"):
        ssl_hub.create_method("dinov2", backbone="test_resnet")
    with pytest.raises(ValueError, match=r"DINOv2: koleo_loss_weight"):
        ssl_hub.create_method("dinov2", backbone="test_vit", koleo_loss_weight=-1.0)
