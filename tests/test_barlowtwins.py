"""BarlowTwinsLoss against the paper's eq. 1-2 computed independently (float64, loops); the Barlow Twins method.

Global-batch statistics on 2 gloo ranks: tests/test_gathered_losses.py.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch

import ssl_hub
from ssl_hub.heads import BarlowTwinsProjectionHead
from ssl_hub.losses import BarlowTwinsLoss
from ssl_hub.methods.barlowtwins import BarlowTwins, BarlowTwinsConfig


def standardized_columns(z: torch.Tensor, eps: float) -> list[list[float]]:
    """Each dimension over the batch: (x - mean) / sqrt(biased variance + eps), as BatchNorm1d(affine=False)."""
    n, d = z.shape
    columns = []
    for j in range(d):
        values = [float(z[b, j]) for b in range(n)]
        mean = sum(values) / n
        variance = sum((v - mean) ** 2 for v in values) / n
        columns.append([(v - mean) / math.sqrt(variance + eps) for v in values])
    return columns


def barlow_twins_reference_terms(
    z_a: torch.Tensor, z_b: torch.Tensor, lambda_param: float, eps: float = 1e-5
) -> dict[str, float]:
    """Eq. 1's terms: sum_i (1 - C_ii)^2 and lambda sum_{i != j} C_ij^2, C_ij = sum_b za_bi zb_bj / N on
    standardised z."""
    n, d = z_a.shape
    a, b = standardized_columns(z_a, eps), standardized_columns(z_b, eps)
    terms = {"invariance": 0.0, "redundancy": 0.0}
    for i in range(d):
        for j in range(d):
            c = sum(a[i][k] * b[j][k] for k in range(n)) / n
            if i == j:
                terms["invariance"] += (1.0 - c) ** 2
            else:
                terms["redundancy"] += lambda_param * c**2
    return terms


def barlow_twins_reference(z_a: torch.Tensor, z_b: torch.Tensor, lambda_param: float, eps: float = 1e-5) -> float:
    """Eq. 1: the sum of the two terms."""
    return sum(barlow_twins_reference_terms(z_a, z_b, lambda_param, eps).values())


def paper_cross_correlation_loss(z_a: torch.Tensor, z_b: torch.Tensor, lambda_param: float) -> float:
    """Eq. 1 with eq. 2's C_ij = sum_b za_bi zb_bj / (sqrt(sum_b za_bi^2) sqrt(sum_b zb_bj^2)) on centred z."""
    a = [[x - sum(col) / len(col) for x in col] for col in z_a.T.tolist()]
    b = [[x - sum(col) / len(col) for x in col] for col in z_b.T.tolist()]
    loss = 0.0
    for i, column_a in enumerate(a):
        for j, column_b in enumerate(b):
            c = sum(x * y for x, y in zip(column_a, column_b, strict=True))
            c /= math.sqrt(sum(x * x for x in column_a)) * math.sqrt(sum(y * y for y in column_b))
            loss += (1.0 - c) ** 2 if i == j else lambda_param * c**2
    return loss


def embeddings(batch_size: int, dim: int, seed: int = 0, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    z_a = torch.randn(batch_size, dim, generator=generator, dtype=torch.float64) * scale
    z_b = z_a + 0.5 * scale * torch.randn(batch_size, dim, generator=generator, dtype=torch.float64)
    return z_a, z_b


@pytest.mark.parametrize(("batch_size", "dim"), [(2, 3), (5, 4), (16, 7)])
@pytest.mark.parametrize("lambda_param", [0.0, 5e-3, 0.1, 1.0])
def test_loss_matches_the_papers_formula(batch_size: int, dim: int, lambda_param: float) -> None:
    z_a, z_b = embeddings(batch_size, dim, seed=batch_size)
    loss = BarlowTwinsLoss(lambda_param=lambda_param)(z_a, z_b)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(barlow_twins_reference(z_a, z_b, lambda_param), rel=1e-10)


def test_terms_are_the_papers_two_terms_and_sum_to_the_loss() -> None:
    z_a, z_b = embeddings(9, 5, seed=2)
    criterion = BarlowTwinsLoss(lambda_param=0.1)
    terms = criterion.terms(z_a, z_b)
    expected = barlow_twins_reference_terms(z_a, z_b, 0.1)
    assert list(terms) == ["invariance", "redundancy"]
    for name, value in expected.items():
        assert value > 0
        assert terms[name].item() == pytest.approx(value, rel=1e-10), name
    assert criterion(z_a, z_b).item() == pytest.approx(sum(expected.values()), rel=1e-12)


def test_batch_norm_epsilon_is_the_only_difference_to_the_cosine_form() -> None:
    z_a, z_b = embeddings(8, 5, seed=1, scale=30.0)  # variances ~900 >> eps: eq. 2 and batch-norm form agree
    loss = BarlowTwinsLoss(lambda_param=0.02)(z_a, z_b)
    assert loss.item() == pytest.approx(paper_cross_correlation_loss(z_a, z_b, 0.02), rel=1e-7)


def test_gather_distributed_is_a_no_op_in_one_process() -> None:
    z_a, z_b = embeddings(6, 4)
    expected = BarlowTwinsLoss()(z_a, z_b)
    torch.testing.assert_close(BarlowTwinsLoss(gather_distributed=True)(z_a, z_b), expected)


def test_half_precision_embeddings_give_a_float32_loss() -> None:
    z_a, z_b = embeddings(8, 4)
    loss = BarlowTwinsLoss()(z_a.bfloat16(), z_b.bfloat16())
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(barlow_twins_reference(z_a.bfloat16(), z_b.bfloat16(), 5e-3), rel=1e-4)


@pytest.mark.parametrize("lambda_param", [-1e-3, float("nan"), float("inf")])
def test_bad_lambda_is_refused_naming_the_argument(lambda_param: float) -> None:
    with pytest.raises(ValueError, match="lambda_param"):
        BarlowTwinsLoss(lambda_param=lambda_param)
    with pytest.raises(ValueError, match="lambda_param"):
        ssl_hub.create_method("barlowtwins", backbone="test_resnet", lambda_param=lambda_param)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="one shape"):
        BarlowTwinsLoss()(torch.randn(4, 8), torch.randn(4, 7))
    with pytest.raises(ValueError, match="at least 2 images"):
        BarlowTwinsLoss()(torch.randn(1, 8), torch.randn(1, 8))
    with pytest.raises(ValueError, match="projection_hidden_dim"):
        BarlowTwinsConfig(projection_hidden_dim=0)


def test_paper_defaults() -> None:
    config = BarlowTwinsConfig()
    assert (config.lambda_param, config.projection_hidden_dim, config.projection_output_dim) == (5e-3, 8192, 8192)
    head_defaults = {k: p.default for k, p in inspect.signature(BarlowTwinsProjectionHead).parameters.items()}
    assert head_defaults == {"input_dim": 2048, "hidden_dim": 8192, "output_dim": 8192}
    assert inspect.signature(BarlowTwinsLoss).parameters["lambda_param"].default == 5e-3
    recipe = BarlowTwins.default_training_arguments()
    assert (recipe["learning_rate"], recipe["weight_decay"]) == (3e-4, 1.5e-6)  # on the shared recipe's AdamW


def test_method_uses_byol_views_and_a_three_layer_projector() -> None:
    method = ssl_hub.create_method(
        "barlowtwins", backbone="test_vit", projection_hidden_dim=32, projection_output_dim=16
    )
    method.fit_input_size(32)
    assert type(method.make_transform(32)) is ssl_hub.transforms.BYOLTransform
    linears = [m for m in method.projection_head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(method.feature_dim, 32), (32, 32), (32, 16)]
    torch.manual_seed(0)
    views = [torch.randn(4, 3, 32, 32) for _ in range(2)]
    method.eval()
    with torch.no_grad():
        z_a = method.projection_head(method.backbone(views[0])).double()
        z_b = method.projection_head(method.backbone(views[1])).double()
        output = method(views=views)
    assert output.loss.item() == pytest.approx(barlow_twins_reference(z_a, z_b, 5e-3), rel=1e-4)
    expected = barlow_twins_reference_terms(z_a, z_b, 5e-3)
    assert output.metrics.keys() == {"loss_invariance", "loss_redundancy"}
    for name, value in expected.items():
        assert output.metrics[f"loss_{name}"].item() == pytest.approx(value, rel=1e-4), name
