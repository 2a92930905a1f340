"""DCL, DCLW, Barlow Twins, VICReg, VICRegL, TiCo, MMCR and LeJEPA with ``gather_distributed`` on 2 gloo processes
equal the loss of the global batch in one process.

All losses run in one spawn (each spawned process imports ssl_hub, which dominates the cost). On every rank a loss
sees its half of a batch; the mean of the ranks' losses must be the single-process loss of the whole batch, and each
rank's gradient, averaged over the ranks as DDP does, the single-process gradient of that rank's half. Halves have
different statistics, so per-rank batch statistics (standardisation, variance, covariance, the DCLW weights' mean)
would fail the check.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from ssl_hub.losses import (
    BarlowTwinsLoss,
    DCLLoss,
    DCLWLoss,
    LeJEPALoss,
    MMCRLoss,
    TiCoLoss,
    VICRegLLoss,
    VICRegLoss,
)

WORLD_SIZE = 2
Batch = tuple[torch.Tensor, torch.Tensor]


def batches(steps: int, batch_size: int = 8, dim: int = 5, seed: int = 0) -> list[Batch]:
    """``steps`` float64 batches whose second half is shifted and scaled: the halves' statistics differ."""
    generator = torch.Generator().manual_seed(seed)
    result = []
    for _ in range(steps):
        z_a = torch.randn(batch_size, dim, generator=generator, dtype=torch.float64)
        z_a[batch_size // 2 :] = 2.5 * z_a[batch_size // 2 :] + 1.0
        result.append((z_a, z_a + 0.5 * torch.randn(batch_size, dim, generator=generator, dtype=torch.float64)))
    return result


class TwoViewMMCR(nn.Module):
    """MMCRLoss of the two batches as two views of each image."""

    def __init__(self, gather_distributed: bool) -> None:
        super().__init__()
        self.loss = MMCRLoss(lmda=0.3, gather_distributed=gather_distributed)

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        return self.loss(torch.stack([z_a, z_b], dim=1))  # (B, 2, D)


class TwoViewVICRegL(nn.Module):
    """VICRegLLoss of the two batches as two global views, each with a 1 x 3 map made from its embedding: the
    matches by embedding and by position (fixed positions, shifted between the views) pair different locations."""

    def __init__(self, gather_distributed: bool) -> None:
        super().__init__()
        self.loss = VICRegLLoss(
            lambda_param=3.0,
            mu_param=2.0,
            nu_param=0.5,
            alpha=0.6,
            num_matches=(2, 1),
            gather_distributed=gather_distributed,
        )

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        features = [
            (z, torch.stack([z, z.roll(1, dims=1), z**2], dim=1).unsqueeze(1)) for z in (z_a, z_b)
        ]  # (B, 1, 3, D)
        positions = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 2.0]], dtype=z_a.dtype)  # (3, 2)
        grids = [(positions + shift).expand(z_a.shape[0], 1, 3, 2) for shift in (0.0, 0.6)]
        return self.loss(features, grids)


class TwoViewLeJEPA(nn.Module):
    """LeJEPALoss of the two batches as the global views and their squares as a local view; SIGReg's directions
    drawn from one seed on every rank."""

    def __init__(self, gather_distributed: bool) -> None:
        super().__init__()
        self.loss = LeJEPALoss(lambda_param=0.3, sigreg_num_vectors=4, gather_distributed=gather_distributed, seed=5)

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        return self.loss(global_proj=torch.stack([z_a, z_b]), local_proj=(z_a * z_b).unsqueeze(0))


# name -> (loss factory, batches); TiCo runs 3 steps so that its running covariance carries over.
CASES: dict[str, tuple[Callable[[bool], nn.Module], list[Batch]]] = {
    "dcl": (lambda gather: DCLLoss(temperature=0.3, gather_distributed=gather), batches(1, seed=1)),
    "dclw": (lambda gather: DCLWLoss(temperature=0.3, sigma=0.4, gather_distributed=gather), batches(1, seed=2)),
    "barlowtwins": (lambda gather: BarlowTwinsLoss(lambda_param=0.05, gather_distributed=gather), batches(1, seed=3)),
    "vicreg": (
        lambda gather: VICRegLoss(lambda_param=3.0, mu_param=2.0, nu_param=0.5, gather_distributed=gather),
        batches(1, seed=4),
    ),
    "tico": (lambda gather: TiCoLoss(beta=0.8, rho=4.0, gather_distributed=gather), batches(3, seed=5)),
    "mmcr": (TwoViewMMCR, batches(1, seed=6)),
    "vicregl": (TwoViewVICRegL, batches(1, seed=7)),
    "lejepa": (TwoViewLeJEPA, batches(2, seed=8)),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def local_slice(rank: int, batch_size: int) -> slice:
    size = batch_size // WORLD_SIZE
    return slice(rank * size, (rank + 1) * size)


def run(criterion: nn.Module, steps: list[Batch], rank: int | None) -> dict[str, Any]:
    """Losses and gradients of ``criterion`` over ``steps``: on this rank's half, or (``rank=None``) on all of it."""
    results = []
    for z_a, z_b in steps:
        part = slice(None) if rank is None else local_slice(rank, z_a.shape[0])
        a, b = z_a[part].clone().requires_grad_(True), z_b[part].clone().requires_grad_(True)
        loss = criterion(a, b)
        loss.backward()
        results.append({"loss": loss.detach(), "grad_a": a.grad, "grad_b": b.grad})
    return {"steps": results, "state": criterion.state_dict()}


def _worker(rank: int, port: int, output: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        results = {name: run(factory(True), steps, rank) for name, (factory, steps) in CASES.items()}
        torch.save(results, f"{output}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    output = tmp_path_factory.mktemp("gloo")
    mp.spawn(_worker, args=(free_port(), str(output)), nprocs=WORLD_SIZE, join=True)
    return [torch.load(Path(output) / f"rank{r}.pt") for r in range(WORLD_SIZE)]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", list(CASES))
def test_gathered_loss_and_gradient_are_those_of_the_global_batch(name: str, ranks: list[dict[str, Any]]) -> None:
    factory, steps = CASES[name]
    single = run(factory(False), steps, rank=None)
    for step, expected in enumerate(single["steps"]):
        results = [rank[name]["steps"][step] for rank in ranks]
        mean_loss = torch.stack([r["loss"] for r in results]).mean()
        torch.testing.assert_close(mean_loss, expected["loss"], rtol=1e-12, atol=1e-12, msg=f"loss, step {step}")
        for rank, result in enumerate(results):
            local = local_slice(rank, steps[step][0].shape[0])
            for key in ("grad_a", "grad_b"):
                torch.testing.assert_close(
                    result[key] / WORLD_SIZE, expected[key][local], rtol=1e-10, atol=1e-12, msg=f"{key}, step {step}"
                )
    for rank in ranks:  # buffers (TiCo's covariance matrix) are the single-process ones on every rank
        for key, value in single["state"].items():
            torch.testing.assert_close(rank[name]["state"][key], value, rtol=1e-12, atol=1e-12, msg=key)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["barlowtwins", "tico", "mmcr"])
def test_every_rank_holds_the_global_loss(name: str, ranks: list[dict[str, Any]]) -> None:
    # Barlow Twins', TiCo's and MMCR's losses are statistics of the whole batch: each rank computes all of it.
    factory, steps = CASES[name]
    single = run(factory(False), steps, rank=None)
    for step, expected in enumerate(single["steps"]):
        for rank in ranks:
            torch.testing.assert_close(rank[name]["steps"][step]["loss"], expected["loss"], rtol=1e-12, atol=1e-12)
