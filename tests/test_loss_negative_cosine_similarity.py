"""NegativeCosineSimilarity against SimSiam's D(p, z) and BYOL's normalised squared error, in float64 with loops."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_hub.losses import NegativeCosineSimilarity


def negative_cosine_reference(x0: torch.Tensor, x1: torch.Tensor, eps: float) -> float:
    """SimSiam eq. 1, D(p, z) = -p/||p|| . z/||z||, each norm at least eps, averaged over the rows."""
    total = 0.0
    for a, b in zip(x0.tolist(), x1.tolist(), strict=True):
        dot = sum(u * v for u, v in zip(a, b, strict=True))
        norm_a = max(math.sqrt(sum(u * u for u in a)), eps)
        norm_b = max(math.sqrt(sum(v * v for v in b)), eps)
        total += -dot / (norm_a * norm_b)
    return total / len(x0)


@pytest.mark.parametrize("batch_size", [1, 5])
@pytest.mark.parametrize("eps", [1e-8, 1e-3])
def test_matches_simsiam_formula(batch_size: int, eps: float) -> None:
    generator = torch.Generator().manual_seed(batch_size)
    x0, x1 = torch.randn(2, batch_size, 6, generator=generator, dtype=torch.float64)
    loss = NegativeCosineSimilarity(eps=eps)(x0, x1)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(negative_cosine_reference(x0, x1, eps), rel=1e-12)


def test_dim_selects_the_vector_axis() -> None:
    x0, x1 = torch.randn(2, 3, 4, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # dim=2 on (3, 4, 7): vectors of 7 along the last axis, i.e. the 12 rows of the reshaped (12, 7) tensors.
    expected = negative_cosine_reference(x0.reshape(12, 7), x1.reshape(12, 7), 1e-8)
    assert NegativeCosineSimilarity(dim=2)(x0, x1).item() == pytest.approx(expected, rel=1e-12)
    # dim=0 on (7, 5): vectors along the first axis, i.e. the columns.
    y0, y1 = x0[0, :, :5].T.contiguous(), x1[0, :, :5].T.contiguous()
    expected = negative_cosine_reference(y0.T, y1.T, 1e-8)
    assert NegativeCosineSimilarity(dim=0)(y0, y1).item() == pytest.approx(expected, rel=1e-12)


def test_byol_normalised_squared_error_is_two_plus_twice_the_loss() -> None:
    """BYOL eq. 2: ||p/||p|| - z/||z|| ||^2 = 2 - 2 cos(p, z)."""
    p, z = torch.randn(2, 6, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    byol = sum(((a / a.norm() - b / b.norm()) ** 2).sum().item() for a, b in zip(p, z, strict=True)) / len(p)
    assert byol == pytest.approx(2 + 2 * NegativeCosineSimilarity()(p, z).item(), rel=1e-12)


def test_zero_vector_gives_zero_similarity_not_nan() -> None:
    x0 = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    x1 = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    assert NegativeCosineSimilarity()(x0, x1).item() == pytest.approx(-0.5)


def test_half_precision_inputs_are_computed_in_float32() -> None:
    x0, x1 = torch.randn(2, 4, 8, dtype=torch.bfloat16)
    assert NegativeCosineSimilarity()(x0, x1).dtype == torch.float32


@pytest.mark.parametrize("eps", [0.0, -1e-8, float("nan")])
def test_bad_eps_is_refused_naming_the_argument(eps: float) -> None:
    with pytest.raises(ValueError, match="eps"):
        NegativeCosineSimilarity(eps=eps)


def test_bad_dim_and_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="dim"):
        NegativeCosineSimilarity(dim=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one shape"):
        NegativeCosineSimilarity()(torch.randn(4, 8), torch.randn(4, 7))
