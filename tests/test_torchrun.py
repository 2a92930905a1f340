"""Pretraining and evaluation under several processes: ``ssl-hub pretrain`` under torchrun on 2 CPU processes is one
DDP run, and the evaluation the ranks share gives what one process computes alone (workers spawned with gloo)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import ssl_hub
from ssl_hub.cli import main
from ssl_hub.data.resolve import resolve_data
from ssl_hub.eval import evaluate_backbone, evaluate_knn
from ssl_hub.eval.knn import knn_predict
from ssl_hub.training import PretrainingArguments

WORLD_SIZE = 2
DATA_CONFIG = {"input_size": (3, 32, 32), "interpolation": "bicubic", "mean": (0.5,) * 3, "std": (0.5,) * 3}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def before_and_after(output: str) -> list[tuple[str, str]]:
    return re.findall(r"kNN top-1: ([\d.]+) % \(before pretraining: ([\d.]+) %\)", output)


@pytest.mark.timeout(300)
def test_pretrain_under_torchrun_on_cpus_is_one_ddp_run_starting_from_the_seeded_weights(tmp_path: Path) -> None:
    flags = ["--method", "simclr", "--backbone", "test_resnet", "--max_steps", "2", "--per_device_train_batch_size",
             "16", "--disable_tqdm", "true", "--seed", "3"]  # fmt: skip
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD_SIZE)]
    monitor = ["--knn_every_n_steps", "1"]  # the kNN monitor's evaluations are shared too
    run = subprocess.run(
        [*launch, "-m", "ssl_hub.cli", "pretrain", *flags, *monitor, "--output-dir", str(tmp_path / "ddp")],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=280,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    training = json.loads((tmp_path / "ddp" / "config.json").read_text())["ssl_hub"]["training"]
    assert (training["world_size"], training["global_batch_size"]) == (WORLD_SIZE, WORLD_SIZE * 16)
    assert [step for step, _ in training["knn_history"]] == [1, 2]

    (logged,) = before_and_after(run.stdout + run.stderr)  # the main process logs
    # The ranks shared the evaluation; its untrained value is one process's on the same seed: the ranks started from
    # --seed's weights, which a process alone draws too.
    assert main(["pretrain", *flags, "--output-dir", str(tmp_path / "one"), "--max_steps", "1"]) == 0
    alone = json.loads((tmp_path / "one" / "config.json").read_text())["ssl_hub"]["evaluation"][0]
    assert float(logged[1]) == pytest.approx(alone["untrained_value"], abs=0.005)


def test_a_launch_of_several_processes_that_the_trainer_runs_one_by_one_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun's, without LOCAL_RANK: accelerate makes each process a run
    method = ssl_hub.create_method("simclr", backbone="test_resnet")
    args = PretrainingArguments(str(tmp_path / "out"), use_cpu=False, max_steps=1)
    with pytest.raises(ValueError, match=r"2 processes were launched .* --use_cpu true"):
        ssl_hub.pretrain(method, training_args=args)
    assert not (tmp_path / "out").exists()


class _Pixels(nn.Module):
    """A fixed backbone: the image's mean colour per 8 x 8 cell, (B, 48) features."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # a parameter, for the device

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool2d(images, 8).flatten(1) + self.anchor


def _sharded_evaluation_worker(rank: int, port: int, output: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        query, bank, labels = _features()
        predicted = knn_predict(query, bank[rank::WORLD_SIZE], labels[rank::WORLD_SIZE], 4, k=9, across_ranks=True)
        accuracies = evaluate_backbone(
            _Pixels(), resolve_data(None), DATA_CONFIG, linear=True, linear_epochs=3, batch_size=64, across_ranks=True
        )
        image = torch.zeros(3, 32, 32, dtype=torch.uint8)  # one of three bank images unlabelled: on rank 0's share
        try:
            evaluate_knn(
                _Pixels(), [(image, 0), (image, 1), (image, -1)], [(image, 1)] * 2, DATA_CONFIG, across_ranks=True
            )
            refusal = ""
        except ValueError as error:
            refusal = str(error)
        torch.save({"predicted": predicted, "accuracies": accuracies, "refusal": refusal}, f"{output}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _features() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    bank = torch.randn(13, 5, generator=generator)  # 7 and 6 on the two ranks: fewer than k on each
    labels = torch.randint(0, 4, (13,), generator=generator)
    return torch.randn(20, 5, generator=generator), bank, labels


@pytest.mark.timeout(300)
def test_evaluation_shared_among_ranks_equals_one_process_alone(tmp_path: Path) -> None:
    mp.spawn(_sharded_evaluation_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    results = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]

    query, bank, labels = _features()
    alone = knn_predict(query, bank, labels, 4, k=9)
    assert len(set(alone.tolist())) > 1
    for result in results:
        assert torch.equal(result["predicted"], alone)
    expected = evaluate_backbone(_Pixels(), resolve_data(None), DATA_CONFIG, linear=True, linear_epochs=3)
    assert [result["accuracies"] for result in results] == [expected] * WORLD_SIZE
    # a partly unlabelled split is refused by every rank, each counting the images of all shares
    assert [result["refusal"] for result in results] == [results[0]["refusal"]] * WORLD_SIZE
    assert "the evaluation data has 1 without one" in results[0]["refusal"]
