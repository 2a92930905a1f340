"""MMCR: the loss against the paper's eq. 5 computed independently (float64, loops, nuclear norms from the
eigenvalues of Gram matrices), its optimum and collapse in closed form, the method's wiring of online and momentum
views, the momentum encoder during a real pretrain run, the transform, saved state, bad input.

Global-batch loss on 2 gloo ranks: tests/test_gathered_losses.py.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import pytest
import torch
from teacher_state_checks import check_ema_follows, check_save_and_load

import ssl_hub
from ssl_hub.heads import MMCRProjectionHead
from ssl_hub.losses import MMCRLoss
from ssl_hub.methods import MMCRConfig
from ssl_hub.transforms import BYOLView1Transform, BYOLView2Transform, MMCRTransform

SMALL = {"projection_hidden_dim": 32, "projection_output_dim": 8}
Matrix = list[list[float]]


def unit(row: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in row))
    return [x / norm for x in row]


def nuclear_norm(rows: Matrix) -> float:
    """Sum of the singular values of ``M``: the square roots of the eigenvalues of the smaller of ``M M^T`` and
    ``M^T M`` (the larger adds zeros, whose rounding a square root would magnify)."""
    vectors = rows if len(rows) <= len(rows[0]) else [list(column) for column in zip(*rows, strict=True)]
    gram = [[sum(a * b for a, b in zip(u, v, strict=True)) for v in vectors] for u in vectors]
    return float(torch.linalg.eigvalsh(torch.tensor(gram, dtype=torch.float64)).clamp(min=0).sqrt().sum())


def mmcr_reference(online: torch.Tensor, momentum: torch.Tensor | None, lmda: float) -> float:
    """Eq. 5: -||C||_* + lmda / N sum_i ||Z_i||_*, with C's row i the mean of image i's unit-norm views (online and
    momentum) and Z_i its online views."""
    loss = 0.0
    centroids = []
    for i, views in enumerate(online.tolist()):
        z = [unit(v) for v in views]
        every_view = z + ([unit(v) for v in momentum[i].tolist()] if momentum is not None else [])
        centroids.append([sum(column) / len(every_view) for column in zip(*every_view, strict=True)])
        loss += lmda * nuclear_norm(z) / len(online)
    return loss - nuclear_norm(centroids)


def embeddings(batch: int = 5, views: int = 3, dim: int = 4, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, views, dim, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("lmda", [0.0, 0.5])
@pytest.mark.parametrize("with_momentum", [False, True])
def test_loss_is_the_papers_eq_5(lmda: float, with_momentum: bool) -> None:
    online = embeddings(seed=1)
    momentum = online + 0.3 * embeddings(seed=2) if with_momentum else None
    loss = MMCRLoss(lmda=lmda)(online, momentum)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(mmcr_reference(online, momentum, lmda), rel=1e-10)


def test_terms_sum_to_the_loss_and_the_view_term_is_left_out_at_lmda_0() -> None:
    online = embeddings(seed=3)
    terms = MMCRLoss(lmda=0.2).terms(online)
    assert set(terms) == {"centroid_nuclear_norm", "view_nuclear_norm"}
    assert sum(terms.values()).item() == pytest.approx(MMCRLoss(lmda=0.2)(online).item(), rel=1e-12)
    assert set(MMCRLoss().terms(online)) == {"centroid_nuclear_norm"}


def test_agreeing_views_on_orthogonal_directions_reach_the_optimum_and_collapse_does_not() -> None:
    # ||C||_* <= sqrt(rank C) ||C||_F <= N for centroids of unit vectors: -N is the lowest loss of N images.
    directions = torch.eye(4, dtype=torch.float64)[:3]  # 3 images, orthonormal
    agreeing = directions[:, None, :].expand(3, 2, 4) * torch.tensor([1.0, 5.0], dtype=torch.float64)[None, :, None]
    assert MMCRLoss()(agreeing).item() == pytest.approx(-3.0, rel=1e-12)
    collapsed = torch.ones(3, 2, 4, dtype=torch.float64)  # every view of every image the same direction: rank 1
    assert MMCRLoss()(collapsed).item() == pytest.approx(-math.sqrt(3), rel=1e-12)
    disagreeing = torch.stack([directions, -directions], dim=1)  # the two views of each image opposite
    assert MMCRLoss()(disagreeing).item() == pytest.approx(0.0, abs=1e-12)


def test_gradient_reaches_the_online_embeddings_only() -> None:
    online, momentum = embeddings(seed=4).requires_grad_(True), embeddings(seed=5)
    MMCRLoss(lmda=0.1)(online, momentum).backward()
    assert online.grad is not None
    assert online.grad.abs().sum() > 0
    assert momentum.grad is None


def test_gather_distributed_is_a_no_op_in_one_process() -> None:
    online = embeddings(seed=6)
    torch.testing.assert_close(MMCRLoss(lmda=0.3, gather_distributed=True)(online), MMCRLoss(lmda=0.3)(online))


def test_bad_loss_input_is_refused() -> None:
    with pytest.raises(ValueError, match="lmda"):
        MMCRLoss(lmda=-0.1)
    with pytest.raises(ValueError, match=r"\(B, k, D\)"):
        MMCRLoss()(torch.randn(4, 8))
    with pytest.raises(ValueError, match="same shape"):
        MMCRLoss()(torch.randn(4, 2, 8), torch.randn(4, 3, 8))


def encoded(method: ssl_hub.SSLMethod, views: list[torch.Tensor], teacher: bool) -> torch.Tensor:
    """``(B, k, D)`` projections of the views, embedded as one batch of ``k * B`` images (the default)."""
    backbone = method.teacher_backbone if teacher else method.backbone
    head = method.teacher_projection_head if teacher else method.projection_head
    return torch.stack(head(backbone(torch.cat(views))).chunk(len(views)), dim=1)


@pytest.mark.parametrize("backbone", ["test_resnet", "test_vit"])
def test_method_loss_compares_online_and_momentum_views(backbone: str) -> None:
    torch.manual_seed(0)
    method = ssl_hub.create_method("mmcr", backbone=backbone, n_views=3, lmda=0.2, **SMALL).double()
    with torch.no_grad():  # a momentum encoder different from the online one, as after some training
        for parameter in method.teacher_projection_head.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    generator = torch.Generator().manual_seed(1)
    views = [torch.randn(4, 3, 32, 32, generator=generator, dtype=torch.float64) for _ in range(3)]
    with torch.no_grad():
        online, momentum = encoded(method, views, teacher=False), encoded(method, views, teacher=True)
        output = method(views=views)
    assert output.loss.item() == pytest.approx(mmcr_reference(online, momentum, 0.2), rel=1e-10)
    assert set(output.metrics) == {"loss_centroid_nuclear_norm", "loss_view_nuclear_norm"}


def test_without_the_momentum_encoder_the_loss_uses_the_online_views_alone() -> None:
    torch.manual_seed(0)
    method = ssl_hub.create_method("mmcr", backbone="test_resnet", momentum_encoder=False, **SMALL).double()
    assert method.teacher_backbone is None
    assert method.teacher_projection_head is None
    assert not any(name.startswith("teacher") for name in method.state_dict())
    assert method.callbacks() == []
    views = [torch.randn(4, 3, 32, 32, dtype=torch.float64) for _ in range(2)]
    with torch.no_grad():
        expected = mmcr_reference(encoded(method, views, teacher=False), None, 0.0)
        assert method(views=views).loss.item() == pytest.approx(expected, rel=1e-10)


def test_views_in_one_pass_false_embeds_each_view_alone() -> None:
    torch.manual_seed(0)
    method = ssl_hub.create_method("mmcr", backbone="test_resnet", views_in_one_pass=False, **SMALL).double()
    views = [torch.randn(4, 3, 32, 32, dtype=torch.float64) for _ in range(2)]
    with torch.no_grad():
        online = torch.stack([method.projection_head(method.backbone(v)) for v in views], dim=1)
        momentum = torch.stack([method.teacher_projection_head(method.teacher_backbone(v)) for v in views], dim=1)
        assert method(views=views).loss.item() == pytest.approx(mmcr_reference(online, momentum, 0.0), rel=1e-10)
        # batch-norm statistics of each view alone differ from those of both views together
        assert not torch.allclose(online, encoded(method, views, teacher=False))


def test_gradient_flows_into_the_online_network_only() -> None:
    method = ssl_hub.create_method("mmcr", backbone="test_resnet", **SMALL)
    method(views=[torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]).loss.backward()
    assert all(p.grad is not None for module in (method.backbone, method.projection_head) for p in module.parameters())
    for target in (method.teacher_backbone, method.teacher_projection_head):
        assert all(not p.requires_grad and p.grad is None for p in target.parameters())


def test_momentum_encoder_moves_by_a_constant_momentum_during_pretrain(tmp_path: Path) -> None:
    method = ssl_hub.create_method("mmcr", backbone="test_resnet", momentum_start=0.9, momentum_end=0.9, **SMALL)
    check_ema_follows(method, tmp_path, lambda step, steps: 0.9, publishes_teacher=False)


def test_save_publishes_the_online_backbone_and_load_restores_the_momentum_encoder(tmp_path: Path) -> None:
    method = ssl_hub.create_method("mmcr", backbone="test_resnet", momentum_start=0.9, momentum_end=0.9, **SMALL)
    check_save_and_load(method, tmp_path, ["teacher_backbone.", "teacher_projection_head.", "projection_head."])
    assert method.published is method.backbone


def test_transform_alternates_byols_two_views_and_follows_n_views() -> None:
    transform = ssl_hub.create_method("mmcr", backbone="test_resnet", n_views=5, **SMALL).make_transform(32)
    assert isinstance(transform, MMCRTransform)
    assert [type(t) for t in transform.transforms] == [BYOLView1Transform, BYOLView2Transform] * 2 + [
        BYOLView1Transform
    ]
    views = transform(torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8))
    assert [tuple(v.shape) for v in views] == [(3, 32, 32)] * 5
    no_blur = MMCRTransform(k=2, input_size=32, gaussian_blur=0.0)
    assert [repr(t).count("RandomApply(p=0.0, GaussianBlur") for t in no_blur.transforms] == [1, 1]
    with pytest.raises(ValueError, match="k"):
        MMCRTransform(k=0)


def test_defaults_are_the_official_codes() -> None:
    config = MMCRConfig()
    assert (config.n_views, config.lmda, config.momentum_encoder) == (2, 0.0, True)
    assert (config.momentum_start, config.momentum_end) == (0.99, 0.99)
    assert (config.projection_hidden_dim, config.projection_output_dim) == (8192, 512)
    head_defaults = {k: p.default for k, p in inspect.signature(MMCRProjectionHead).parameters.items()}
    assert head_defaults == {
        "input_dim": 2048,
        "hidden_dim": 8192,
        "output_dim": 512,
        "num_layers": 2,
        "batch_norm": True,
        "use_bias": False,
    }
    linears = [m for m in MMCRProjectionHead(16, 32, 8).modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features, m.bias) for m in linears] == [(16, 32, None), (32, 32, None), (32, 8, None)]
    assert all(m.bias is not None for m in MMCRProjectionHead(16, 32, 8, use_bias=True).modules() if hasattr(m, "bias"))


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("n_views", 1),
        ("lmda", -0.5),
        ("momentum_start", 1.5),
        ("momentum_end", -0.1),
        ("projection_hidden_dim", 0),
        ("projection_output_dim", 2.5),
    ],
)
def test_bad_hyperparameters_fail_at_construction_naming_the_argument(argument: str, value: float) -> None:
    with pytest.raises(ValueError, match=argument):
        ssl_hub.create_method("mmcr", backbone="test_resnet", **{argument: value})


def test_wrong_number_of_views_is_refused() -> None:
    method = ssl_hub.create_method("mmcr", backbone="test_resnet", n_views=3, **SMALL)
    with pytest.raises(ValueError, match="3 views"):
        method(views=[torch.randn(2, 3, 32, 32)] * 2)
