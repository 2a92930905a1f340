"""MSN: the loss against the paper's formula (float64 loops: Sinkhorn sharpening, me-max), the views and their
masking, the target network's linear EMA in a real Trainer run, the hub round trip of the published target encoder,
and, in one 2-process spawn, the gathered losses of MSN, PMSN, iBOT and DINOv2 against the global batch."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from masked_image_reference import Capture
from masked_siamese_reference import me_max, msn_reference
from teacher_method_checks import check_hub_round_trip, transform_views
from teacher_state_checks import check_ema_follows
from test_distributed import WORLD_SIZE, free_port

import ssl_hub
from ssl_hub.heads import MSNProjectionHead
from ssl_hub.losses import IBOTPatchLoss, MSNLoss, PMSNLoss, SinkhornDINOLoss
from ssl_hub.methods import MSN
from ssl_hub.modules import UnsupportedBackboneError
from ssl_hub.training import linear_schedule, training_arguments
from ssl_hub.transforms import MSNTransform

SMALL = {"projection_hidden_dim": 32, "projection_output_dim": 16, "num_prototypes": 20}


def embeddings(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize(
    ("views", "iterations", "weight", "sharpen"),
    [(1, 3, 1.0, 0.25), (3, 3, 1.0, 0.25), (2, 0, 0.5, 0.5), (2, 5, 0.0, 1)],
)
def test_loss_matches_the_paper(views: int, iterations: int, weight: float, sharpen: float) -> None:
    anchors, targets, prototypes = embeddings(views * 4, 6, seed=1), embeddings(4, 6, seed=2), embeddings(5, 6, seed=3)
    criterion = MSNLoss(temperature=0.3, sinkhorn_iterations=iterations, regularization_weight=weight)
    loss = criterion(anchors, targets, prototypes, target_sharpen_temperature=sharpen)
    assert loss.dtype == torch.float64
    expected = msn_reference(anchors, targets, prototypes, 0.3, sharpen, iterations, weight, me_max)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    terms = criterion.terms(anchors, targets, prototypes, target_sharpen_temperature=sharpen)
    cross_entropy = msn_reference(anchors, targets, prototypes, 0.3, sharpen, iterations, 0.0, me_max)
    assert terms["cross_entropy"].item() == pytest.approx(cross_entropy, rel=1e-10)
    if weight > 0:
        assert terms["regularization"].item() == pytest.approx(expected - cross_entropy, rel=1e-8, abs=1e-12)
    else:
        assert list(terms) == ["cross_entropy"]


def test_loss_defaults_gradients_and_errors() -> None:
    criterion = MSNLoss()
    assert (criterion.temperature, criterion.sinkhorn_iterations, criterion.regularization_weight) == (0.1, 3, 1.0)
    assert not criterion.gather_distributed
    anchors = embeddings(8, 6, seed=1).requires_grad_(True)
    targets = embeddings(4, 6, seed=2).requires_grad_(True)
    prototypes = embeddings(5, 6, seed=3).requires_grad_(True)
    criterion(anchors, targets, prototypes).backward()
    assert anchors.grad is not None
    assert prototypes.grad is not None
    assert targets.grad is None  # the targets are a fixed label for the anchors
    assert criterion.regularization_loss(torch.full((5,), 0.2, dtype=torch.float64)).item() == pytest.approx(
        0, abs=1e-12
    )
    with pytest.raises(ValueError, match="whole number of views"):
        criterion(embeddings(5, 6), embeddings(4, 6), prototypes)
    with pytest.raises(ValueError, match="temperature"):
        MSNLoss(temperature=0)
    with pytest.raises(ValueError, match="target_sharpen_temperature"):
        criterion(anchors, targets, prototypes, target_sharpen_temperature=0)


def test_head_is_the_papers_three_layer_mlp_with_batch_norm() -> None:
    head = MSNProjectionHead(input_dim=12, hidden_dim=16, output_dim=8)
    kinds = [type(m).__name__ for m in head.layers]
    assert kinds == ["Linear", "BatchNorm1d", "GELU", "Linear", "BatchNorm1d", "GELU", "Linear"]
    assert head(torch.randn(4, 12)).shape == (4, 8)
    assert (MSNProjectionHead().layers[0].in_features, MSNProjectionHead().layers[-1].out_features) == (768, 256)


def test_transform_makes_random_then_focal_views() -> None:
    from PIL import Image

    views = MSNTransform()(Image.new("RGB", (300, 260)))
    assert [tuple(v.shape[-2:]) for v in views] == [(224, 224)] * 2 + [(96, 96)] * 10
    method = MSN("test_vit", **SMALL)
    views = method.make_transform(input_size=64)(Image.new("RGB", (80, 80)))
    assert [tuple(v.shape[-2:]) for v in views] == [(64, 64)] * 2 + [(32, 32)] * 10  # focal: whole 16 px patches
    with pytest.raises(ValueError, match="random_views"):
        MSNTransform(random_views=0)
    with pytest.raises(ValueError, match="anchor view"):
        MSNTransform(random_views=1, focal_views=0)


def test_random_anchors_drop_patches_focal_anchors_do_not_and_the_target_sees_all() -> None:
    method = MSN("test_vit", **SMALL)
    encoder, backbone, teacher = Capture(method.encoder), Capture(method.backbone), Capture(method.teacher_backbone)
    target, anchor = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)  # 4 x 4 patches of 16 px
    focal = [torch.randn(2, 3, 32, 32) for _ in range(3)]
    loss = method(views=[target, anchor, *focal]).loss
    assert torch.isfinite(loss)
    keep = encoder.kwargs["keep"]
    assert keep.shape == (2, 16 - round(0.15 * 16))  # 2 of 16 patches dropped, per image
    assert all(len(set(row.tolist())) == keep.shape[1] for row in keep)
    assert torch.equal(encoder.inputs[0], anchor)
    assert backbone.inputs[0].shape == (6, 3, 32, 32)  # the 3 focal views in one unmasked batch
    assert torch.equal(teacher.inputs[0], target)
    assert method.mask_rng.step == 1
    with pytest.raises(ValueError, match="target view followed by anchor views"):
        method(views=[target])


def test_published_backbone_and_state_are_the_target_network(tmp_path: Path) -> None:
    method = MSN("test_vit", **SMALL)
    restored = check_hub_round_trip(
        method,
        tmp_path,
        transform_views(method),
        ["teacher_head.", "prototypes.", "projection_head.", "backbone.", "mask_rng."],
    )
    assert restored.mask_rng.step == method.mask_rng.step > 0


def test_target_network_follows_the_linear_momentum_schedule(tmp_path: Path) -> None:
    method = MSN("test_vit", **SMALL, momentum_start=0.9)
    check_ema_follows(
        method, tmp_path, lambda step, steps: linear_schedule(step, steps, 0.9, 1.0), publishes_teacher=True
    )


def test_linear_schedule_runs_from_start_to_end_over_the_steps() -> None:
    assert [linear_schedule(k, 5, 0.996, 1.0) for k in range(5)] == pytest.approx([0.996, 0.997, 0.998, 0.999, 1.0])
    assert linear_schedule(9, 5, 0.996, 1.0) == 1.0
    assert linear_schedule(0, 1, 0.5, 1.0) == 1.0
    with pytest.raises(ValueError, match="step"):
        linear_schedule(-1, 5, 0.0, 1.0)


def test_defaults_are_the_official_vits16_recipe() -> None:
    config = MSN.config_class()
    assert (config.mask_ratio, config.num_prototypes, config.projection_output_dim) == (0.15, 1024, 256)
    assert (config.temperature, config.target_sharpen_temperature, config.sinkhorn_iterations) == (0.1, 0.25, 3)
    assert (config.momentum_start, config.weight_decay_start, config.weight_decay_end) == (0.996, 0.04, 0.4)
    args = training_arguments(MSN("test_vit", **SMALL), output_dir="unused", report_to="none")
    assert args.max_grad_norm == 3.0
    assert args.learning_rate == pytest.approx(1e-3 * 64 / 1024)
    assert MSN.published_backbone == "teacher_backbone"
    assert "2204.07141" in MSN.paper.url


def test_a_cnn_backbone_or_bad_values_fail_at_construction() -> None:
    with pytest.raises(UnsupportedBackboneError, match="Vision Transformer"):
        ssl_hub.create_method("msn", backbone="test_resnet")
    with pytest.raises(ValueError, match="mask_ratio"):
        ssl_hub.create_method("msn", backbone="test_vit", mask_ratio=1.0)
    with pytest.raises(ValueError, match="num_prototypes"):
        ssl_hub.create_method("msn", backbone="test_vit", num_prototypes=0)


# One spawn for every loss of issue 5 part B that gathers across ranks (spawning costs ~20 s here).
def _batch(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    mask = torch.rand(6, 5, generator=generator) < 0.5  # (B, N), an uneven number of masked patches per rank
    mask[0] = False  # an image without masked patches
    masked = int(mask.sum())
    return {
        "anchors": randn(3, 6, 4),  # (V, B, D)
        "targets": randn(6, 4),
        "prototypes": randn(7, 4),
        "teacher_cls": randn(2, 6, 9),  # (crops, B, K)
        "student_cls": randn(5, 6, 9),
        "mask": mask,
        "teacher_patch": randn(masked, 9),
        "student_patch": randn(masked, 9),
    }


def _gathered_losses(data: dict[str, torch.Tensor], part: slice) -> dict[str, Any]:
    """Every gathered loss on the images ``part`` of the batch (all of them in one process)."""
    anchors = data["anchors"][:, part].reshape(-1, 4).clone().requires_grad_(True)
    prototypes = data["prototypes"].clone().requires_grad_(True)
    msn = MSNLoss(temperature=0.2, gather_distributed=True)(anchors, data["targets"][part], prototypes)
    msn.backward()
    pmsn = PMSNLoss(temperature=0.2, power_law_exponent=0.5, gather_distributed=True)(
        data["anchors"][:, part].reshape(-1, 4), data["targets"][part], data["prototypes"]
    )
    dino = SinkhornDINOLoss(student_temp=0.2)(
        list(data["teacher_cls"][:, part]), list(data["student_cls"][:, part]), teacher_temp=0.5
    )
    mask = data["mask"]
    offset = int(mask[: part.start].sum()) if part.start else 0
    patches = slice(offset, offset + int(mask[part].sum()))
    results: dict[str, Any] = {
        "msn": msn.detach(),
        "anchors_grad": anchors.grad,
        "prototypes_grad": prototypes.grad,
        "pmsn": pmsn,
        "dino": dino,
    }
    for mode in ("mean", "sinkhorn_knopp"):
        criterion = IBOTPatchLoss(9, student_temp=0.2, center_mode=mode).double()
        losses = [
            criterion(data["teacher_patch"][patches], data["student_patch"][patches], mask[part], teacher_temp=0.3)
            for _ in range(2)  # the second call uses the updated center
        ]
        results[f"ibot_{mode}"] = torch.stack(losses)
        results[f"center_{mode}"] = criterion.center
    return results


def _losses_worker(rank: int, port: int, output: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        torch.save(_gathered_losses(_batch(seed=4), slice(rank * 3, rank * 3 + 3)), f"{output}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(180)
def test_gathered_losses_equal_the_global_batch_across_processes(tmp_path: Path) -> None:
    mp.spawn(_losses_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD_SIZE)]
    single = _gathered_losses(_batch(seed=4), slice(0, 6))
    counts = [int(_batch(seed=4)["mask"][r * 3 : r * 3 + 3].sum()) for r in range(WORLD_SIZE)]
    assert 0 < counts[0] != counts[1] > 0  # the ranks hold different numbers of masked patches

    # DDP averages the ranks' losses and gradients: the mean is the global batch's loss ...
    for name in ("msn", "pmsn", "dino", "ibot_mean", "ibot_sinkhorn_knopp"):
        mean = (ranks[0][name] + ranks[1][name]) / 2
        torch.testing.assert_close(mean, single[name], rtol=1e-10, atol=1e-12, msg=name)
    # ... and its gradient (me-max through the all-reduced mean assignment, Sinkhorn over both ranks' targets).
    torch.testing.assert_close(
        (ranks[0]["prototypes_grad"] + ranks[1]["prototypes_grad"]) / 2,
        single["prototypes_grad"],
        rtol=1e-9,
        atol=1e-12,
    )
    for rank, result in enumerate(ranks):
        local = single["anchors_grad"].view(3, 6, 4)[:, rank * 3 : rank * 3 + 3].reshape(-1, 4)
        torch.testing.assert_close(result["anchors_grad"] / WORLD_SIZE, local, rtol=1e-9, atol=1e-12)
        # iBOT's patch center is the mean over the masked patches of the global batch.
        torch.testing.assert_close(result["center_mean"], single["center_mean"], rtol=1e-12, atol=1e-12)
    assert math.isfinite(single["msn"].item())


def test_prototypes_get_no_weight_decay() -> None:
    method = ssl_hub.create_method("msn", backbone="test_vit", num_prototypes=16)
    decayed, spared = method.parameter_groups(0.04)
    assert all(p is not method.prototypes.weight for p in decayed["params"])
    assert any(p is method.prototypes.weight for p in spared["params"])
    assert decayed["weight_decay"] == 0.04
