"""Losses that gather across ranks, run in 2 gloo processes (spawned: forking after torch started deadlocks)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from transformers import TrainerControl, TrainerState, TrainingArguments

from ssl_hub.losses import NTXentLoss
from ssl_hub.methods import SSLMethodOutput
from ssl_hub.training import MethodMetricsCallback

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


class _Emitter(torch.nn.Module):
    """A module whose forward returns the metrics it is given, as a method's forward returns its loss terms."""

    def forward(self, metrics: dict[str, torch.Tensor]) -> SSLMethodOutput:
        return SSLMethodOutput(loss=torch.zeros(()), metrics=metrics)


class _LoggingTrainer:
    def __init__(self) -> None:
        self.control = TrainerControl(should_log=True)
        self.logged: list[dict[str, float]] = []

    def log(self, logs: dict[str, float]) -> None:
        self.logged.append(logs)
        self.control.should_log = False  # as CallbackHandler.on_log does


def _metrics_worker(rank: int, port: int, output: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        trainer = _LoggingTrainer()
        callback = MethodMetricsCallback().attach(trainer)
        module = _Emitter()
        callback.on_train_begin(TrainingArguments("out"), TrainerState(), trainer.control, model=module)
        for micro_batch in range(2):  # two micro-batches of one optimizer step, different on each rank
            module({"a": torch.tensor(float(10 * rank + micro_batch)), "b": torch.tensor(float(rank))})
        callback.on_step_end(TrainingArguments("out"), TrainerState(), trainer.control)
        torch.save({"logged": trainer.logged, "should_log": trainer.control.should_log}, f"{output}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_logged_method_metrics_are_the_mean_over_micro_batches_and_ranks(tmp_path: Path) -> None:
    mp.spawn(_metrics_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    for rank in range(WORLD_SIZE):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        # a: (0 + 1 + 10 + 11) / 4, b: (0 + 0 + 1 + 1) / 4, on every rank
        assert result["logged"] == [{"a": pytest.approx(5.5), "b": pytest.approx(0.5)}]
        assert result["should_log"], "the Trainer's own log of the step must not be cancelled"
