"""Collapse measures: SimSiam's std of l2-normalised embeddings, RankMe's effective rank and the normalised entropy
of predictions, against their formulas computed here in float64, on cases whose values are known in closed form, and
on bad input."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import normalized_entropy_reference, probability_entropy_reference, std_of_l2_normalized_reference

from ssl_hub.eval import effective_rank, normalized_entropy, normalized_entropy_of_probabilities, std_of_l2_normalized


def test_std_of_l2_normalized_is_the_papers_formula() -> None:
    embeddings = torch.randn(7, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.3
    assert std_of_l2_normalized(embeddings).item() == pytest.approx(
        std_of_l2_normalized_reference(embeddings.tolist()), rel=1e-6
    )


def test_std_of_l2_normalized_is_zero_when_collapsed_and_one_over_sqrt_d_when_isotropic() -> None:
    one_direction = torch.tensor([[1.0, 2.0, -3.0]]) * torch.tensor([[0.5], [2.0], [7.0]])  # same direction, scaled
    assert std_of_l2_normalized(one_direction).item() == pytest.approx(0.0, abs=1e-7)
    isotropic = torch.randn(20000, 64, generator=torch.Generator().manual_seed(0))
    assert std_of_l2_normalized(isotropic).item() == pytest.approx(1 / math.sqrt(64), rel=0.01)


def test_std_of_l2_normalized_carries_no_gradient() -> None:
    embeddings = torch.randn(4, 3, requires_grad=True)
    assert not std_of_l2_normalized(embeddings).requires_grad


def rank_me_reference(singular_values: list[float], epsilon: float = 1e-7) -> float:
    """RankMe eq. 1: exp of the entropy of the l1-normalised singular values (each plus epsilon)."""
    p = [s / sum(singular_values) + epsilon for s in singular_values]
    return math.exp(-sum(x * math.log(x) for x in p))


def test_effective_rank_is_rank_mes_formula() -> None:
    features = torch.randn(30, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    features[:, 0] *= 10.0  # one dominant direction, so the rank is well below 6
    singular_values = torch.linalg.svdvals(features).tolist()
    assert effective_rank(features) == pytest.approx(rank_me_reference(singular_values), rel=1e-9)
    assert 1.0 < effective_rank(features) < 5.0


@pytest.mark.parametrize("rank", [1, 3, 8])
def test_effective_rank_counts_equal_singular_values(rank: int) -> None:
    # Orthonormal columns times 5: `rank` singular values of 5 and none other, so the effective rank is `rank`.
    q, _ = torch.linalg.qr(torch.randn(40, rank, generator=torch.Generator().manual_seed(rank), dtype=torch.float64))
    features = torch.cat([5 * q, torch.zeros(40, 8 - rank, dtype=torch.float64)], dim=1)  # (40, 8)
    assert effective_rank(features, epsilon=1e-12) == pytest.approx(rank, rel=1e-6)


def test_normalized_entropy_is_the_formula() -> None:
    logits = torch.randn(5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    assert normalized_entropy(logits).item() == pytest.approx(normalized_entropy_reference(logits.tolist()), rel=1e-6)
    assert not normalized_entropy(logits.requires_grad_()).requires_grad


def test_normalized_entropy_is_one_for_uniform_and_zero_for_one_hot_predictions() -> None:
    assert normalized_entropy(torch.full((3, 512), 0.25)).item() == pytest.approx(1.0, abs=1e-6)
    one_hot = torch.eye(4)[[0, 2, 3]] * 100.0  # (3, 4): each row puts all its mass on one class
    assert normalized_entropy(one_hot).item() == pytest.approx(0.0, abs=1e-6)


def test_normalized_entropy_of_probabilities_is_the_formula_with_zero_terms_left_out() -> None:
    probabilities = torch.rand(4, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    probabilities[1, :3] = 0.0  # 0 ln 0 = 0, not NaN
    probabilities /= probabilities.sum(dim=1, keepdim=True)
    expected = probability_entropy_reference(probabilities.tolist())
    assert normalized_entropy_of_probabilities(probabilities).item() == pytest.approx(expected, rel=1e-12)
    assert normalized_entropy_of_probabilities(torch.full((2, 8), 1 / 8)).item() == pytest.approx(1.0, abs=1e-6)
    assert normalized_entropy_of_probabilities(torch.eye(5)[[1, 4]]).item() == 0.0
    assert not normalized_entropy_of_probabilities(probabilities.requires_grad_()).requires_grad


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: normalized_entropy(torch.randn(4, 1)), "K >= 2"),
        (lambda: normalized_entropy_of_probabilities(torch.ones(4, 1)), "K >= 2"),
        (lambda: normalized_entropy_of_probabilities(torch.ones(4)), r"\(B, K\)"),
        (lambda: normalized_entropy(torch.randn(4)), r"\(B, K\)"),
        (lambda: std_of_l2_normalized(torch.randn(1, 4)), "B >= 2"),
        (lambda: std_of_l2_normalized(torch.randn(4)), r"\(B, D\)"),
        (lambda: effective_rank(torch.randn(2, 3, 4)), r"\(N, D\)"),
        (lambda: effective_rank(torch.zeros(5, 3)), "all zero"),
        (lambda: effective_rank(torch.randn(5, 3), epsilon=0.0), "epsilon"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]
