"""LeJEPA: SIGReg against the Epps-Pulley statistic computed independently (float64, loops, complex exponentials, the
symmetric trapezoid over [-t_max, t_max]), its value for collapsed embeddings in closed form, its directions, the
invariance term, the method's wiring of global and local crops, the transform, the recipe, bad input.

Global-batch loss on 2 gloo ranks: tests/test_gathered_losses.py.
"""

from __future__ import annotations

import cmath
import math

import numpy as np
import pytest
import torch
from PIL import Image

import ssl_hub
from ssl_hub.heads import LeJEPAProjectionHead
from ssl_hub.losses import LeJEPALoss, SIGReg
from ssl_hub.methods import LeJEPAConfig
from ssl_hub.transforms import LeJEPATransform

SMALL = {"projection_hidden_dim": 16, "projection_output_dim": 6, "sigreg_num_vectors": 5}


def epps_pulley_reference(x: list[float], t_max: float, knots: int) -> float:
    """``N * integral_{-t_max}^{t_max} |mean_n exp(i t x_n) - exp(-t^2/2)|^2 exp(-t^2/2) dt`` by the trapezoidal
    rule on ``2 * knots - 1`` evenly spaced points of the whole interval."""
    points = [-t_max + 2 * t_max * k / (2 * knots - 2) for k in range(2 * knots - 1)]
    spacing = points[1] - points[0]
    values = []
    for t in points:
        ecf = sum(cmath.exp(1j * t * xn) for xn in x) / len(x)
        phi = math.exp(-t * t / 2)
        values.append(abs(ecf - phi) ** 2 * phi)
    integral = spacing * (sum(values) - (values[0] + values[-1]) / 2)
    return len(x) * integral


def sigreg_reference(views: torch.Tensor, directions: torch.Tensor, t_max: float, knots: int) -> float:
    """The statistic of every view's ``N`` embeddings projected on every direction, averaged."""
    statistics = []
    for z in views.tolist():  # (N, D) each
        for a in directions.T.tolist():  # (D,) each
            projected = [sum(zi * ai for zi, ai in zip(row, a, strict=True)) for row in z]
            statistics.append(epps_pulley_reference(projected, t_max, knots))
    return sum(statistics) / len(statistics)


def random_directions(dim: int, count: int, seed: int) -> torch.Tensor:
    a = torch.randn(dim, count, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a / a.norm(dim=0)


@pytest.mark.parametrize(("knots", "t_max"), [(17, 3.0), (5, 2.0)])
def test_sigreg_is_the_epps_pulley_statistic_of_every_projection(knots: int, t_max: float) -> None:
    views = torch.randn(2, 7, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1.5 + 0.3
    directions = random_directions(4, 3, seed=1)
    sigreg = SIGReg(num_vectors=3, knots=knots, t_max=t_max).double()
    expected = sigreg_reference(views, directions, t_max, knots)
    assert sigreg(views, directions).item() == pytest.approx(expected, rel=1e-10)


def test_collapsed_embeddings_cost_the_closed_form_and_a_gaussian_sample_far_less() -> None:
    """All embeddings equal: every characteristic function is 1, so T = N * integral (1 - phi)^2 phi."""
    sigreg = SIGReg(num_vectors=16, seed=0).double()
    collapsed = torch.zeros(1, 256, 8, dtype=torch.float64)
    t = np.linspace(-3, 3, 33)
    phi = np.exp(-(t**2) / 2)
    closed_form = 256 * np.trapezoid((1 - phi) ** 2 * phi, t)
    assert sigreg(collapsed).item() == pytest.approx(closed_form, rel=1e-12)
    gaussian = torch.randn(1, 256, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert sigreg(gaussian).item() < closed_form / 50


def test_sigreg_directions_are_unit_vectors_fixed_by_seed_and_call_and_resumed_with_the_state() -> None:
    first, second = SIGReg(num_vectors=6, seed=3), SIGReg(num_vectors=6, seed=3)
    a0 = first.directions(5, torch.device("cpu"), torch.float64)
    torch.testing.assert_close(a0.norm(dim=0), torch.ones(6, dtype=torch.float64))
    a1 = first.directions(5, torch.device("cpu"), torch.float64)
    assert not torch.allclose(a0, a1)  # new directions at every call
    torch.manual_seed(123)  # the global generator plays no part
    torch.testing.assert_close(second.directions(5, torch.device("cpu"), torch.float64), a0, rtol=0, atol=0)
    resumed = SIGReg(num_vectors=6, seed=0)
    resumed.load_state_dict(first.state_dict())  # seed and call count: a resumed run draws on where it stopped
    torch.testing.assert_close(
        resumed.directions(5, torch.device("cpu"), torch.float64),
        first.directions(5, torch.device("cpu"), torch.float64),
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize("with_local", [True, False])
def test_lejepa_loss_weighs_the_invariance_to_the_global_mean_and_sigreg(with_local: bool) -> None:
    generator = torch.Generator().manual_seed(2)
    global_proj = torch.randn(2, 5, 3, generator=generator, dtype=torch.float64)
    local_proj = torch.randn(4, 5, 3, generator=generator, dtype=torch.float64) if with_local else None
    loss = LeJEPALoss(lambda_param=0.2, sigreg_num_vectors=4, seed=7).double()
    terms = loss.terms(global_proj=global_proj, local_proj=local_proj)
    views = global_proj.tolist() + (local_proj.tolist() if local_proj is not None else [])
    squared = [
        (views[v][n][d] - (global_proj[0, n, d].item() + global_proj[1, n, d].item()) / 2) ** 2
        for v in range(len(views))
        for n in range(5)
        for d in range(3)
    ]
    assert terms["invariance"].item() == pytest.approx(0.8 * sum(squared) / len(squared), rel=1e-12)
    directions = SIGReg(num_vectors=4, seed=7).directions(3, torch.device("cpu"), torch.float64)  # the same draw
    sigreg = sigreg_reference(torch.tensor(views, dtype=torch.float64), directions, 3.0, 17)
    assert terms["sigreg"].item() == pytest.approx(0.2 * sigreg, rel=1e-10)
    again = LeJEPALoss(lambda_param=0.2, sigreg_num_vectors=4, seed=7).double()
    assert again(global_proj=global_proj, local_proj=local_proj).item() == pytest.approx(sum(terms.values()).item())


def transform_batch(transform: LeJEPATransform, count: int = 4, size: int = 48) -> list[torch.Tensor]:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    items = [transform(Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))) for _ in range(count)]
    return [torch.stack(column) for column in zip(*items, strict=True)]


@pytest.mark.parametrize(
    ("backbone", "batching", "all_centers"),
    [
        ("test_resnet", "size", False),
        ("test_resnet", "view", False),
        ("test_resnet", "kind", False),
        ("test_resnet", "size", True),
        ("test_vit", "size", False),
    ],
)
def test_method_loss_is_the_criterion_of_the_global_and_local_crops_embeddings(
    backbone: str, batching: str, all_centers: bool
) -> None:
    torch.manual_seed(0)
    method = ssl_hub.create_method(
        "lejepa",
        backbone=backbone,
        views_in_one_pass=batching != "view",
        local_crops_own_pass=batching == "kind",
        center_on_all_views=all_centers,
        **SMALL,
    ).double()
    views = [v.double() for v in transform_batch(method.make_transform(32))]
    assert len(views) == 8
    with torch.no_grad():
        passes: dict[object, list[int]] = {}
        for index, view in enumerate(views):  # size: one pass per crop size, as the official example
            key = {"size": tuple(view.shape), "view": index, "kind": (index < 2, tuple(view.shape))}[batching]
            passes.setdefault(key, []).append(index)
        embedded: dict[int, torch.Tensor] = {}
        for indices in passes.values():
            out = method.projection_head(method.backbone(torch.cat([views[i] for i in indices])))
            embedded.update(zip(indices, out.chunk(len(indices)), strict=True))
        reference = LeJEPALoss(sigreg_num_vectors=5, seed=int(method.criterion.sigreg.seed)).double()
        centers = 8 if all_centers else 2  # the paper's rule for non-ViT backbones: every view is a global view
        expected = reference(
            global_proj=torch.stack([embedded[i] for i in range(centers)]),
            local_proj=torch.stack([embedded[i] for i in range(centers, 8)]) if centers < 8 else None,
        )
        output = method(views=views)
    assert output.loss.item() == pytest.approx(expected.item(), rel=1e-10)
    assert set(output.metrics) == {"loss_invariance", "loss_sigreg"}


def test_defaults_are_the_official_ones() -> None:
    config = LeJEPAConfig()
    assert (config.lambda_param, config.sigreg_num_vectors, config.sigreg_knots, config.sigreg_t_max) == (
        0.05,
        1024,
        17,
        3.0,
    )
    # Global and local crops in a pass each, as the official recipe's 224 / 96 px crops are, even at one size.
    assert config.views_in_one_pass
    assert config.local_crops_own_pass
    assert not config.center_on_all_views  # each crop pulled to the global crops' mean, as the README's recipe
    head = LeJEPAProjectionHead(384)
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(384, 2048), (2048, 2048), (2048, 64)]
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in head.modules()) == 2
    recipe = ssl_hub.get_method_class("lejepa").default_training_arguments()
    assert (recipe["learning_rate"], recipe["weight_decay"], recipe["lr_scheduler_type"]) == (5e-4, 5e-2, "cosine")
    views = LeJEPATransform().transforms
    assert len(views) == 8
    crops = [view.transforms[0] for view in views]
    assert [(c.size, c.scale) for c in crops] == [((224, 224), (0.3, 1.0))] * 2 + [((96, 96), (0.05, 0.3))] * 6
    text = repr(views[0]) + repr(views[2])
    assert text.count("RandomSolarize(p=0.2") == 2  # every crop, global and local
    assert text.count("RandomApply(p=0.5, GaussianBlur") == 2
    assert "RandomApply(p=0.8, ColorJitter(brightness=(0.6, 1.4), contrast=(0.6, 1.4), saturation=(0.8, 1.2)" in text
    method = ssl_hub.create_method("lejepa", "test_vit", **SMALL)  # 16 px patches: local crops of whole patches
    assert [v.transforms[0].size for v in method.make_transform(224).transforms][-1] == (96, 96)


@pytest.mark.parametrize(("argument", "value"), [("lambda_param", 1.5), ("sigreg_num_vectors", 0), ("sigreg_knots", 1)])
def test_bad_hyperparameters_fail_at_construction_naming_the_argument(argument: str, value: float) -> None:
    with pytest.raises(ValueError, match=argument):
        ssl_hub.create_method("lejepa", backbone="test_resnet", **{argument: value})


def test_bad_views_and_embeddings_are_refused_clearly() -> None:
    method = ssl_hub.create_method("lejepa", backbone="test_resnet", **SMALL)
    with pytest.raises(ValueError, match="2 global crops"):
        method(views=[torch.randn(2, 3, 32, 32)])
    with pytest.raises(ValueError, match=r"\(V_g, N, D\) global and \(V_l, N, D\) local"):
        LeJEPALoss()(global_proj=torch.randn(2, 4, 3), local_proj=torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match=r"\(\.\.\., N, D\)"):
        SIGReg()(torch.randn(3))
