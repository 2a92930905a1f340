"""VICRegL: the loss against the official ``main_vicregl.py``'s definition computed independently (float64, loops
over images, locations and dimensions), its invariance at zero for identical views, the grid of a view's feature map
against the pixels the crop really took, the method's wiring on a CNN and a ViT, the transform, bad input.

Global-batch loss on 2 gloo ranks: tests/test_gathered_losses.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import one_location_warnings
from PIL import Image

import ssl_hub
from ssl_hub.losses import VICRegLLoss
from ssl_hub.methods import VICRegLConfig
from ssl_hub.modules import DenseFeaturesError, forward_dense_features, location_grid
from ssl_hub.transforms import LocatedViewTransform, RandomResizedCropAndFlip, VICRegLTransform

SMALL = {
    "projection_hidden_dim": 16,
    "projection_output_dim": 8,
    "local_projection_hidden_dim": 16,
    "local_projection_output_dim": 6,
}
Rows = list[list[float]]


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def variance_term(x: list[Rows], eps: float) -> float:
    """Mean over slots ``k`` and dimensions of ``max(0, 1 - sqrt(Var_b x[b][k][d] + eps))`` (unbiased)."""
    hinges = []
    for k in range(len(x[0])):
        for d in range(len(x[0][0])):
            column = [image[k][d] for image in x]
            m = mean(column)
            var = sum((v - m) ** 2 for v in column) / (len(column) - 1)
            hinges.append(max(0.0, 1.0 - math.sqrt(var + eps)))
    return mean(hinges)


def covariance_term(x: list[Rows]) -> float:
    """Mean over slots ``k`` of the squared off-diagonal covariances over the batch, divided by the dimension."""
    per_slot = []
    dim = len(x[0][0])
    for k in range(len(x[0])):
        columns = [[image[k][d] for image in x] for d in range(dim)]
        means = [mean(c) for c in columns]
        total = 0.0
        for p in range(dim):
            for q in range(dim):
                if p != q:
                    cov = sum((a - means[p]) * (b - means[q]) for a, b in zip(columns[p], columns[q], strict=True)) / (
                        len(x) - 1
                    )
                    total += cov**2
        per_slot.append(total / dim)
    return mean(per_slot)


def squared_error(x: list[Rows], y: list[Rows]) -> float:
    return mean(
        [
            (a - b) ** 2
            for xi, yi in zip(x, y, strict=True)
            for u, v in zip(xi, yi, strict=True)
            for a, b in zip(u, v, strict=True)
        ]
    )


def distance(u: list[float], v: list[float]) -> float:
    return math.sqrt(sum((a - b) ** 2 for a, b in zip(u, v, strict=True)))


def matched(maps_a: list[Rows], maps_b: list[Rows], keys_a: list[Rows], keys_b: list[Rows], count: int | None):
    """For each image: every location n of a with its nearest location of b (by ``keys``), the ``count`` closest
    pairs kept in the order of n. Returns the matched rows of a and of b."""
    left, right = [], []
    for image_a, image_b, ka, kb in zip(maps_a, maps_b, keys_a, keys_b, strict=True):
        pairs = []
        for n, key in enumerate(ka):
            distances = [distance(key, other) for other in kb]
            nearest = min(range(len(kb)), key=lambda m: (distances[m], m))
            pairs.append((distances[nearest], n, nearest))
        kept = sorted(sorted(pairs)[: len(pairs) if count is None else min(count, len(pairs))], key=lambda p: p[1])
        left.append([image_a[n] for _, n, _ in kept])
        right.append([image_b[m] for _, _, m in kept])
    return left, right


def vicregl_reference(
    embeddings: list[Rows], maps: list[list[Rows]], grids: list[list[Rows]], alpha: float, num_matches: tuple[int, int]
) -> float:
    """The official loss with coefficients 25, 25, 1 and eps 1e-4: views 0 and 1 are global; ``maps[v][b]`` is the
    list of location embeddings of image b in view v, ``grids[v][b]`` their image positions."""
    lam, mu, nu, eps = 25.0, 25.0, 1.0, 1e-4
    pairs = [(i, j) for i in range(2) for j in range(len(embeddings)) if j != i]
    as_slots = [[[row] for row in view] for view in embeddings]  # (B, 1, D): one slot
    global_loss = (
        lam * mean([squared_error(as_slots[i], as_slots[j]) for i, j in pairs])
        + mu * mean([variance_term(z, eps) for z in as_slots])
        + nu * mean([covariance_term(z) for z in as_slots])
    )
    local_losses = []
    for i, j in pairs:
        total = 0.0
        for keys, (count_i, count_j) in [(maps, (None, None)), (grids, num_matches)]:
            for a, b, count in [(i, j, count_i), (j, i, count_j)]:
                x, y = matched(maps[a], maps[b], keys[a], keys[b], count)
                total += 0.5 * (
                    lam * squared_error(x, y)
                    + mu * (variance_term(x, eps) + variance_term(y, eps)) / 2
                    + nu * (covariance_term(x) + covariance_term(y)) / 2
                )
        local_losses.append(total)
    return alpha * global_loss + (1 - alpha) * mean(local_losses)


def random_features(sides: list[int], batch: int = 4, dim: int = 3, local_dim: int = 2, seed: int = 0):
    """Per view: an embedding (B, D), maps (B, s, s, D') and a grid (B, s, s, 2) of random positions (float64)."""
    generator = torch.Generator().manual_seed(seed)
    features, grids = [], []
    for side in sides:
        embedding = torch.randn(batch, dim, generator=generator, dtype=torch.float64)
        maps = torch.randn(batch, side, side, local_dim, generator=generator, dtype=torch.float64)
        features.append((embedding, maps))
        grids.append(10 * torch.rand(batch, side, side, 2, generator=generator, dtype=torch.float64))
    return features, grids


def as_lists(features, grids):
    embeddings = [z.tolist() for z, _ in features]
    maps = [m.flatten(1, 2).tolist() for _, m in features]
    positions = [g.flatten(1, 2).tolist() for g in grids]
    return embeddings, maps, positions


@pytest.mark.parametrize(("alpha", "num_matches"), [(0.75, (3, 2)), (0.4, (20, 4)), (1.0, (1, 1)), (0.0, (2, 5))])
def test_loss_is_the_official_definition(alpha: float, num_matches: tuple[int, int]) -> None:
    features, grids = random_features([2, 2, 1, 3])  # two 2 x 2 global maps, local maps of 1 and 3 x 3 locations
    loss = VICRegLLoss(alpha=alpha, num_matches=num_matches)(features[:2], grids[:2], features[2:], grids[2:])
    expected = vicregl_reference(*as_lists(features, grids), alpha=alpha, num_matches=num_matches)
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_terms_sum_to_the_loss_and_each_is_weighted_by_alpha() -> None:
    features, grids = random_features([2, 2])
    criterion = VICRegLLoss(alpha=0.75)
    terms = criterion.terms(features, grids)
    assert set(terms) == {f"{s}_{t}" for s in ("global", "local") for t in ("invariance", "variance", "covariance")}
    assert torch.stack(list(terms.values())).sum().item() == pytest.approx(criterion(features, grids).item())
    # the global terms are alpha times the official global loss, the local ones 1 - alpha times its local loss
    lists = as_lists(features, grids)
    global_loss = vicregl_reference(*lists, alpha=1.0, num_matches=(20, 4))
    local_loss = vicregl_reference(*lists, alpha=0.0, num_matches=(20, 4))
    for scope, expected in [("global", 0.75 * global_loss), ("local", 0.25 * local_loss)]:
        scoped = sum(value.item() for name, value in terms.items() if name.startswith(scope))
        assert scoped == pytest.approx(expected, rel=1e-10)
    assert set(VICRegLLoss(alpha=1.0).terms(features, grids)) == {
        "global_invariance",
        "global_variance",
        "global_covariance",
    }
    assert set(VICRegLLoss(alpha=0.0).terms(features, grids)) == {
        "local_invariance",
        "local_variance",
        "local_covariance",
    }


def test_identical_views_have_no_invariance_term() -> None:
    (view, *_), (grid, *_) = random_features([3])
    terms = VICRegLLoss().terms([view, view], [grid, grid], [view], [grid])
    assert terms["global_invariance"].item() == 0.0
    assert terms["local_invariance"].item() == 0.0  # every location matched to itself, by embedding and by position
    assert terms["local_variance"].item() > 0.0


def test_gradient_reaches_every_view() -> None:
    features, grids = random_features([2, 2, 1])
    leaves = [(z.requires_grad_(), m.requires_grad_()) for z, m in features]
    VICRegLLoss()(leaves[:2], grids[:2], leaves[2:], grids[2:]).backward()
    assert all(z.grad is not None and m.grad is not None and m.grad.abs().sum() > 0 for z, m in leaves)


def test_bad_loss_input_is_refused() -> None:
    features, grids = random_features([2, 2, 1])
    with pytest.raises(ValueError, match="alpha"):
        VICRegLLoss(alpha=1.5)
    with pytest.raises(ValueError, match="num_matches"):
        VICRegLLoss(num_matches=(0, 4))
    with pytest.raises(ValueError, match="2 global views"):
        VICRegLLoss()(features, grids)
    with pytest.raises(ValueError, match="one grid per view"):
        VICRegLLoss()(features[:2], grids[:2], features[2:], [])
    with pytest.raises(ValueError, match="same"):
        VICRegLLoss()(features[:2], [grids[0], grids[2]])
    with pytest.raises(ValueError, match="at least 2 images"):
        VICRegLLoss()([(z[:1], m[:1]) for z, m in features[:2]], [g[:1] for g in grids[:2]])


def test_location_grid_places_each_cell_at_its_centre_and_mirrors_flipped_views() -> None:
    locations = torch.tensor([[10.0, 20.0, 8.0, 4.0, 0.0], [10.0, 20.0, 8.0, 4.0, 1.0]])
    grid = location_grid(locations, 2, 2)  # (2, 2, 2, 2)
    assert grid[0].tolist() == [[[12.0, 21.0], [12.0, 23.0]], [[16.0, 21.0], [16.0, 23.0]]]
    assert grid[1].tolist() == [[[12.0, 23.0], [12.0, 21.0]], [[16.0, 23.0], [16.0, 21.0]]]
    with pytest.raises(ValueError, match=r"\(B, 5\)"):
        location_grid(torch.zeros(2, 4), 2, 2)


@pytest.mark.parametrize("hf_prob", [0.0, 1.0])
def test_a_views_grid_points_at_the_pixels_its_crop_took(hf_prob: float) -> None:
    # Each pixel of the image holds its own coordinates (red = row, green = column); nearest resampling keeps them,
    # so a view's pixel at each cell of a map as fine as the view itself reads where the grid says it lies.
    rows, columns = np.mgrid[:90, :120]
    image = Image.fromarray(np.stack([rows, columns, np.zeros_like(rows)], axis=2).astype(np.uint8))
    crop = RandomResizedCropAndFlip(30, scale=(0.1, 0.5), hf_prob=hf_prob, interpolation="nearest")
    torch.manual_seed(0)
    for _ in range(5):
        view, location = crop(image)
        assert location[4].item() == hf_prob
        pixels = torch.from_numpy(np.asarray(view, dtype=np.float64))  # (30, 30, 3)
        grid = location_grid(location[None].double(), 30, 30)[0]  # (30, 30, 2)
        torch.testing.assert_close(pixels[..., :2], grid.floor(), rtol=0, atol=1.0)
        assert (pixels[..., :2] == grid.floor()).double().mean() > 0.9


def transform_batch(transform: VICRegLTransform, count: int = 4, size: int = 64) -> list[torch.Tensor]:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    items = [transform(Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))) for _ in range(count)]
    return [torch.stack(column) for column in zip(*items, strict=True)]


def test_transform_returns_the_crops_then_their_locations() -> None:
    transform = VICRegLTransform(crop_sizes=(32, 16), crop_counts=(2, 3), crop_min_scales=(0.4, 0.08))
    views = transform_batch(transform)
    assert [tuple(v.shape) for v in views] == [(4, 3, 32, 32)] * 2 + [(4, 3, 16, 16)] * 3 + [(4, 5)] * 5
    areas = views[5][:, 2] * views[5][:, 3] / 64**2  # the global crops' share of the image
    assert areas.min() > 0.3
    assert areas.max() <= 1.0
    local_areas = torch.cat([v[:, 2] * v[:, 3] for v in views[7:]]) / 64**2
    assert local_areas.max() < 0.5
    blur = [repr(t).split("GaussianBlur")[0].rsplit("p=", 1)[1] for t in transform.transforms]
    assert blur == ["1.0, ", "0.1, ", "1.0, ", "0.1, ", "1.0, "]  # BYOL's two views alternate in each category
    assert all(isinstance(t, LocatedViewTransform) for t in transform.transforms)


def test_transform_defaults_are_the_official_codes() -> None:
    transform = VICRegLTransform()
    crops = [t.crop_and_flip.crop for t in transform.transforms]
    assert [c.size for c in crops] == [(224, 224)] * 2 + [(96, 96)] * 6
    assert [c.scale for c in crops] == [(0.4, 1.0)] * 2 + [(0.08, 0.4)] * 6
    with pytest.raises(ValueError, match="gaussian_blur"):
        VICRegLTransform(gaussian_blur=(1.0, 0.5, 0.1))
    no_blur = VICRegLTransform(crop_sizes=(32, 16), gaussian_blur=0.0)  # one number: every crop (CIFAR-size recipes)
    assert all("RandomApply(p=0.0, GaussianBlur" in repr(t) for t in no_blur.transforms)
    with pytest.raises(ValueError, match="hf_prob"):
        VICRegLTransform(hf_prob=2.0)


@pytest.mark.parametrize("backbone", ["test_resnet", "test_vit"])
def test_method_loss_is_the_criterion_of_each_views_embedding_and_map(backbone: str) -> None:
    torch.manual_seed(0)
    method = ssl_hub.create_method("vicregl", backbone=backbone, **SMALL).double()
    views = [v.double() if v.ndim == 4 else v for v in transform_batch(method.make_transform(64))]
    images, locations = views[: len(views) // 2], views[len(views) // 2 :]
    features, grids = [], []
    with torch.no_grad():
        for image, location in zip(images, locations, strict=True):
            pooled, dense = forward_dense_features(method.backbone, image)  # (B, D), (B, C, H, W)
            cells = dense.permute(0, 2, 3, 1)
            embedded = method.local_projection_head(cells.reshape(-1, cells.shape[3])).reshape(*cells.shape[:3], -1)
            features.append((method.projection_head(pooled), embedded))
            grids.append(location_grid(location.double(), cells.shape[1], cells.shape[2]))
        expected = method.criterion(features[:2], grids[:2], features[2:], grids[2:])
        output = method(views=views)
    assert output.loss.item() == pytest.approx(expected.item(), rel=1e-10)
    assert set(output.metrics) == {
        f"loss_{s}_{t}" for s in ("global", "local") for t in ("invariance", "variance", "covariance")
    }
    assert max(g.shape[1] for g in grids) > 1  # the global views' maps have several locations to match


def test_global_views_of_one_location_are_warned_once_local_crops_not(caplog: pytest.LogCaptureFixture) -> None:
    strided = ssl_hub.create_method("vicregl", backbone="test_resnet", **SMALL)  # stride 32: 1 x 1 at 32 px
    dilated = ssl_hub.create_method("vicregl", backbone="test_resnet", backbone_kwargs={"output_stride": 16}, **SMALL)
    views = transform_batch(dilated.make_transform(32), size=48)  # 2 global crops of 32 px, then 16 px local crops
    with torch.no_grad():
        assert forward_dense_features(dilated.backbone, views[2])[1].shape[-2:] == (1, 1)  # a local crop's map
    assert one_location_warnings(caplog, dilated, views) == []  # global maps 2 x 2
    [message] = one_location_warnings(caplog, strided, views, forwards=2)
    assert "VICRegL matches locations" in message
    assert "for 32 x 32 px views that map is 1 x 1" in message


def test_a_head_without_weight_in_the_loss_is_not_built() -> None:
    only_global = ssl_hub.create_method("vicregl", backbone="test_resnet", alpha=1.0, **SMALL)
    only_local = ssl_hub.create_method("vicregl", backbone="test_resnet", alpha=0.0, **SMALL)
    assert only_global.local_projection_head is None
    assert only_global.projection_head is not None
    assert only_local.projection_head is None
    assert only_local.local_projection_head is not None
    for method in (only_global, only_local):
        method(views=transform_batch(method.make_transform(64))).loss.backward()
        assert all(p.grad is not None for p in method.parameters())  # nothing unused (DDP would refuse it)


def test_defaults_are_the_official_codes() -> None:
    config = VICRegLConfig()
    assert (config.lambda_param, config.mu_param, config.nu_param, config.alpha) == (25.0, 25.0, 1.0, 0.75)
    assert (config.global_view_matches, config.other_view_matches) == (20, 4)
    assert (config.projection_hidden_dim, config.projection_output_dim, config.projection_num_layers) == (8192, 8192, 3)
    assert (config.local_projection_hidden_dim, config.local_projection_output_dim) == (512, 512)
    method = ssl_hub.create_method("vicregl", backbone="test_resnet", **SMALL)
    assert method.criterion.num_matches == (20, 4)
    transform = method.make_transform(224)
    assert [t.crop_and_flip.crop.size for t in transform.transforms] == [(224, 224)] * 2 + [(96, 96)] * 6


def hidden_norms(head: torch.nn.Module) -> list[type[torch.nn.Module]]:
    return [type(m) for m in head.modules() if isinstance(m, torch.nn.LayerNorm | torch.nn.BatchNorm1d)]


@pytest.mark.parametrize(
    ("backbone", "projection_norm", "expected"),
    [
        ("test_resnet", "auto", torch.nn.BatchNorm1d),  # official: batch norm for ResNets
        ("test_convnext", "auto", torch.nn.LayerNorm),  # and layer norm for ConvNeXt
        ("test_vit", "auto", torch.nn.LayerNorm),
        ("test_convnext", "batch", torch.nn.BatchNorm1d),
        ("test_resnet", "layer", torch.nn.LayerNorm),
    ],
)
def test_expanders_normalise_as_the_official_code_for_the_backbone(
    backbone: str, projection_norm: str, expected: type[torch.nn.Module]
) -> None:
    torch.manual_seed(0)
    method = ssl_hub.create_method("vicregl", backbone=backbone, projection_norm=projection_norm, **SMALL)
    assert hidden_norms(method.projection_head) == [expected] * 2
    assert hidden_norms(method.local_projection_head) == [expected] * 2
    linears = [m for m in method.local_projection_head.modules() if isinstance(m, torch.nn.Linear)]
    # a bias before batch norm would be cancelled by its centring, before layer norm it is not
    assert [m.bias is not None for m in linears[:2]] == [expected is torch.nn.LayerNorm] * 2
    views = transform_batch(method.make_transform(64))
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    before = [p.detach().clone() for p in method.local_projection_head.parameters()]
    loss = method(views=views).loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert all(not torch.equal(a, b) for a, b in zip(before, method.local_projection_head.parameters(), strict=True))


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("projection_norm", "group"),
        ("alpha", 1.2),
        ("lambda_param", -1.0),
        ("global_view_matches", 0),
        ("local_projection_num_layers", 1),
    ],
)
def test_bad_hyperparameters_fail_at_construction_naming_the_argument(argument: str, value: float) -> None:
    with pytest.raises(ValueError, match=argument):
        ssl_hub.create_method("vicregl", backbone="test_resnet", **{argument: value})


def test_views_without_locations_are_refused_naming_the_transform() -> None:
    method = ssl_hub.create_method("vicregl", backbone="test_resnet", **SMALL)
    with pytest.raises(ValueError, match="VICRegLTransform"):
        method(views=[torch.randn(2, 3, 32, 32)] * 2)


def test_a_backbone_without_a_feature_map_is_refused_at_construction() -> None:
    class Flat(torch.nn.Module):
        num_features = 8

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :8]

    with pytest.raises(DenseFeaturesError, match="VICRegL"):
        ssl_hub.create_method("vicregl", backbone=Flat(), **SMALL)
