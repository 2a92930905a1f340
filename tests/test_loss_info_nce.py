"""InfoNCELoss against MoCo v3's / NNCLR's cross-view InfoNCE computed independently, in float64 with loops."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_hub.losses import InfoNCELoss, NTXentLoss


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(u * v for u, v in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(u * u for u in a)) * math.sqrt(sum(v * v for v in b)))


def info_nce_reference(anchors: torch.Tensor, candidates: torch.Tensor, temperature: float) -> float:
    """NNCLR eq. 2 / MoCo v3 eq. 1: -log exp(a_i . c_i / t) / sum_k exp(a_i . c_k / t), averaged over anchors."""
    a, c = anchors.tolist(), candidates.tolist()
    total = 0.0
    for i in range(len(a)):
        logits = [cosine(a[i], c[k]) / temperature for k in range(len(c))]
        total += -(logits[i] - math.log(sum(math.exp(x) for x in logits)))
    return total / len(a)


@pytest.mark.parametrize("batch_size", [1, 3, 8])
@pytest.mark.parametrize("temperature", [0.1, 0.2, 1.0])
def test_matches_the_cross_view_info_nce_formula(batch_size: int, temperature: float) -> None:
    generator = torch.Generator().manual_seed(batch_size)
    anchors, candidates = torch.randn(2, batch_size, 5, generator=generator, dtype=torch.float64)
    loss = InfoNCELoss(temperature=temperature)(anchors, candidates)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(info_nce_reference(anchors, candidates, temperature), rel=1e-10)


def test_differs_from_ntxent_which_also_contrasts_anchors_with_each_other() -> None:
    anchors, candidates = torch.randn(2, 6, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert InfoNCELoss(0.2)(anchors, candidates).item() != pytest.approx(NTXentLoss(0.2)(anchors, candidates).item())


def test_gradient_reaches_both_inputs() -> None:
    anchors = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    candidates = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    InfoNCELoss()(anchors, candidates).backward()
    assert anchors.grad is not None
    assert anchors.grad.abs().sum() > 0
    assert candidates.grad is not None
    assert candidates.grad.abs().sum() > 0


@pytest.mark.parametrize("temperature", [0.0, -0.1, float("inf")])
def test_bad_temperature_is_refused_naming_the_argument(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(temperature=temperature)


def test_mismatched_batches_are_refused() -> None:
    with pytest.raises(ValueError, match="one shape"):
        InfoNCELoss()(torch.randn(4, 8), torch.randn(5, 8))
