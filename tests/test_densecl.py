"""DenseCL: the loss against the paper's formulas computed independently (float64, loops), the dense maps of timm
backbones, the correspondence, the momentum encoder in a real run, and what save / load keep."""

from __future__ import annotations

import math
import socket
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import one_location_warnings, random_images
from PIL import Image
from torch import nn
from torch.nn import functional as F
from torchvision.transforms import v2
from transformers import TrainerCallback

import ssl_hub
from ssl_hub.data import ArrayImageDataset
from ssl_hub.losses import DenseCLLoss
from ssl_hub.methods import DenseCL
from ssl_hub.modules import DenseFeaturesError, forward_dense_features, select_most_similar
from ssl_hub.transforms import DenseCLTransform
from ssl_hub.transforms.moco import MoCoV2Transform

SMALL = {"memory_bank_size": 10, "dense_memory_bank_size": 14, "projection_hidden_dim": 32, "projection_output_dim": 16}


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def info_nce(query: torch.Tensor, positive: torch.Tensor, negatives: list[torch.Tensor], temperature: float) -> float:
    """MoCo / DenseCL eq. 1: -log exp(q.k+ / t) / (exp(q.k+ / t) + sum_k- exp(q.k- / t)), cosine similarities."""
    numerator = math.exp(cosine(query, positive) / temperature)
    denominator = numerator + sum(math.exp(cosine(query, negative) / temperature) for negative in negatives)
    return -math.log(numerator / denominator)


def global_reference(query: torch.Tensor, key: torch.Tensor, queue: list[torch.Tensor], temperature: float) -> float:
    """L_q: eq. 1 averaged over the images."""
    return sum(info_nce(q, k, queue, temperature) for q, k in zip(query, key, strict=True)) / len(query)


def matches(query_features: torch.Tensor, key_features: torch.Tensor) -> list[list[int]]:
    """The correspondence (sec. 3.3): for image b and query location s, the key location whose backbone feature has
    the highest cosine similarity with the query's (the first of equal maxima)."""
    result = []
    for b in range(query_features.shape[0]):
        row = []
        for s in range(query_features.shape[1]):
            similarities = [cosine(query_features[b, s], key_features[b, m]) for m in range(key_features.shape[1])]
            row.append(max(range(len(similarities)), key=lambda m: similarities[m]))
        result.append(row)
    return result


def dense_reference(
    query_dense: torch.Tensor, key_dense: torch.Tensor, match: list[list[int]], queue: list[torch.Tensor], t: float
) -> float:
    """L_r: eq. 2 averaged over the images and query locations, each location's positive its matched key location."""
    terms = [
        info_nce(query_dense[b, s], key_dense[b, match[b][s]], queue, t)
        for b in range(query_dense.shape[0])
        for s in range(query_dense.shape[1])
    ]
    return sum(terms) / len(terms)


def unit(row: torch.Tensor) -> torch.Tensor:
    return row / row.norm()


@pytest.mark.parametrize(
    ("loss_lambda", "temperature", "dense_queue_keys"),
    [(0.0, 0.2, "pooled"), (0.3, 0.2, "pooled"), (1.0, 0.7, "pooled"), (0.3, 0.7, "matched"), (1.0, 0.2, "matched")],
)
def test_loss_matches_the_paper_formula_across_queue_wrap_around(
    loss_lambda: float, temperature: float, dense_queue_keys: str
) -> None:
    batch, n_query, n_key, dim, channels = 2, 4, 3, 3, 5
    global_size, dense_size = 5, 3 if dense_queue_keys == "pooled" else 11  # 8 matched keys a step: still wraps
    criterion = DenseCLLoss(
        temperature,
        loss_lambda,
        memory_bank_size=(global_size, dim),
        dense_memory_bank_size=(dense_size, dim),
        dense_queue_keys=dense_queue_keys,
    ).double()
    banks = [criterion.global_loss.memory_bank, criterion.dense_memory_bank]
    for bank in banks:
        bank.memory.copy_(F.normalize(bank.memory, dim=1))  # the float32 random init, unit-norm in float64
    global_queue, dense_queue = (list(bank.memory.clone()) for bank in banks)  # our own FIFO models
    global_pointer = dense_pointer = 0
    generator = torch.Generator().manual_seed(3)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    for step in range(4):  # 8 writes into 5 and 3 slots: both queues wrap around
        query, key = randn(batch, dim), randn(batch, dim)
        query_dense, key_dense = randn(batch, n_query, dim), randn(batch, n_key, dim)
        query_features, key_features = randn(batch, n_query, channels), randn(batch, n_key, channels)
        match = matches(query_features, key_features)
        global_loss = global_reference(query, key, global_queue, temperature)
        dense_loss = dense_reference(query_dense, key_dense, match, dense_queue, temperature)
        expected = (1 - loss_lambda) * global_loss + loss_lambda * dense_loss
        loss = criterion(query, key, query_dense, key_dense, query_features, key_features)
        assert loss.dtype == torch.float64
        assert loss.item() == pytest.approx(expected, rel=1e-10), f"step {step}"

        for row in key:  # the global queue takes the keys
            global_queue[global_pointer % global_size] = unit(row)
            global_pointer += 1
        if dense_queue_keys == "pooled":  # each key image's dense embeddings, averaged over its locations
            new_keys = [unit(image.mean(dim=0)) for image in key_dense]
        else:  # the positive of every query location, image by image
            new_keys = [unit(key_dense[b, m]) for b in range(batch) for m in match[b]]
        for row in new_keys:
            dense_queue[dense_pointer % dense_size] = row
            dense_pointer += 1
        torch.testing.assert_close(banks[0].memory, torch.stack(global_queue), msg=f"global queue, step {step}")
        torch.testing.assert_close(banks[1].memory, torch.stack(dense_queue), msg=f"dense queue, step {step}")
        assert int(banks[0].pointer) == global_pointer % global_size
        assert int(banks[1].pointer) == dense_pointer % dense_size


def test_correspondence_picks_the_most_similar_key_location_by_cosine() -> None:
    # Key location 2 has the largest dot product with every query, but not the largest cosine for queries 0 and 1.
    keys = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [10.0, 5.0]]])  # (1, 3, 2)
    queries = torch.tensor([[[1.0, 0.1], [0.1, 1.0], [2.0, 1.0], [1.0, 1.0]]])  # (1, 4, 2)
    values = torch.tensor([[[10.0], [11.0], [12.0]]])  # (1, 3, 1): the value names its location
    picked = select_most_similar(queries, keys, values)
    assert picked.flatten().tolist() == [10.0, 11.0, 12.0, 12.0]

    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 5, 4, generator=generator), torch.randn(3, 6, 4, generator=generator)
    y_values = torch.randn(3, 6, 2, generator=generator)
    picked = select_most_similar(x, y, y_values)
    for b in range(3):
        for n in range(5):
            best = max(range(6), key=lambda m: cosine(x[b, n], y[b, m]))
            torch.testing.assert_close(picked[b, n], y_values[b, best], rtol=0, atol=0)


DENSE_LAYOUTS = {
    # name: (timm kwargs, image size, the dense map expected from forward_features' output)
    "test_resnet": ({}, 64, lambda f, m: f),
    "test_convnext": ({}, 64, lambda f, m: f),
    "test_efficientnet": ({}, 64, lambda f, m: f),  # after conv_head: the map forward_head pools
    "test_mambaout": ({}, 64, lambda f, m: f.permute(0, 3, 1, 2)),  # channels-last output
    "test_vit": ({}, 160, lambda f, m: f[:, 1:].reshape(2, 10, 10, -1).permute(0, 3, 1, 2)),
    "test_vit@48": ({"dynamic_img_size": True}, 48, lambda f, m: f[:, 1:].reshape(2, 3, 3, -1).permute(0, 3, 1, 2)),
}


@pytest.mark.parametrize("case", list(DENSE_LAYOUTS))
def test_dense_map_is_the_spatial_form_of_what_forward_head_pools(case: str) -> None:
    kwargs, size, expected_map = DENSE_LAYOUTS[case]
    backbone = timm.create_model(case.split("@")[0], num_classes=0, **kwargs).eval()
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pooled, dense = forward_dense_features(backbone, images)
        torch.testing.assert_close(pooled, backbone(images), rtol=0, atol=0)  # what the published model returns
        expected_features = backbone.forward_features(images)
    assert dense.ndim == 4
    assert dense.shape[:2] == (2, backbone.num_features)
    torch.testing.assert_close(dense, expected_map(expected_features, backbone), rtol=0, atol=0)


class PooledOnly(nn.Module):
    """A backbone that only returns pooled features: no dense map."""

    num_features = 8
    num_classes = 0

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.mean(dim=(2, 3)))


class StagesOnly(PooledOnly):
    """Final features are not spatial; the last stage is ``stage_channels`` wide (PiT-like when that is 8)."""

    def __init__(self, stage_channels: int) -> None:
        super().__init__()
        self.stage = nn.Conv2d(3, stage_channels, kernel_size=16, stride=16)

    def forward_intermediates(self, x: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, list[torch.Tensor]]:
        stage = self.stage(x)  # (B, C', H / 16, W / 16)
        return self.forward_features(x), [stage]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.mean(dim=(2, 3)))[:, None]  # (B, 1, 8): a class token only

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x[:, 0]


def test_backbone_without_a_dense_map_fails_at_construction_naming_what_fits() -> None:
    with pytest.raises(DenseFeaturesError, match=r"forward_intermediates.*ResNet.*ConvNeXt.*ViT"):
        ssl_hub.create_method("densecl", backbone=PooledOnly())


def test_non_spatial_features_fall_back_to_the_last_stage_or_fail_clearly() -> None:
    images = torch.randn(2, 3, 32, 32)
    backbone = StagesOnly(stage_channels=8)
    pooled, dense = forward_dense_features(backbone, images)
    torch.testing.assert_close(pooled, backbone.forward_features(images)[:, 0])
    torch.testing.assert_close(dense, backbone.stage(images))
    with pytest.raises(DenseFeaturesError, match=r"dense map of 8 channels.*\(2, 1, 8\), \(2, 4, 2, 2\)"):
        forward_dense_features(StagesOnly(stage_channels=4), images)


def prepare_float64(
    method: DenseCL, batch_size: int, image_size: int
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """Make ``method`` float64 with a key encoder distinct from the query encoder and unit-norm queues; return two
    float64 views and the global and dense queues as they stand."""
    method.double()
    with torch.no_grad():
        for parameter in method.teacher_backbone.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    generator = torch.Generator().manual_seed(0)
    views = [
        torch.randn(batch_size, 3, image_size, image_size, generator=generator, dtype=torch.float64) for _ in range(2)
    ]
    banks = [method.criterion.global_loss.memory_bank, method.criterion.dense_memory_bank]
    for bank in banks:
        bank.memory.copy_(F.normalize(bank.memory, dim=1))  # the float32 random init, unit-norm in float64
    global_queue, dense_queue = (list(bank.get()) for bank in banks)
    return views, global_queue, dense_queue


def test_a_one_location_map_is_warned_once_naming_output_stride(caplog: pytest.LogCaptureFixture) -> None:
    strided = ssl_hub.create_method("densecl", backbone="test_resnet", **SMALL)  # stride 32: 1 x 1 at 32 px
    dilated = ssl_hub.create_method("densecl", backbone="test_resnet", backbone_kwargs={"output_stride": 16}, **SMALL)
    views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]
    assert one_location_warnings(caplog, dilated, views) == []  # 2 x 2
    [message] = one_location_warnings(caplog, strided, views, forwards=2)
    assert "DenseCL matches locations" in message
    assert "for 32 x 32 px views that map is 1 x 1" in message
    assert "output_stride=16" in message


def test_method_loss_is_the_formula_on_the_query_and_key_encoders() -> None:
    method = ssl_hub.create_method("densecl", backbone="test_vit", temperature=0.3, loss_lambda=0.4, **SMALL)
    method.fit_input_size(64)
    views, global_queue, dense_queue = prepare_float64(method, batch_size=2, image_size=64)

    def encode(backbone: nn.Module, head: nn.Module, dense_head: nn.Module, images: torch.Tensor):
        tokens = backbone.forward_features(images)[:, backbone.num_prefix_tokens :]  # (B, 16, C): a 4 x 4 grid
        grid = tokens.transpose(1, 2).reshape(2, -1, 4, 4)  # (B, C, 4, 4)
        return head(backbone(images)), dense_head(grid).flatten(2).transpose(1, 2), tokens

    with torch.no_grad():
        query, query_dense, query_features = encode(
            method.backbone, method.projection_head, method.dense_projection_head, views[0]
        )
        key, key_dense, key_features = encode(
            method.teacher_backbone, method.teacher_projection_head, method.teacher_dense_projection_head, views[1]
        )
        loss = method(views=views).loss
    expected = 0.6 * global_reference(query, key, global_queue, 0.3) + 0.4 * dense_reference(
        query_dense, key_dense, matches(query_features, key_features), dense_queue, 0.3
    )
    assert query_dense.shape == (2, 16, 16)
    assert loss.item() == pytest.approx(expected, rel=1e-9)


def test_key_encoder_shuffles_batch_norm_in_groups_in_one_process() -> None:
    """As MoCo's: the official key encoder shuffles BN (``_batch_shuffle_ddp``); one process emulates the GPUs."""
    torch.manual_seed(0)
    method = ssl_hub.create_method("densecl", backbone="test_resnet", shuffle_bn_group_size=4, **SMALL)
    views, global_queue, dense_queue = prepare_float64(method, batch_size=8, image_size=32)

    with torch.no_grad():
        query, query_dense, query_features = method.encode(views[0])
        torch.manual_seed(3)
        order = torch.randperm(8)  # the forward draws the same permutation below
        key, key_dense, key_features = (torch.empty_like(t) for t in (query, query_dense, query_features))
        for group in (order[:4], order[4:]):
            key[group], key_dense[group], key_features[group] = method.encode(views[1][group], teacher=True)
        whole_key = method.encode(views[1], teacher=True)[0]
        assert not torch.allclose(key, whole_key), "train-mode batch norm: the groups matter"
        torch.manual_seed(3)
        loss = method(views=views).loss
    expected = 0.5 * global_reference(query, key, global_queue, 0.2) + 0.5 * dense_reference(
        query_dense, key_dense, matches(query_features, key_features), dense_queue, 0.2
    )
    assert loss.item() == pytest.approx(expected, rel=1e-9)


def pretrain_a_few_steps(method: ssl_hub.SSLMethod, output_dir: Path, steps: int = 3, callbacks: tuple = ()):
    args = {
        "output_dir": str(output_dir),
        "max_steps": steps,
        "per_device_train_batch_size": 8,
        "learning_rate": 1e-2,
        "save_strategy": "no",
        "use_cpu": True,
        "disable_tqdm": True,
    }
    data = ArrayImageDataset(random_images(24, 32))
    return ssl_hub.pretrain(method, data, args, image_size=32, save=False, callbacks=callbacks)


class EMAChecker(TrainerCallback):
    """Checks after every step that each teacher parameter became ``m * before + (1 - m) * student``."""

    def __init__(self, method: DenseCL, momentum: float) -> None:
        self.pairs = [
            (method.backbone, method.teacher_backbone),
            (method.projection_head, method.teacher_projection_head),
            (method.dense_projection_head, method.teacher_dense_projection_head),
        ]
        self.momentum = momentum
        self.before: list[torch.Tensor] = []
        self.steps = 0

    def _teacher(self) -> list[torch.Tensor]:
        return [p.detach().double().clone() for _, teacher in self.pairs for p in teacher.parameters()]

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.before = self._teacher()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        after = self._teacher()
        student = [p.detach().double() for s, _ in self.pairs for p in s.parameters()]
        assert len(after) == len(student) == len(self.before)
        moved = torch.cat([(a - b).flatten() for a, b in zip(after, self.before, strict=True)])
        gap = torch.cat([(s - b).flatten() for s, b in zip(student, self.before, strict=True)])
        assert moved.abs().max() > 1e-5, "the teacher should move"
        # The momentum that explains the move (least squares over all parameters; float32 rounding leaves ~1e-6), then
        # every entry to float32 precision.
        assert 1 - float(moved @ gap / (gap @ gap)) == pytest.approx(self.momentum, abs=1e-4)
        for a, b, s in zip(after, self.before, student, strict=True):
            torch.testing.assert_close(a, self.momentum * b + (1 - self.momentum) * s, rtol=1e-6, atol=1e-7)
        self.steps += 1


def test_momentum_encoder_moves_by_exactly_the_momentum_in_a_real_run(tmp_path: Path) -> None:
    method = ssl_hub.create_method("densecl", backbone="test_resnet", momentum=0.9, **SMALL)
    assert isinstance(method, DenseCL)
    (ema,) = method.callbacks()
    assert {ema.momentum(step, 3) for step in range(3)} == {0.9}  # MoCo's constant momentum
    checker = EMAChecker(method, momentum=0.9)
    pretrain_a_few_steps(method, tmp_path, steps=3, callbacks=(checker,))
    assert checker.steps == 3


def test_save_gives_timm_the_trained_backbone_and_load_method_restores_teacher_and_queues(tmp_path: Path) -> None:
    method = ssl_hub.create_method("densecl", backbone="test_vit", **SMALL)
    pretrain_a_few_steps(method, tmp_path / "run", steps=3)
    folder = method.save_pretrained(tmp_path / "hub")

    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    backbone = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(backbone(images), method.eval().backbone(images), rtol=0, atol=0)

    restored = ssl_hub.load_method(folder)
    assert isinstance(restored, DenseCL)
    assert restored.config == method.config
    original, loaded = method.state_dict(), restored.state_dict()
    teacher_keys = [k for k in original if k.startswith("teacher_")]
    queue_keys = [k for k in original if k.startswith("criterion.")]
    assert len(queue_keys) == 4  # memory and pointer of the global and the dense queue
    for key in teacher_keys + queue_keys:
        torch.testing.assert_close(loaded[key], original[key], rtol=0, atol=0, msg=key)
    # 24 keys written: the queues wrapped and their pointers are restored, not reset.
    assert int(loaded["criterion.global_loss.memory_bank.pointer"]) == 24 % 10
    assert int(loaded["criterion.dense_memory_bank.pointer"]) == 24 % 14
    # The teacher is the saved EMA, not a fresh copy of the published backbone.
    assert not torch.equal(loaded["teacher_backbone.cls_token"], loaded["backbone.cls_token"])


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("momentum", -0.1),
        ("momentum", 1.5),
        ("temperature", 0.0),
        ("temperature", -0.2),
        ("loss_lambda", -0.01),
        ("loss_lambda", 1.5),
        ("memory_bank_size", 0),
        ("dense_memory_bank_size", 0),
        ("projection_output_dim", 0),
        ("shuffle_bn_group_size", 0),
        ("dense_queue_keys", "all"),
    ],
)
def test_bad_hyperparameters_fail_at_construction_naming_the_argument(argument: str, value: float) -> None:
    with pytest.raises(ValueError, match=argument):
        ssl_hub.create_method("densecl", backbone="test_resnet", **{argument: value})


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("temperature", 0.0),
        ("loss_lambda", 2.0),
        ("memory_bank_size", 0),
        ("dense_memory_bank_size", (0, 8)),
        ("dense_queue_keys", "locations"),
    ],
)
def test_bad_loss_arguments_are_refused_by_name(argument: str, value: Any) -> None:
    with pytest.raises(ValueError, match=argument):
        DenseCLLoss(**{argument: value})


def test_transform_is_moco_v2s_augmentation() -> None:
    transform = DenseCLTransform(input_size=32)
    assert isinstance(transform, MoCoV2Transform)
    views = transform(Image.fromarray(random_images(1, 40)[0]))
    assert [tuple(v.shape) for v in views] == [(3, 32, 32), (3, 32, 32)]
    steps = {type(t).__name__: t for t in transform.transforms[0].transforms}
    assert steps["RandomResizedCrop"].scale == (0.2, 1.0)
    applied = [t for t in transform.transforms[0].transforms if isinstance(t, v2.RandomApply)]
    jitter = next(t for t in applied if isinstance(t.transforms[0], v2.ColorJitter))
    assert jitter.p == 0.8
    assert (jitter.transforms[0].brightness, jitter.transforms[0].hue) == ((0.6, 1.4), (-0.1, 0.1))
    assert next(t for t in applied if isinstance(t.transforms[0], v2.GaussianBlur)).p == 0.5
    assert steps["RandomGrayscale"].p == 0.2
    assert steps["RandomHorizontalFlip"].p == 0.5


WORLD_SIZE = 2


def distributed_inputs() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    shapes = [(4, 3), (4, 3), (4, 4, 3), (4, 4, 3), (4, 4, 5), (4, 4, 5)]
    return [torch.randn(*shape, generator=generator, dtype=torch.float64) for shape in shapes]


def fresh_criterion() -> DenseCLLoss:
    torch.manual_seed(0)  # the same initial queues everywhere, as DDP's broadcast of rank 0's buffers gives
    return DenseCLLoss(0.2, 0.5, memory_bank_size=(6, 3), dense_memory_bank_size=(6, 3)).double()


def _queue_worker(rank: int, port: int, output: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        criterion = fresh_criterion()
        local = slice(2 * rank, 2 * rank + 2)
        loss = criterion(*(t[local] for t in distributed_inputs()))
        torch.save({"loss": loss.detach(), "state": criterion.state_dict()}, f"{output}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_queues_stay_identical_across_ranks(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    mp.spawn(_queue_worker, args=(port, str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD_SIZE)]

    inputs = distributed_inputs()
    whole = fresh_criterion()
    whole_loss = whole(*inputs)  # one process, the global batch: its queues take all 4 keys in rank order
    for rank, result in enumerate(results):
        for key, value in whole.state_dict().items():
            torch.testing.assert_close(result["state"][key], value, rtol=0, atol=0, msg=f"rank {rank}: {key}")
        local = slice(2 * rank, 2 * rank + 2)
        assert result["loss"].item() == pytest.approx(fresh_criterion()(*(t[local] for t in inputs)).item())
    assert torch.stack([r["loss"] for r in results]).mean().item() == pytest.approx(whole_loss.item(), rel=1e-12)
