"""DCLLoss against the DCL paper's eq. 6 computed independently (float64, loops); the DCL method.

Gathered negatives on 2 gloo ranks: tests/test_gathered_losses.py.
"""

from __future__ import annotations

import math

import pytest
import torch

import ssl_hub
from ssl_hub.losses import DCLLoss
from ssl_hub.methods.dcl import DCL, DCLConfig


def unit(v: torch.Tensor) -> list[float]:
    norm = math.sqrt(sum(float(x) ** 2 for x in v))
    return [float(x) / norm for x in v]


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def dcl_reference(
    out0: torch.Tensor, out1: torch.Tensor, temperature: float, weights: list[float] | None = None
) -> float:
    """DCL eq. 6: -w_i <z_i^(k), z_i^(3-k)> / t + log sum_{l, j != i} exp(<z_i^(k), z_j^(l)> / t), mean over i, k."""
    views = [[unit(v) for v in out0], [unit(v) for v in out1]]
    n = len(out0)
    total = 0.0
    for k in range(2):
        for i in range(n):
            anchor = views[k][i]
            weight = 1.0 if weights is None else weights[i]
            positive = weight * dot(anchor, views[1 - k][i]) / temperature
            negatives = sum(
                math.exp(dot(anchor, views[view][j]) / temperature) for view in range(2) for j in range(n) if j != i
            )
            total += -positive + math.log(negatives)
    return total / (2 * n)


def embeddings(batch_size: int, dim: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    pair = torch.randn(2, batch_size, dim, generator=generator, dtype=torch.float64)
    return pair[0], pair[1]


@pytest.mark.parametrize("batch_size", [2, 3, 8])
@pytest.mark.parametrize("temperature", [0.07, 0.1, 0.5, 1.3])
def test_loss_matches_the_papers_formula(batch_size: int, temperature: float) -> None:
    out0, out1 = embeddings(batch_size, seed=batch_size)
    loss = DCLLoss(temperature=temperature)(out0, out1)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(dcl_reference(out0, out1, temperature), rel=1e-10)


def test_custom_weight_fn_scales_the_positive_term() -> None:
    out0, out1 = embeddings(4)
    weights = [0.5, 1.0, 1.5, 2.0]
    criterion = DCLLoss(temperature=0.2, weight_fn=lambda a, b: a.new_tensor(weights))
    assert criterion(out0, out1).item() == pytest.approx(dcl_reference(out0, out1, 0.2, weights), rel=1e-10)


def test_gather_distributed_is_a_no_op_in_one_process() -> None:
    out0, out1 = embeddings(6)
    expected = DCLLoss(temperature=0.2)(out0, out1)
    assert DCLLoss(temperature=0.2, gather_distributed=True)(out0, out1).item() == pytest.approx(expected.item())


def test_half_precision_embeddings_give_a_float32_loss() -> None:
    out0, out1 = embeddings(4)
    loss = DCLLoss()(out0.bfloat16(), out1.bfloat16())
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(dcl_reference(out0.bfloat16(), out1.bfloat16(), 0.1), rel=1e-5)


@pytest.mark.parametrize("temperature", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_temperature_is_refused_naming_the_argument(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        DCLLoss(temperature=temperature)
    with pytest.raises(ValueError, match="temperature"):
        ssl_hub.create_method("dcl", backbone="test_resnet", temperature=temperature)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(TypeError, match="weight_fn"):
        DCLLoss(weight_fn=3)
    with pytest.raises(ValueError, match="one shape"):
        DCLLoss()(torch.randn(4, 8), torch.randn(3, 8))
    with pytest.raises(ValueError, match="at least 2 images"):
        DCLLoss()(torch.randn(1, 8), torch.randn(1, 8))
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        DCLLoss(weight_fn=lambda a, b: a.new_ones(3))(torch.randn(4, 8), torch.randn(4, 8))
    with pytest.raises(ValueError, match="projection_output_dim"):
        DCLConfig(projection_output_dim=0)


def test_method_defaults_and_loss() -> None:
    method = ssl_hub.create_method("dcl", backbone="test_resnet")
    assert isinstance(method, DCL)
    assert method.config == DCLConfig(temperature=0.1, projection_output_dim=128, projection_num_layers=2)
    assert isinstance(method.make_transform(32), ssl_hub.transforms.SimCLRTransform)
    torch.manual_seed(0)
    views = [torch.randn(4, 3, 32, 32) for _ in range(2)]
    method.eval()  # fixed batch-norm statistics: the same embeddings in both computations
    with torch.no_grad():
        z0 = method.projection_head(method.backbone(views[0])).double()
        z1 = method.projection_head(method.backbone(views[1])).double()
        loss = method(views=views).loss
    assert loss.item() == pytest.approx(dcl_reference(z0, z1, 0.1), rel=1e-4)


@pytest.mark.parametrize("name", ["simclr", "dcl", "dclw"])
def test_views_in_one_pass_chooses_whose_batch_norm_statistics_each_view_sees(name: str) -> None:
    torch.manual_seed(0)
    together = ssl_hub.create_method(name, backbone="test_resnet", views_in_one_pass=True)
    apart = ssl_hub.create_method(name, backbone="test_resnet", views_in_one_pass=False)
    apart.load_state_dict(together.state_dict())
    views = [torch.randn(4, 3, 32, 32), 2.0 * torch.randn(4, 3, 32, 32) + 1.0]  # views with different statistics

    def embed(images: torch.Tensor) -> torch.Tensor:
        return together.projection_head(together.backbone(images))

    with torch.no_grad():  # train mode: batch-norm statistics of the batch each forward sees
        one_pass = together.criterion(*embed(torch.cat(views)).chunk(2))
        per_view = together.criterion(embed(views[0]), embed(views[1]))
        assert together(views=views).loss.item() == pytest.approx(one_pass.item(), rel=1e-5)
        assert apart(views=views).loss.item() == pytest.approx(per_view.item(), rel=1e-5)
        assert abs(one_pass.item() - per_view.item()) > 1e-3
        apart.load_state_dict(together.state_dict())  # the same running statistics, which the two passes use
        together.eval(), apart.eval()  # in evaluation mode: then they agree
        assert apart(views=views).loss.item() == pytest.approx(together(views=views).loss.item(), rel=1e-5)
    # The defaults: one pass (SimCLR's implementation) but for DCLW, which measured better per view (RESULTS.md).
    assert type(together.config)().views_in_one_pass is (name != "dclw")
