"""MoCo under multi-process training, in 2 gloo processes (spawned): v2's queue stays identical on every rank and
holds exactly the keys of the global batches; v3's InfoNCE over gathered keys equals the global batch's loss."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

import ssl_hub
from ssl_hub.losses import InfoNCELoss
from ssl_hub.modules import update_momentum

WORLD_SIZE = 2
BATCH_SIZE = 4  # per rank: 8 keys a step
QUEUE_SIZE = 20  # not a multiple of 8: writes wrap around mid-batch
STEPS = 5
TRAIN_MODE_STEPS = 2  # then eval mode, where a key does not depend on the other images of its batch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _moco_v2_steps(rank: int) -> dict[str, Any]:
    torch.manual_seed(0)  # the same initial weights and queue on every rank
    method = ssl_hub.create_method(
        "moco", backbone="test_resnet", memory_bank_size=QUEUE_SIZE, projection_hidden_dim=32, projection_output_dim=8
    )
    model = DistributedDataParallel(method)  # as the Trainer wraps it (buffers broadcast from rank 0 each forward)
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.05)
    (ema,) = method.callbacks()
    bank = method.criterion.memory_bank
    generator = torch.Generator().manual_seed(100 + rank)  # each rank its own images
    queues, keys = [], []
    for step in range(STEPS):
        method.train(step < TRAIN_MODE_STEPS)  # train mode: shuffling BN across the ranks at work
        views = [torch.randn(BATCH_SIZE, 3, 32, 32, generator=generator) for _ in range(2)]
        loss = model(views=views).loss
        with torch.no_grad():  # this rank's keys, computed here on its own images (the forward shuffled them)
            own_keys = method.teacher_projection_head(method.teacher_backbone(views[1]))
        keys.append(F.normalize(own_keys, dim=1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        for student, teacher in ema.pairs:
            update_momentum(student, teacher, ema.momentum(step, STEPS))
        queues.append((bank.memory.clone(), int(bank.pointer)))
    return {"queues": queues, "keys": keys}


def _info_nce_slices(rank: int) -> dict[str, torch.Tensor]:
    anchors, candidates = global_batch()
    local = slice(rank * 3, rank * 3 + 3)
    local_anchors = anchors[local].clone().requires_grad_(True)
    local_candidates = candidates[local].clone().requires_grad_(True)
    loss = InfoNCELoss(temperature=0.2, gather_distributed=True)(local_anchors, local_candidates)
    loss.backward()
    return {"loss": loss.detach(), "anchors": local_anchors.grad, "candidates": local_candidates.grad}


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return (
        torch.randn(6, 5, generator=generator, dtype=torch.float64),
        torch.randn(6, 5, generator=generator, dtype=torch.float64),
    )


def _worker(rank: int, port: int, output: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        torch.save({"moco": _moco_v2_steps(rank), "info_nce": _info_nce_slices(rank)}, f"{output}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    folder: Path = tmp_path_factory.mktemp("moco_distributed")
    mp.spawn(_worker, args=(free_port(), str(folder)), nprocs=WORLD_SIZE, join=True)
    return [torch.load(folder / f"rank{r}.pt") for r in range(WORLD_SIZE)]


@pytest.mark.timeout(300)
def test_every_rank_holds_the_same_queue_after_every_step(results: list[dict[str, Any]]) -> None:
    for step in range(STEPS):
        (memory0, pointer0), (memory1, pointer1) = (r["moco"]["queues"][step] for r in results)
        assert torch.equal(memory0, memory1), f"step {step}"
        assert pointer0 == pointer1 == (step + 1) * BATCH_SIZE * WORLD_SIZE % QUEUE_SIZE


@pytest.mark.timeout(300)
def test_queue_holds_exactly_the_keys_of_the_global_batches_in_rank_order(results: list[dict[str, Any]]) -> None:
    # From the queue after the train-mode steps, write the eval-mode steps' keys ourselves: rank 0's, then rank 1's.
    queue, pointer = results[0]["moco"]["queues"][TRAIN_MODE_STEPS - 1]
    queue = queue.clone()
    for step in range(TRAIN_MODE_STEPS, STEPS):
        for key in torch.cat([r["moco"]["keys"][step] for r in results]):
            queue[pointer] = key
            pointer = (pointer + 1) % QUEUE_SIZE
        # Shuffling BN computed each key on another rank's share; eval mode makes it equal to the local one.
        torch.testing.assert_close(results[0]["moco"]["queues"][step][0], queue, rtol=0, atol=1e-6)
    assert (STEPS - TRAIN_MODE_STEPS) * BATCH_SIZE * WORLD_SIZE > QUEUE_SIZE, "every slot was rewritten"


@pytest.mark.timeout(300)
def test_gathered_info_nce_equals_the_global_batch_loss_and_gradient(results: list[dict[str, Any]]) -> None:
    anchors, candidates = global_batch()
    anchors.requires_grad_(True)
    candidates.requires_grad_(True)
    full_loss = InfoNCELoss(temperature=0.2)(anchors, candidates)
    full_loss.backward()
    parts = [r["info_nce"] for r in results]
    # DDP averages the ranks' losses and gradients: the mean is the global batch's loss, and each rank's gradient
    # of its own slice divided by the world size is the global batch's gradient of that slice.
    assert torch.stack([p["loss"] for p in parts]).mean().item() == pytest.approx(full_loss.item(), rel=1e-12)
    for rank, part in enumerate(parts):
        local = slice(rank * 3, rank * 3 + 3)
        torch.testing.assert_close(part["anchors"] / WORLD_SIZE, anchors.grad[local])
        torch.testing.assert_close(part["candidates"] / WORLD_SIZE, candidates.grad[local])
