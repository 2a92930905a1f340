"""DCLWLoss against the DCL paper's eq. 6 with the von Mises-Fisher weights (section 3.2), computed independently.

Gathered negatives and weights on 2 gloo ranks: tests/test_gathered_losses.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_dcl import dcl_reference, dot, embeddings, unit

import ssl_hub
from ssl_hub.losses import DCLLoss, DCLWLoss
from ssl_hub.losses.dcl import negative_mises_fisher_weights
from ssl_hub.methods.dclw import DCLW, DCLWConfig


def mises_fisher_reference(out0: torch.Tensor, out1: torch.Tensor, sigma: float) -> list[float]:
    """w_i = 2 - exp(<z_i^(1), z_i^(2)> / sigma) / E_j[exp(<z_j^(1), z_j^(2)> / sigma)]."""
    kernel = [math.exp(dot(unit(a), unit(b)) / sigma) for a, b in zip(out0, out1, strict=True)]
    mean = sum(kernel) / len(kernel)
    return [2.0 - k / mean for k in kernel]


@pytest.mark.parametrize("sigma", [0.1, 0.5, 2.0])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_loss_matches_the_papers_weighted_formula(sigma: float, temperature: float) -> None:
    out0, out1 = embeddings(5, seed=7)
    weights = mises_fisher_reference(out0, out1, sigma)
    assert sum(weights) / len(weights) == pytest.approx(1.0)
    loss = DCLWLoss(temperature=temperature, sigma=sigma)(out0, out1)
    assert loss.item() == pytest.approx(dcl_reference(out0, out1, temperature, weights), rel=1e-10)


def test_weights_are_constants_for_backpropagation() -> None:
    out0, out1 = embeddings(4)
    out0.requires_grad_(True)
    unit0, unit1 = torch.nn.functional.normalize(out0, dim=1), torch.nn.functional.normalize(out1, dim=1)
    weights = negative_mises_fisher_weights(unit0, unit1, sigma=0.5)
    assert not weights.requires_grad
    # With weights frozen at their values, DCLW is DCL with that weight_fn: same loss, same gradient.
    frozen = weights.detach().clone()
    weighted = DCLWLoss(temperature=0.2, sigma=0.5)(out0, out1)
    (grad,) = torch.autograd.grad(weighted, out0)
    fixed = DCLLoss(temperature=0.2, weight_fn=lambda a, b: frozen)(out0, out1)
    (fixed_grad,) = torch.autograd.grad(fixed, out0)
    torch.testing.assert_close(weighted, fixed)
    torch.testing.assert_close(grad, fixed_grad)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [({"sigma": 0.0}, "sigma"), ({"sigma": -1.0}, "sigma"), ({"temperature": 0.0}, "temperature")],
)
def test_bad_hyperparameters_are_refused_naming_the_argument(kwargs: dict[str, float], argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        DCLWLoss(**kwargs)
    with pytest.raises(ValueError, match=argument):
        ssl_hub.create_method("dclw", backbone="test_resnet", **kwargs)


def test_method_defaults() -> None:
    method = ssl_hub.create_method("dclw", backbone="test_resnet")
    assert isinstance(method, DCLW)
    assert method.config == DCLWConfig(temperature=0.1, sigma=0.5)
    assert isinstance(method.criterion, DCLWLoss)
    assert (method.criterion.temperature, method.criterion.sigma) == (0.1, 0.5)
