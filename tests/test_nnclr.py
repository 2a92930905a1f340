"""NNCLR: the nearest-neighbour support set, the loss against the paper's formula (across support-set wrap-around),
heads and defaults, saved state, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from teacher_state_checks import check_save_and_load

import ssl_hub
from ssl_hub.heads import NNCLRPredictionHead, NNCLRProjectionHead
from ssl_hub.methods import NNCLR, NNCLRConfig
from ssl_hub.modules import MemoryBankModule, NNMemoryBankModule
from ssl_hub.transforms import SimCLRTransform

SMALL = {"projection_hidden_dim": 32, "projection_output_dim": 8, "prediction_hidden_dim": 16}


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(u * v for u, v in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(u * u for u in a)) * math.sqrt(sum(v * v for v in b)))


def nearest_neighbour(z: list[float], support: list[list[float]]) -> list[float]:
    """NN(z, Q) = argmin_q || z/|z| - q/|q| ||, i.e. the row of highest cosine similarity."""
    return max(support, key=lambda q: cosine(z, q))


def nnclr_reference(neighbours: list[list[float]], predictions: list[list[float]], temperature: float) -> float:
    """NNCLR's loss: -log exp(NN(z_i, Q) . p+_i / t) / sum_k exp(NN(z_i, Q) . p+_k / t), mean over i."""
    total = 0.0
    for i, anchor in enumerate(neighbours):
        logits = [cosine(anchor, p) / temperature for p in predictions]
        total += -(logits[i] - math.log(sum(math.exp(x) for x in logits)))
    return total / len(neighbours)


def test_support_set_returns_each_rows_nearest_stored_neighbour_read_before_the_write() -> None:
    bank = NNMemoryBankModule(size=6, dim=3).double()
    stored = bank.memory.tolist()
    queries = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64, requires_grad=True)
    neighbours = bank(queries, update=True)
    assert neighbours.tolist() == [nearest_neighbour(q, stored) for q in queries.tolist()], "rows as stored"
    assert not neighbours.requires_grad
    assert bank.memory[:4].tolist() == queries.tolist()
    assert int(bank.pointer) == 4
    assert isinstance(bank, MemoryBankModule)


def test_support_set_finds_an_exact_match_and_is_scale_invariant() -> None:
    bank = NNMemoryBankModule(size=5, dim=4)
    bank.enqueue(torch.eye(4)[:3] * torch.tensor([[2.0], [3.0], [0.5]]))
    neighbours = bank(torch.tensor([[0.0, 9.0, 0.1, 0.0], [0.0, 0.0, 1.0, 0.0]]))
    torch.testing.assert_close(neighbours, torch.tensor([[0.0, 3.0, 0.0, 0.0], [0.0, 0.0, 0.5, 0.0]]))


def test_support_set_allocates_itself_at_the_first_call_when_no_dim_is_given() -> None:
    bank = NNMemoryBankModule(size=16)
    assert bank(torch.randn(4, 7)).shape == (4, 7)
    assert bank.memory.shape == (16, 7)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_loss_is_the_papers_eq_2_symmetrised_and_the_support_set_is_fifo_across_wrap_around(
    temperature: float,
) -> None:
    torch.manual_seed(0)
    size, batch_size = 10, 4
    method = ssl_hub.create_method(
        "nnclr", backbone="test_resnet", **SMALL, memory_bank_size=size, temperature=temperature
    ).double()
    support = method.memory_bank.memory.tolist()  # our own FIFO model, from the random init
    pointer = 0
    for step in range(4):  # 16 embeddings into 10 slots: the support set wraps around
        generator = torch.Generator().manual_seed(step)
        views = [torch.randn(batch_size, 3, 32, 32, generator=generator, dtype=torch.float64) for _ in range(2)]
        with torch.no_grad():
            z0, z1 = (method.projection_head(method.backbone(v)) for v in views)
            p0, p1 = method.prediction_head(z0).tolist(), method.prediction_head(z1).tolist()
            loss = method(views=views).loss
        nn0 = [nearest_neighbour(z, support) for z in z0.tolist()]
        nn1 = [nearest_neighbour(z, support) for z in z1.tolist()]
        expected = 0.5 * (nnclr_reference(nn0, p1, temperature) + nnclr_reference(nn1, p0, temperature))
        assert loss.item() == pytest.approx(expected, rel=1e-10), step
        for z in z0.tolist():  # the first view's projections join the support set
            support[pointer % size] = z
            pointer += 1
        torch.testing.assert_close(method.memory_bank.memory, torch.tensor(support, dtype=torch.float64))
        assert int(method.memory_bank.pointer) == pointer % size


def test_loss_on_a_vit() -> None:
    torch.manual_seed(0)
    method = ssl_hub.create_method("nnclr", backbone="test_vit", **SMALL, memory_bank_size=12).double()
    support = method.memory_bank.memory.tolist()
    views = [torch.randn(4, 3, 32, 32, dtype=torch.float64) for _ in range(2)]
    with torch.no_grad():
        z0, z1 = (method.projection_head(method.backbone(v)) for v in views)
        p0, p1 = method.prediction_head(z0).tolist(), method.prediction_head(z1).tolist()
        loss = method(views=views).loss
    nn0 = [nearest_neighbour(z, support) for z in z0.tolist()]
    nn1 = [nearest_neighbour(z, support) for z in z1.tolist()]
    expected = 0.5 * (nnclr_reference(nn0, p1, 0.1) + nnclr_reference(nn1, p0, 0.1))
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_gradient_flows_through_the_predictions_not_the_support_set() -> None:
    method = ssl_hub.create_method("nnclr", backbone="test_resnet", **SMALL, memory_bank_size=16)
    method(views=[torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]).loss.backward()
    trained = [method.backbone, method.projection_head, method.prediction_head]
    assert all(p.grad is not None for module in trained for p in module.parameters())
    assert not method.memory_bank.memory.requires_grad
    assert method.callbacks() == []


def test_defaults_and_heads_are_the_papers() -> None:
    config = NNCLRConfig()
    assert (config.temperature, config.memory_bank_size) == (0.1, 98304)
    assert (config.projection_hidden_dim, config.projection_output_dim, config.prediction_hidden_dim) == (
        2048,
        256,
        4096,
    )
    assert NNCLR.transform_class is SimCLRTransform
    projector = NNCLRProjectionHead(64)
    assert [type(m).__name__ for m in projector.layers] == [
        *["Linear", "BatchNorm1d", "ReLU"] * 2,
        "Linear",
        "BatchNorm1d",
    ]
    predictor = NNCLRPredictionHead()
    assert [type(m).__name__ for m in predictor.layers] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert (predictor.layers[0].in_features, predictor.layers[0].out_features) == (256, 4096)
    method = ssl_hub.create_method("nnclr", backbone="test_resnet", memory_bank_size=64)
    assert method.memory_bank.memory.shape == (64, 256)
    assert "memory_bank.memory" in method.state_dict()


def test_save_and_load_restore_the_support_set(tmp_path: Path) -> None:
    method = ssl_hub.create_method("nnclr", backbone="test_resnet", **SMALL, memory_bank_size=64)
    check_save_and_load(method, tmp_path, ["memory_bank.", "prediction_head."])
    assert int(method.memory_bank.pointer) == 16, "2 steps of 8 embeddings were written"


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("temperature", 0.0),
        ("temperature", -1.0),
        ("memory_bank_size", 0),
        ("memory_bank_size", -5),
        ("projection_hidden_dim", 0),
        ("projection_output_dim", 1.5),
        ("prediction_hidden_dim", -1),
    ],
)
def test_bad_hyperparameters_fail_at_construction_naming_the_argument(argument: str, value: float) -> None:
    with pytest.raises(ValueError, match=argument):
        ssl_hub.create_method("nnclr", backbone="test_resnet", **{argument: value})


def test_a_support_set_smaller_than_the_batch_fails_at_the_first_forward_naming_both() -> None:
    method = ssl_hub.create_method("nnclr", backbone="test_resnet", **SMALL, memory_bank_size=5)
    with pytest.raises(ValueError, match=r"memory_bank_size \(5\).*= 6\)"):
        method(views=[torch.randn(6, 3, 32, 32), torch.randn(6, 3, 32, 32)])
    assert int(method.memory_bank.pointer) == 0, "nothing was written"
