"""Losses that gather across ranks, run in 2 gloo processes (spawned: forking after torch started deadlocks)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ssl_hub.losses import NTXentLoss

WORLD_SIZE = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def full_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.randn(6, 5, generator=generator, dtype=torch.float64),
        torch.randn(6, 5, generator=generator, dtype=torch.float64),
    )


def _ntxent_worker(rank: int, port: int, output: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        out0, out1 = full_batch()
        local = slice(rank * 3, rank * 3 + 3)
        local0 = out0[local].clone().requires_grad_(True)
        local1 = out1[local].clone().requires_grad_(True)
        loss = NTXentLoss(temperature=0.3, gather_distributed=True)(local0, local1)
        loss.backward()
        torch.save({"loss": loss.detach(), "grad0": local0.grad, "grad1": local1.grad}, f"{output}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_gathered_ntxent_equals_the_global_batch_loss_and_gradient(tmp_path: Path) -> None:
    mp.spawn(_ntxent_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD_SIZE)]

    out0, out1 = full_batch()
    out0.requires_grad_(True)
    out1.requires_grad_(True)
    full_loss = NTXentLoss(temperature=0.3)(out0, out1)
    full_loss.backward()

    # DDP averages the ranks' losses: their mean is the loss of the global batch ...
    assert torch.stack([r["loss"] for r in results]).mean().item() == pytest.approx(full_loss.item(), rel=1e-12)
    # ... and each rank's gradient, averaged by DDP over W ranks, is the global batch's gradient of its slice.
    for rank, result in enumerate(results):
        local = slice(rank * 3, rank * 3 + 3)
        torch.testing.assert_close(result["grad0"] / WORLD_SIZE, out0.grad[local])
        torch.testing.assert_close(result["grad1"] / WORLD_SIZE, out1.grad[local])
