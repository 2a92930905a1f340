"""SwaV: Sinkhorn-Knopp and the swapped-prediction loss against the paper's formulas (float64 loops), prototypes
frozen then normalised during a real Trainer run, the queue, multi-crop training, the hub round trip, and the codes
of the global batch across 2 processes."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import normalized_entropy_reference
from multi_crop_checks import ViewSizes, assert_hub_round_trip, fixed_views, train
from test_distributed import WORLD_SIZE, free_port
from torch.nn import functional as F
from transformers import TrainerCallback

from ssl_hub.heads import SwaVPrototypes
from ssl_hub.losses import SwaVLoss, sinkhorn
from ssl_hub.methods import SwaV

SMALL = {"projection_hidden_dim": 16, "projection_output_dim": 8, "n_prototypes": 10}


def sinkhorn_reference(scores: list[list[float]], iterations: int, epsilon: float) -> list[list[float]]:
    """Sec. 3.1 and the official distributed_sinkhorn: Q = exp(C^T Z / eps) (K x B) normalised to sum 1, then
    alternately rows to 1/K and columns to 1/B; the codes are B Q, returned per sample (B x K)."""
    n, k = len(scores), len(scores[0])
    q = [[math.exp(scores[b][p] / epsilon) for b in range(n)] for p in range(k)]
    total = sum(sum(row) for row in q)
    q = [[x / total for x in row] for row in q]
    for _ in range(iterations):
        q = [[x / (sum(row) * k) for x in row] for row in q]
        columns = [sum(q[p][b] for p in range(k)) for b in range(n)]
        q = [[q[p][b] / (columns[b] * n) for b in range(n)] for p in range(k)]
    return [[q[p][b] * n for p in range(k)] for b in range(n)]


def swav_reference(
    crops: list[torch.Tensor], n_high: int, temperature: float, iterations: int, epsilon: float
) -> float:
    """Eq. of sec. 3.1 with multi-crop (sec. 3.2): for each high-resolution crop i, codes q_i from Sinkhorn; each other
    crop v predicts them with p_v = softmax(z_v / temperature); loss = mean_i sum_{v != i} l(z_v, q_i) / (V - 1)."""
    total = 0.0
    for i in range(n_high):
        codes = sinkhorn_reference(crops[i].tolist(), iterations, epsilon)
        subloss = 0.0
        for v, z in enumerate(crops):
            if v == i:
                continue
            for b, row in enumerate(z.tolist()):
                logits = [x / temperature for x in row]
                top = max(logits)
                log_norm = top + math.log(sum(math.exp(x - top) for x in logits))
                subloss += -sum(codes[b][p] * (logits[p] - log_norm) for p in range(len(row))) / len(z)
        total += subloss / (len(crops) - 1)
    return total / n_high


def scores(crops: int, batch: int = 4, prototypes: int = 6, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(batch, prototypes, generator=generator, dtype=torch.float64) * 2 - 1 for _ in range(crops)]


@pytest.mark.parametrize(("iterations", "epsilon"), [(3, 0.05), (1, 0.5), (200, 0.3)])
def test_sinkhorn_matches_the_reference_and_equipartitions(iterations: int, epsilon: float) -> None:
    out = scores(1, batch=5, prototypes=4)[0]
    codes = sinkhorn(out, iterations=iterations, epsilon=epsilon)
    expected = sinkhorn_reference(out.tolist(), iterations, epsilon)
    torch.testing.assert_close(codes, torch.tensor(expected, dtype=torch.float64), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(5, dtype=torch.float64))  # each sample's code sums to 1
    if iterations == 200:  # converged: every prototype gets B / K of the samples
        torch.testing.assert_close(codes.sum(dim=0), torch.full((4,), 5 / 4, dtype=torch.float64), rtol=1e-3, atol=0)


def test_sinkhorn_with_a_queue_is_sinkhorn_over_batch_and_queue() -> None:
    out, queue = scores(2, batch=3, prototypes=4)
    queue = torch.cat([queue, scores(1, batch=5, prototypes=4, seed=3)[0]])  # 8 queued samples
    codes = sinkhorn(out, shared=queue)
    expected = sinkhorn_reference(torch.cat([out, queue]).tolist(), 3, 0.05)[:3]
    torch.testing.assert_close(codes, torch.tensor(expected, dtype=torch.float64), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("n_high", "n_low", "temperature"), [(2, 0, 0.1), (2, 4, 0.1), (2, 6, 0.5), (1, 1, 0.2)])
def test_loss_matches_swapped_prediction_over_all_crops(n_high: int, n_low: int, temperature: float) -> None:
    crops = scores(n_high + n_low)
    loss = SwaVLoss(temperature=temperature)(crops[:n_high], crops[n_high:])
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(swav_reference(crops, n_high, temperature, 3, 0.05), rel=1e-10)


def test_loss_with_queue_uses_codes_of_batch_and_queue() -> None:
    crops, queues = scores(4), scores(2, batch=6, seed=5)
    loss = SwaVLoss()(crops[:2], crops[2:], queues)
    total = 0.0
    for i in range(2):
        codes = torch.tensor(
            sinkhorn_reference(torch.cat([crops[i], queues[i]]).tolist(), 3, 0.05)[:4], dtype=torch.float64
        )
        total += (
            sum(
                -(codes * torch.log_softmax(z / 0.1, dim=1)).sum(dim=1).mean().item()
                for v, z in enumerate(crops)
                if v != i
            )
            / 3
        )
    assert loss.item() == pytest.approx(total / 2, rel=1e-10)
    with pytest.raises(ValueError, match="one queue per"):
        SwaVLoss()(crops[:2], crops[2:], queues[:1])


def test_prototypes_are_unit_vectors_without_bias() -> None:
    prototypes = SwaVPrototypes(input_dim=8, n_prototypes=5, n_steps_frozen_prototypes=3)
    assert prototypes.layer.bias is None
    torch.testing.assert_close(prototypes.layer.weight.norm(dim=1), torch.ones(5))
    with torch.no_grad():
        prototypes.layer.weight.mul_(3.0)
    prototypes.normalize()
    torch.testing.assert_close(prototypes.layer.weight.norm(dim=1), torch.ones(5))


def test_a_prototype_bias_shifts_the_predictions_but_not_the_codes() -> None:
    torch.manual_seed(0)
    prototypes = SwaVPrototypes(input_dim=8, n_prototypes=5, bias=True).double()
    with torch.no_grad():
        prototypes.layer.bias.normal_()  # larger than nn.Linear's initial bias
    embeddings = torch.nn.functional.normalize(torch.randn(6, 8, dtype=torch.float64), dim=1)
    cosines = embeddings @ prototypes.layer.weight.detach().T  # (6, 5)
    scores = prototypes(embeddings).detach()
    torch.testing.assert_close(scores, cosines + prototypes.layer.bias.detach())
    torch.testing.assert_close(sinkhorn(scores), sinkhorn(cosines))  # each prototype's row is rescaled away
    method = SwaV("test_resnet", prototype_bias=True, **SMALL)
    assert method.prototypes.layer.bias.shape == (10,)
    assert method.prototypes.layer.bias.requires_grad
    assert SwaV("test_resnet", **SMALL).prototypes.layer.bias is None  # the official code's


class PrototypeRecorder(TrainerCallback):
    """The prototypes after every optimizer step, and the ones each forward pass used."""

    def __init__(self, method: SwaV) -> None:
        self.method = method
        self.after_step: list[torch.Tensor] = []
        self.used: list[torch.Tensor] = []
        method.prototypes.register_forward_pre_hook(lambda module, args: self.used.append(module.layer.weight.clone()))

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.initial = self.method.prototypes.layer.weight.detach().clone()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.after_step.append(self.method.prototypes.layer.weight.detach().clone())


def test_prototypes_stay_unchanged_while_frozen_then_train_and_are_normalised_before_every_forward(
    tmp_path: Path,
) -> None:
    method = SwaV("test_resnet", **SMALL, n_steps_frozen_prototypes=2)
    recorder = PrototypeRecorder(method)
    train(method, tmp_path, image_size=32, max_steps=4, callbacks=[recorder], learning_rate=1e-2)
    for frozen in recorder.after_step[:2]:  # untouched by the optimizer; re-normalising moves the last bit at most
        torch.testing.assert_close(frozen, recorder.initial, rtol=0, atol=1e-7)
    assert (recorder.after_step[2] - recorder.initial).abs().max() > 1e-4  # trained from the third step on
    assert not torch.allclose(recorder.after_step[2].norm(dim=1), torch.ones(10))  # the step left the sphere ...
    assert len(recorder.used) == 4 * 8  # 4 steps, 8 crops scored each
    for weight in recorder.used:  # ... and the next forward pass started from unit prototypes
        torch.testing.assert_close(weight.norm(dim=1), torch.ones(10))


class QueueRecorder(TrainerCallback):
    def __init__(self, method: SwaV) -> None:
        self.queue_used: list[bool] = []
        original = method.criterion.forward

        def forward(high: Any, low: Any, queue: Any = None) -> torch.Tensor:
            self.queue_used.append(queue is not None)
            return original(high, low, queue)

        method.criterion.forward = forward


def test_queue_starts_at_its_epoch_is_used_once_full_and_is_saved(tmp_path: Path) -> None:
    method = SwaV("test_resnet", **SMALL, queue_length=16, queue_start_epoch=1)
    recorder = QueueRecorder(method)
    # 16 images, batch 8: 2 steps per epoch. Epoch 1 fills the 16-long queues, epoch 2 uses them.
    train(method, tmp_path / "run", image_size=32, num_train_epochs=3, callbacks=[recorder])
    assert recorder.queue_used == [False, False, False, False, True, True]
    assert int(method.queue_count) == 16
    assert method.queues is not None
    embeddings = method.queues[0].memory
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(16))
    method.use_queue = False  # set from the step by the callback; a loaded method starts with the queue off
    restored = assert_hub_round_trip(method, tmp_path / "hub", fixed_views(method, method.make_transform(32), size=32))
    assert isinstance(restored, SwaV)
    assert restored.queues is not None
    assert torch.equal(restored.queues[1].memory, method.queues[1].memory)


@pytest.mark.parametrize("backbone", ["test_resnet", "test_vit"])
def test_trains_on_global_and_low_resolution_crops_and_round_trips(backbone: str, tmp_path: Path) -> None:
    method = SwaV(backbone, **SMALL, n_steps_frozen_prototypes=1)
    transform = method.make_transform(input_size=64, crop_counts=(2, 4))
    sizes = ViewSizes(method)
    before = copy.deepcopy(method.backbone.state_dict())
    result = train(method, tmp_path / "run", max_steps=3, transform=transform)
    assert sizes.sizes[0] == [(64, 64)] * 2 + [(32, 32)] * 4
    losses = [loss for _, loss in result.training["loss_history"]]
    assert len(losses) == 3
    assert all(math.isfinite(x) for x in losses)
    assert any(not torch.equal(before[k], v) for k, v in method.backbone.state_dict().items())
    restored = assert_hub_round_trip(method, tmp_path / "hub", fixed_views(method, transform))
    assert torch.equal(restored.prototypes.layer.weight, method.prototypes.layer.weight)


def test_logs_the_normalized_entropy_of_every_crops_predictions() -> None:
    torch.manual_seed(0)
    method = SwaV("test_resnet", **SMALL).double().eval()  # batch norm on running statistics: crop by crop alike
    generator = torch.Generator().manual_seed(0)
    views = [torch.randn(4, 3, size, size, generator=generator, dtype=torch.float64) for size in (32, 32, 16, 16)]
    with torch.no_grad():
        output = method(views=views)
        crop_scores = [method.prototypes(F.normalize(method.projection_head(method.backbone(v)), dim=1)) for v in views]
    logits = [[x / 0.1 for x in row] for row in torch.cat(crop_scores).tolist()]  # scores / temperature
    expected = normalized_entropy_reference(logits)
    assert output.metrics["prediction_entropy"].item() == pytest.approx(expected, rel=1e-9)
    assert 0.0 < output.metrics["prediction_entropy"].item() < 1.0


def test_bad_arguments_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="sinkhorn_epsilon"):
        SwaV("test_resnet", sinkhorn_epsilon=0.0)
    with pytest.raises(ValueError, match="queue_length"):
        SwaV("test_resnet", queue_length=-1)


def _sinkhorn_worker(rank: int, port: int, output: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        crops, queue = scores(6, batch=8, seed=7), scores(1, batch=5, seed=8)[0]
        local = slice(rank * 4, rank * 4 + 4)
        result = {
            "codes": sinkhorn(crops[0][local], gather_distributed=True),
            "codes_with_queue": sinkhorn(crops[0][local], gather_distributed=True, shared=queue),
            "loss": SwaVLoss(sinkhorn_gather_distributed=True)(
                [c[local] for c in crops[:2]], [c[local] for c in crops[2:]]
            ),
        }
        torch.save(result, f"{output}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(180)
def test_sinkhorn_over_the_global_batch_across_processes(tmp_path: Path) -> None:
    mp.spawn(_sinkhorn_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD_SIZE)]
    crops, queue = scores(6, batch=8, seed=7), scores(1, batch=5, seed=8)[0]
    codes = sinkhorn(crops[0])  # one process, the whole batch
    codes_with_queue = sinkhorn(crops[0], shared=queue)
    for rank, result in enumerate(ranks):
        local = slice(rank * 4, rank * 4 + 4)
        torch.testing.assert_close(result["codes"], codes[local], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(result["codes_with_queue"], codes_with_queue[local], rtol=1e-12, atol=1e-12)
    loss = SwaVLoss()(crops[:2], crops[2:])
    torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, loss, rtol=1e-12, atol=1e-12)
