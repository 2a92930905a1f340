"""VICRegLoss against the paper's eq. 1-6 computed independently (float64, loops); VICReg's transform and method.

Global-batch variance and covariance on 2 gloo ranks: tests/test_gathered_losses.py.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from torchvision.transforms import v2

import ssl_hub
from ssl_hub.heads import VICRegProjectionHead
from ssl_hub.losses import VICRegLoss
from ssl_hub.methods.vicreg import VICRegConfig
from ssl_hub.transforms import VICRegTransform, VICRegViewTransform


def variance_term(z: torch.Tensor, eps: float) -> float:
    """Eq. 1-2: mean_j max(0, 1 - sqrt(Var(z_j) + eps)), unbiased variance (gamma = 1)."""
    n, d = z.shape
    total = 0.0
    for j in range(d):
        values = [float(z[b, j]) for b in range(n)]
        mean = sum(values) / n
        variance = sum((v - mean) ** 2 for v in values) / (n - 1)
        total += max(0.0, 1.0 - math.sqrt(variance + eps))
    return total / d


def covariance_term(z: torch.Tensor) -> float:
    """Eq. 3-4: (1 / d) sum_{i != j} C(Z)_ij^2, C(Z) = 1 / (n - 1) sum_b (z_b - mean)(z_b - mean)^T."""
    n, d = z.shape
    means = [sum(float(z[b, j]) for b in range(n)) / n for j in range(d)]
    total = 0.0
    for i in range(d):
        for j in range(d):
            if i != j:
                c = sum((float(z[b, i]) - means[i]) * (float(z[b, j]) - means[j]) for b in range(n)) / (n - 1)
                total += c**2
    return total / d


def vicreg_reference_terms(
    z_a: torch.Tensor, z_b: torch.Tensor, lam: float, mu: float, nu: float, eps: float
) -> dict[str, float]:
    """Eq. 6's weighted terms with the official code's scaling: invariance is the mean squared error over batch and
    dimensions (eq. 5 divided by d), the variance terms of the two branches are averaged, the covariance terms
    summed."""
    n, d = z_a.shape
    invariance = sum((float(z_a[b, j]) - float(z_b[b, j])) ** 2 for b in range(n) for j in range(d)) / (n * d)
    variance = (variance_term(z_a, eps) + variance_term(z_b, eps)) / 2
    covariance = covariance_term(z_a) + covariance_term(z_b)
    return {"invariance": lam * invariance, "variance": mu * variance, "covariance": nu * covariance}


def vicreg_reference(z_a: torch.Tensor, z_b: torch.Tensor, lam: float, mu: float, nu: float, eps: float) -> float:
    """Eq. 6: the sum of the weighted terms."""
    return sum(vicreg_reference_terms(z_a, z_b, lam, mu, nu, eps).values())


def embeddings(batch_size: int, dim: int, seed: int = 0, scale: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    # std around 0.5-1.5 per dimension: some dimensions inside the hinge, some outside
    z_a = torch.randn(batch_size, dim, generator=generator, dtype=torch.float64) * (scale + torch.arange(dim) / dim)
    z_b = z_a + 0.3 * torch.randn(batch_size, dim, generator=generator, dtype=torch.float64)
    return z_a, z_b


@pytest.mark.parametrize(("batch_size", "dim"), [(2, 3), (6, 4), (16, 6)])
@pytest.mark.parametrize(
    ("lam", "mu", "nu", "eps"),
    [(25.0, 25.0, 1.0, 1e-4), (1.0, 0.0, 0.0, 1e-4), (0.0, 2.0, 0.5, 1e-2), (3.0, 1.0, 7.0, 0)],
)
def test_loss_matches_the_papers_formula(
    batch_size: int, dim: int, lam: float, mu: float, nu: float, eps: float
) -> None:
    z_a, z_b = embeddings(batch_size, dim, seed=batch_size)
    loss = VICRegLoss(lambda_param=lam, mu_param=mu, nu_param=nu, eps=eps)(z_a, z_b)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(vicreg_reference(z_a, z_b, lam, mu, nu, eps), rel=1e-10)


@pytest.mark.parametrize(("lam", "mu", "nu"), [(25.0, 25.0, 1.0), (3.0, 0.5, 7.0)])
def test_terms_are_the_papers_weighted_terms_and_sum_to_the_loss(lam: float, mu: float, nu: float) -> None:
    z_a, z_b = embeddings(8, 5, seed=3)
    criterion = VICRegLoss(lambda_param=lam, mu_param=mu, nu_param=nu)
    terms = criterion.terms(z_a, z_b)
    expected = vicreg_reference_terms(z_a, z_b, lam, mu, nu, 1e-4)
    assert list(terms) == ["invariance", "variance", "covariance"]
    for name, value in expected.items():
        assert value > 0
        assert terms[name].item() == pytest.approx(value, rel=1e-10), name
    assert criterion(z_a, z_b).item() == pytest.approx(sum(expected.values()), rel=1e-12)


def test_gather_distributed_is_a_no_op_in_one_process() -> None:
    z_a, z_b = embeddings(6, 4)
    torch.testing.assert_close(VICRegLoss(gather_distributed=True)(z_a, z_b), VICRegLoss()(z_a, z_b))


@pytest.mark.parametrize("argument", ["lambda_param", "mu_param", "nu_param", "eps"])
def test_negative_weights_are_refused_naming_the_argument(argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        VICRegLoss(**{argument: -1.0})
    with pytest.raises(ValueError, match=argument):
        ssl_hub.create_method("vicreg", backbone="test_resnet", **{argument: -1.0})


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="one shape"):
        VICRegLoss()(torch.randn(4, 8), torch.randn(4, 7))
    with pytest.raises(ValueError, match="at least 2 images"):
        VICRegLoss()(torch.randn(1, 8), torch.randn(1, 8))
    with pytest.raises(ValueError, match="projection_num_layers"):
        VICRegConfig(projection_num_layers=1)


def test_paper_defaults() -> None:
    loss_defaults = {k: p.default for k, p in inspect.signature(VICRegLoss).parameters.items()}
    assert loss_defaults == {
        "lambda_param": 25.0,
        "mu_param": 25.0,
        "nu_param": 1.0,
        "gather_distributed": False,
        "eps": 1e-4,
    }
    head_defaults = {k: p.default for k, p in inspect.signature(VICRegProjectionHead).parameters.items()}
    assert head_defaults == {
        "input_dim": 2048,
        "hidden_dim": 8192,
        "output_dim": 8192,
        "num_layers": 3,
        "norm_layer": torch.nn.BatchNorm1d,
    }
    config = VICRegConfig()
    assert (config.lambda_param, config.mu_param, config.nu_param, config.eps) == (25.0, 25.0, 1.0, 1e-4)
    assert (config.projection_hidden_dim, config.projection_output_dim, config.projection_num_layers) == (8192, 8192, 3)


def find(transform: v2.Compose, kind: type) -> list[v2.Transform]:
    """The steps of ``kind`` in ``transform``, also inside RandomApply."""
    found = []
    for step in transform.transforms:
        inner = step.transforms if isinstance(step, v2.RandomApply) else [step]
        found += [(step, t) for t in inner if isinstance(t, kind)]
    return found


def test_transform_has_the_papers_augmentation() -> None:
    transform = VICRegTransform(input_size=32)
    assert len(transform.transforms) == 2
    assert transform.transforms[0] is transform.transforms[1]
    view = transform.transforms[0]
    assert isinstance(view, VICRegViewTransform)
    ((jitter_apply, jitter),) = find(view, v2.ColorJitter)
    assert jitter_apply.p == 0.8
    assert [jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue] == [
        pytest.approx(v) for v in [(0.6, 1.4), (0.6, 1.4), (0.8, 1.2), (-0.1, 0.1)]
    ]
    ((blur_apply, blur),) = find(view, v2.GaussianBlur)
    assert blur_apply.p == 0.5
    assert list(blur.sigma) == [0.1, 2.0]
    ((solarize, _),) = find(view, v2.RandomSolarize)
    assert solarize.p == 0.1
    ((gray, _),) = find(view, v2.RandomGrayscale)
    assert gray.p == 0.2
    ((solarize, _),) = find(VICRegTransform(input_size=32, solarize_prob=0.3).transforms[0], v2.RandomSolarize)
    assert solarize.p == 0.3
    with pytest.raises(ValueError, match="solarize_prob"):
        VICRegTransform(solarize_prob=1.5)


def test_method_loss_is_the_formula_on_its_three_layer_expander_and_it_has_its_transform() -> None:
    method = ssl_hub.create_method("vicreg", backbone="test_resnet", projection_hidden_dim=32, projection_output_dim=16)
    assert type(method.make_transform(32)) is VICRegTransform
    linears = [m for m in method.projection_head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(method.feature_dim, 32), (32, 32), (32, 16)]
    torch.manual_seed(0)
    views = [torch.randn(4, 3, 32, 32) for _ in range(2)]
    method.eval()
    with torch.no_grad():
        z_a = method.projection_head(method.backbone(views[0])).double()
        z_b = method.projection_head(method.backbone(views[1])).double()
        output = method(views=views)
    assert output.loss.item() == pytest.approx(vicreg_reference(z_a, z_b, 25.0, 25.0, 1.0, 1e-4), rel=1e-4)
    # the logged diagnostics: each weighted term, and the mean standard deviation of a dimension
    for name, value in vicreg_reference_terms(z_a, z_b, 25.0, 25.0, 1.0, 1e-4).items():
        assert output.metrics[f"loss_{name}"].item() == pytest.approx(value, rel=1e-4), name
    assert output.metrics["embedding_std"].item() == pytest.approx(z_a.std(dim=0).mean().item(), rel=1e-4)
