"""PMSN: the loss against the paper's formula with a power-law prior (float64 loops), its reduction to MSN for the
uniform prior, custom priors, and the method (MSN's networks with PMSN's loss). The gathered PMSN loss is checked in
test_msn.py's 2-process test."""

from __future__ import annotations

import pytest
import torch
from conftest import normalized_entropy_reference
from masked_siamese_reference import kl, me_max, msn_reference, power_law, unit
from teacher_method_checks import transform_views

import ssl_hub
from ssl_hub.losses import MSNLoss, PMSNCustomLoss, PMSNLoss, power_law_distribution
from ssl_hub.methods import MSN, PMSN
from ssl_hub.modules import UnsupportedBackboneError

SMALL = {"projection_hidden_dim": 32, "projection_output_dim": 16, "num_prototypes": 20}


def embeddings(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_power_law_prior() -> None:
    prior = power_law_distribution(5, 0.25, dtype=torch.float64)
    assert prior.tolist() == pytest.approx(power_law(5, 0.25), rel=1e-12)  # k^(-0.25), k = 1..5, normalised
    assert prior.sum().item() == pytest.approx(1.0)
    assert power_law_distribution(4, 0.0).tolist() == pytest.approx([0.25] * 4)
    with pytest.raises(ValueError, match="exponent"):
        power_law_distribution(4, -1.0)


@pytest.mark.parametrize(("exponent", "views"), [(0.25, 1), (0.25, 3), (1.0, 2)])
def test_loss_matches_the_paper_with_a_power_law_prior(exponent: float, views: int) -> None:
    anchors, targets, prototypes = embeddings(views * 4, 6, seed=1), embeddings(4, 6, seed=2), embeddings(7, 6, seed=3)
    loss = PMSNLoss(temperature=0.3, power_law_exponent=exponent, regularization_weight=0.7)(
        anchors, targets, prototypes
    )
    # The regulariser is KL(mean anchor assignment || power-law prior).
    expected = msn_reference(
        anchors, targets, prototypes, 0.3, 0.25, 3, 0.7, lambda mean: kl(mean, power_law(len(mean), exponent))
    )
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_uniform_prior_is_msn() -> None:
    anchors, targets, prototypes = embeddings(8, 6, seed=1), embeddings(4, 6, seed=2), embeddings(7, 6, seed=3)
    msn = MSNLoss()(anchors, targets, prototypes)
    torch.testing.assert_close(PMSNLoss(power_law_exponent=0.0)(anchors, targets, prototypes), msn)
    uniform = PMSNCustomLoss(target_distribution=lambda mean: torch.full_like(mean, 1 / len(mean)))
    torch.testing.assert_close(uniform(anchors, targets, prototypes), msn)
    assert msn.item() == pytest.approx(msn_reference(anchors, targets, prototypes, 0.1, 0.25, 3, 1.0, me_max))


def test_custom_prior_matches_the_formula_and_is_checked() -> None:
    anchors, targets, prototypes = embeddings(8, 6, seed=4), embeddings(4, 6, seed=5), embeddings(3, 6, seed=6)
    prior = [0.5, 0.3, 0.2]
    criterion = PMSNCustomLoss(target_distribution=lambda mean: torch.tensor(prior), sinkhorn_iterations=0)
    expected = msn_reference(anchors, targets, prototypes, 0.1, 0.25, 0, 1.0, lambda mean: kl(mean, prior))
    assert criterion(anchors, targets, prototypes).item() == pytest.approx(expected, rel=1e-6)
    wrong = PMSNCustomLoss(target_distribution=lambda mean: torch.ones(2) / 2)
    with pytest.raises(ValueError, match="target_distribution"):
        wrong(anchors, targets, prototypes)


def test_method_is_msn_with_the_prior_matching_loss() -> None:
    method = ssl_hub.create_method("pmsn", backbone="test_vit", power_law_exponent=0.5, **SMALL)
    assert isinstance(method, PMSN)
    assert isinstance(method, MSN)
    assert isinstance(method.criterion, PMSNLoss)
    assert method.criterion.power_law_exponent == 0.5
    assert PMSN.config_class().power_law_exponent == 0.25
    assert PMSN.published_backbone == "teacher_backbone"
    assert "2210.07277" in PMSN.paper.url
    views = [torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32), torch.randn(2, 3, 16, 16)]
    assert torch.isfinite(method(views=views).loss)


@pytest.mark.parametrize("method_class", [MSN, PMSN])
def test_logs_the_normalized_entropy_of_the_anchors_assignments(method_class: type[MSN]) -> None:
    method = method_class("test_vit", projection_hidden_dim=32, projection_output_dim=16, num_prototypes=20).double()
    views = [v.double() for v in transform_views(method)]
    captured: dict[str, torch.Tensor] = {}
    terms = method.criterion.terms

    def capture(anchors: torch.Tensor, targets: torch.Tensor, prototypes: torch.Tensor, **kwargs: float) -> dict:
        captured.update(anchors=anchors.detach(), prototypes=prototypes.detach())
        return terms(anchors, targets, prototypes, **kwargs)

    method.criterion.terms = capture  # type: ignore[method-assign]
    output = method(views=views)
    prototypes = [unit(q) for q in captured["prototypes"].tolist()]
    logits = [
        [sum(a * b for a, b in zip(unit(z), q, strict=True)) / 0.1 for q in prototypes]  # cosine / temperature
        for z in captured["anchors"].tolist()
    ]
    assert len(logits) == (len(views) - 1) * len(views[0])  # every anchor view of every image
    expected = normalized_entropy_reference(logits)
    assert output.metrics["prediction_entropy"].item() == pytest.approx(expected, rel=1e-9)
    assert {"loss_cross_entropy", "loss_regularization"} <= set(output.metrics)


def test_a_cnn_backbone_or_bad_values_fail_at_construction() -> None:
    with pytest.raises(UnsupportedBackboneError, match="Vision Transformer"):
        ssl_hub.create_method("pmsn", backbone="test_resnet")
    with pytest.raises(ValueError, match="power_law_exponent"):
        ssl_hub.create_method("pmsn", backbone="test_vit", power_law_exponent=-0.5)
    with pytest.raises(ValueError, match=r"PMSN: temperature"):
        ssl_hub.create_method("pmsn", backbone="test_vit", temperature=0.0)
