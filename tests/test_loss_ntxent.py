"""NTXentLoss against SimCLR's / MoCo's formulas computed independently, in float64."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_hub.losses import NTXentLoss


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def simclr_reference(out0: torch.Tensor, out1: torch.Tensor, temperature: float) -> float:
    """SimCLR eq. (1): l(i, j) = -log exp(s_ij / t) / sum_{k != i} exp(s_ik / t), averaged over all 2N anchors."""
    z = list(out0) + list(out1)
    n = len(out0)
    total = 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        numerator = math.exp(cosine(z[i], z[positive]) / temperature)
        denominator = sum(math.exp(cosine(z[i], z[k]) / temperature) for k in range(2 * n) if k != i)
        total += -math.log(numerator / denominator)
    return total / (2 * n)


def moco_reference(out0: torch.Tensor, out1: torch.Tensor, bank: list[torch.Tensor], temperature: float) -> float:
    """MoCo eq. (1): -log exp(q.k+ / t) / (exp(q.k+ / t) + sum_negatives exp(q.k- / t)), averaged over queries."""
    total = 0.0
    for query, key in zip(out0, out1, strict=True):
        positive = math.exp(cosine(query, key) / temperature)
        negatives = sum(math.exp(cosine(query, negative) / temperature) for negative in bank)
        total += -math.log(positive / (positive + negatives))
    return total / len(out0)


@pytest.mark.parametrize("batch_size", [1, 3, 8])
@pytest.mark.parametrize("temperature", [0.07, 0.5, 1.3])
def test_in_batch_loss_matches_simclr_formula(batch_size: int, temperature: float) -> None:
    generator = torch.Generator().manual_seed(batch_size)
    out0 = torch.randn(batch_size, 5, generator=generator, dtype=torch.float64)
    out1 = torch.randn(batch_size, 5, generator=generator, dtype=torch.float64)
    loss = NTXentLoss(temperature=temperature)(out0, out1)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(simclr_reference(out0, out1, temperature), rel=1e-10)


def test_gather_distributed_is_a_no_op_in_one_process() -> None:
    out0, out1 = torch.randn(2, 6, 4, dtype=torch.float64)
    expected = NTXentLoss(temperature=0.2)(out0, out1)
    assert NTXentLoss(temperature=0.2, gather_distributed=True)(out0, out1).item() == pytest.approx(expected.item())


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_memory_bank_loss_matches_moco_formula_across_wrap_around(temperature: float) -> None:
    size, dim, batch_size = 5, 4, 3
    criterion = NTXentLoss(temperature=temperature, memory_bank_size=(size, dim)).double()
    memory = criterion.memory_bank.memory
    memory.copy_(memory / memory.norm(dim=1, keepdim=True))  # the float32 random init, unit-norm in float64
    bank = list(memory.clone())  # our own FIFO model, starting from the random init
    pointer = 0
    generator = torch.Generator().manual_seed(1)
    for step in range(4):  # 12 writes into 5 slots: the bank wraps around twice
        out0 = torch.randn(batch_size, dim, generator=generator, dtype=torch.float64)
        out1 = torch.randn(batch_size, dim, generator=generator, dtype=torch.float64)
        expected = moco_reference(out0, out1, bank, temperature)  # negatives: the bank before out1 is written
        assert criterion(out0, out1).item() == pytest.approx(expected, rel=1e-10), f"step {step}"
        for row in out1:
            bank[pointer % size] = row / row.norm()
            pointer += 1
        assert torch.allclose(criterion.memory_bank.memory, torch.stack(bank)), f"bank after step {step}"
        assert int(criterion.memory_bank.pointer) == pointer % size


def test_lazy_memory_bank_takes_the_embedding_width() -> None:
    criterion = NTXentLoss(memory_bank_size=16)
    criterion(torch.randn(4, 7), torch.randn(4, 7))
    assert criterion.memory_bank.memory.shape == (16, 7)


@pytest.mark.parametrize("temperature", [0.0, -0.5, float("nan")])
def test_bad_temperature_is_refused_naming_the_argument(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(temperature=temperature)


def test_mismatched_batches_are_refused() -> None:
    with pytest.raises(ValueError, match="one shape"):
        NTXentLoss()(torch.randn(4, 8), torch.randn(3, 8))
