"""MoCo v2 and v3: losses against the papers' formulas (v2 across queue wrap-around), version defaults, the momentum
encoder during a real pretrain run, saved state, bad input. Multi-process queues: test_moco_distributed.py."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from teacher_state_checks import check_ema_follows, check_save_and_load
from torch.nn import functional as F
from torchvision.transforms import v2

import ssl_hub
from ssl_hub.heads import MoCoProjectionHead
from ssl_hub.methods import MoCo, MoCoConfig
from ssl_hub.methods.moco import VERSION_DEFAULTS
from ssl_hub.training import cosine_schedule
from ssl_hub.training.arguments import optimizer_name
from ssl_hub.transforms import BYOLTransform, MoCoV2Transform

SMALL_V2 = {"projection_hidden_dim": 32, "projection_output_dim": 8}
SMALL_V3 = {"version": 3, "projection_hidden_dim": 32, "projection_output_dim": 8, "prediction_hidden_dim": 16}


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(u * v for u, v in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(u * u for u in a)) * math.sqrt(sum(v * v for v in b)))


def moco_v2_reference(queries: torch.Tensor, keys: torch.Tensor, queue: list[list[float]], temperature: float) -> float:
    """MoCo eq. 1: -log exp(q.k+ / t) / (exp(q.k+ / t) + sum_{k- in queue} exp(q.k- / t)), mean over queries."""
    total = 0.0
    for q, k in zip(queries.tolist(), keys.tolist(), strict=True):
        positive = math.exp(cosine(q, k) / temperature)
        negatives = sum(math.exp(cosine(q, n) / temperature) for n in queue)
        total += -math.log(positive / (positive + negatives))
    return total / len(queries)


def moco_v3_reference(q0: torch.Tensor, q1: torch.Tensor, k0: torch.Tensor, k1: torch.Tensor, t: float) -> float:
    """MoCo v3 (official moco/builder.py): contrastive_loss(q1, k2) + contrastive_loss(q2, k1), each
    2 t * CE(q k^T / t, diagonal) over the keys of the batch."""

    def contrastive(q: list[list[float]], k: list[list[float]]) -> float:
        total = 0.0
        for i in range(len(q)):
            logits = [cosine(q[i], k[j]) / t for j in range(len(k))]
            total += -(logits[i] - math.log(sum(math.exp(x) for x in logits)))
        return 2 * t * total / len(q)

    return contrastive(q0.tolist(), k1.tolist()) + contrastive(q1.tolist(), k0.tolist())


def double_views(count: int = 2, batch_size: int = 4, seed: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch_size, 3, 32, 32, generator=generator, dtype=torch.float64) for _ in range(count)]


def perturb_teacher(method: MoCo) -> None:
    """Make the key encoder differ from the query encoder, as after some training."""
    with torch.no_grad():
        for parameter in method.teacher_projection_head.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))


@pytest.mark.parametrize("temperature", [0.07, 0.2])
def test_v2_loss_is_infonce_over_the_queue_and_the_queue_is_fifo_across_wrap_around(temperature: float) -> None:
    torch.manual_seed(0)
    size, batch_size = 10, 4
    method = ssl_hub.create_method(
        "moco", backbone="test_resnet", **SMALL_V2, memory_bank_size=size, temperature=temperature
    ).double()
    perturb_teacher(method)
    bank = method.criterion.memory_bank
    bank.memory.copy_(F.normalize(bank.memory, dim=1))  # the float32 random init, unit-norm in float64
    queue = bank.memory.tolist()  # our own FIFO model, from the random init
    pointer = 0
    for step in range(4):  # 16 keys into 10 slots: the queue wraps around
        views = double_views(batch_size=batch_size, seed=step)
        with torch.no_grad():
            queries = method.projection_head(method.backbone(views[0]))  # view 0 -> query encoder
            keys = method.teacher_projection_head(method.teacher_backbone(views[1]))  # view 1 -> key encoder
            loss = method(views=views).loss
        assert loss.item() == pytest.approx(moco_v2_reference(queries, keys, queue, temperature), rel=1e-10), step
        for key in F.normalize(keys, dim=1).tolist():
            queue[pointer % size] = key
            pointer += 1
        torch.testing.assert_close(bank.memory, torch.tensor(queue, dtype=torch.float64), rtol=0, atol=1e-15)
        assert int(bank.pointer) == pointer % size


def test_v2_keys_come_from_shuffled_batch_norm_groups_in_one_process() -> None:
    """MoCo sec. 3.3: a key must not share batch-norm statistics with its query; one process emulates the GPUs."""
    torch.manual_seed(0)
    method = ssl_hub.create_method(
        "moco", backbone="test_resnet", **SMALL_V2, memory_bank_size=16, shuffle_bn_group_size=4
    ).double()
    perturb_teacher(method)
    bank = method.criterion.memory_bank
    bank.memory.copy_(F.normalize(bank.memory, dim=1))
    queue = bank.memory.tolist()
    views = double_views(batch_size=8)

    def key_encoder(images: torch.Tensor) -> torch.Tensor:
        return method.teacher_projection_head(method.teacher_backbone(images))

    with torch.no_grad():
        queries = method.projection_head(method.backbone(views[0]))
        torch.manual_seed(7)
        order = torch.randperm(8)  # the forward draws the same permutation below
        keys = torch.empty_like(queries)
        for group in (order[:4], order[4:]):
            keys[group] = key_encoder(views[1][group])
        assert not torch.allclose(keys, key_encoder(views[1])), "train-mode batch norm: the groups matter"
        torch.manual_seed(7)
        loss = method(views=views).loss
    assert loss.item() == pytest.approx(moco_v2_reference(queries, keys, queue, 0.2), rel=1e-10)
    torch.testing.assert_close(bank.memory[:8], F.normalize(keys, dim=1), rtol=0, atol=1e-15)


@pytest.mark.parametrize("backbone", ["test_resnet", "test_vit"])
@pytest.mark.parametrize("temperature", [0.2, 1.0])
def test_v3_loss_is_the_official_symmetric_contrastive_loss(backbone: str, temperature: float) -> None:
    torch.manual_seed(0)
    method = ssl_hub.create_method("moco", backbone=backbone, **SMALL_V3, temperature=temperature).double()
    perturb_teacher(method)
    assert method.prediction_head is not None
    views = double_views()
    with torch.no_grad():
        q0, q1 = (method.prediction_head(method.projection_head(method.backbone(v))) for v in views)
        k0, k1 = (method.teacher_projection_head(method.teacher_backbone(v)) for v in views)
        loss = method(views=views).loss
    assert loss.item() == pytest.approx(moco_v3_reference(q0, q1, k0, k1, temperature), rel=1e-10)


def test_gradient_flows_into_the_query_encoder_only() -> None:
    for kwargs in (SMALL_V2, SMALL_V3):
        method = ssl_hub.create_method("moco", backbone="test_resnet", **kwargs)
        method(views=[torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]).loss.backward()
        assert all(p.grad is not None for p in method.backbone.parameters())
        for teacher in (method.teacher_backbone, method.teacher_projection_head):
            assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())


def test_version_defaults_are_the_papers_and_explicit_values_win() -> None:
    v2_config, v3_config = MoCoConfig(), MoCoConfig(version=3)
    for config in (v2_config, v3_config):
        for name, value in VERSION_DEFAULTS[config.version].items():
            assert getattr(config, name) == value, (config.version, name)
    assert (v2_config.temperature, v2_config.momentum_end, v2_config.projection_hidden_dim) == (0.2, 0.999, None)
    assert v2_config.prediction_hidden_dim is None
    assert (v3_config.temperature, v3_config.momentum_end) == (0.2, 1.0)
    custom = MoCoConfig(version=3, momentum_start=0.996, projection_num_layers=2)
    assert (custom.momentum_start, custom.momentum_end, custom.projection_num_layers) == (0.996, 1.0, 2)
    assert MoCoConfig(momentum_start=0.99).momentum_end == 0.99, "v2's momentum is constant by default"
    assert MoCoConfig(**v3_config.to_dict()) == v3_config, "a saved config rebuilds the same config"


def test_heads_follow_each_version() -> None:
    v2_method = ssl_hub.create_method("moco", backbone="test_resnet")
    layers = list(v2_method.projection_head.layers)
    assert [type(m) for m in layers] == [torch.nn.Linear, torch.nn.ReLU, torch.nn.Linear]
    assert layers[0].out_features == v2_method.feature_dim
    assert layers[-1].out_features == 128
    assert all(m.bias is not None for m in layers if isinstance(m, torch.nn.Linear))
    assert v2_method.prediction_head is None

    v3_method = ssl_hub.create_method("moco", backbone="test_resnet", version=3)
    linears = [m for m in v3_method.projection_head.layers if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (v3_method.feature_dim, 4096),
        (4096, 4096),
        (4096, 256),
    ]
    assert all(m.bias is None for m in linears), "every layer is followed by BN"
    assert isinstance(v3_method.prediction_head, MoCoProjectionHead)
    linears = [m for m in v3_method.prediction_head.layers if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(256, 4096), (4096, 256)]
    output_norm = v3_method.prediction_head.layers[-1]
    assert isinstance(output_norm, torch.nn.BatchNorm1d)
    assert output_norm.weight is None


@pytest.mark.parametrize(
    ("version", "backbone", "optimizer", "rate", "weight_decay"),
    [
        (2, "test_resnet", "sgd", 0.03, 1e-4),  # v2: official main_moco.py --cos
        (2, "test_vit", "sgd", 0.03, 1e-4),
        (3, "test_resnet", "timm larc", 0.3, 1e-6),  # v3 trains ResNets with LARS...
        (3, "test_convnext", "timm larc", 0.3, 1e-6),
        (3, "test_vit", "adamw_torch_fused", 1e-3, 0.1),  # ...and ViTs with AdamW, decayed as the official recipe
    ],
)
def test_each_version_trains_with_its_recipe_for_its_backbone_at_its_rate_per_256_images(
    version: int, backbone: str, optimizer: str, rate: float, weight_decay: float
) -> None:
    method = ssl_hub.create_method("moco", backbone, version=version)
    for batch in (256, 64):
        args = ssl_hub.training_arguments(
            method, output_dir="unused", report_to="none", per_device_train_batch_size=batch
        )
        assert (optimizer_name(args), args.weight_decay, args.lr_scheduler_type) == (optimizer, weight_decay, "cosine")
        assert args.learning_rate == pytest.approx(rate * batch / 256)
    assert (args.optim_args, args.warmup_steps) == (("momentum=0.9", 0) if version == 2 else (None, 0.05))
    assert args.timm_optimizer_kwargs == ({"trust_coeff": 0.02} if optimizer == "timm larc" else None)


def test_queue_is_a_buffer_of_the_papers_size() -> None:
    method = ssl_hub.create_method("moco", backbone="test_resnet")
    assert method.criterion.memory_bank.memory.shape == (65536, 128)
    assert "criterion.memory_bank.memory" in method.state_dict()
    assert "criterion.memory_bank.memory" not in dict(method.named_parameters())


@pytest.mark.parametrize(("kwargs", "start", "end"), [(SMALL_V2, 0.9, 0.9), (SMALL_V3, 0.9, 1.0)])
def test_key_encoder_moves_by_the_scheduled_momentum_during_pretrain(
    kwargs: dict[str, int], start: float, end: float, tmp_path: Path
) -> None:
    momentum = {"momentum_start": start} if end == start else {"momentum_start": start, "momentum_end": end}
    method = ssl_hub.create_method("moco", backbone="test_resnet", **kwargs, **momentum)
    check_ema_follows(
        method, tmp_path, lambda step, steps: cosine_schedule(step, steps, start, end), publishes_teacher=False
    )


def test_v2_default_momentum_is_constant_0_999(tmp_path: Path) -> None:
    method = ssl_hub.create_method("moco", backbone="test_resnet", **SMALL_V2)
    check_ema_follows(method, tmp_path, lambda step, steps: 0.999, publishes_teacher=False)


def test_v2_save_and_load_restore_the_key_encoder_and_the_queue(tmp_path: Path) -> None:
    method = ssl_hub.create_method("moco", backbone="test_resnet", **SMALL_V2, memory_bank_size=64)
    check_save_and_load(method, tmp_path, ["teacher_backbone.", "teacher_projection_head.", "criterion.memory_bank."])
    assert int(method.criterion.memory_bank.pointer) == 16, "2 steps of 8 keys were written"


def test_v3_save_and_load_restore_the_key_encoder_and_the_predictor(tmp_path: Path) -> None:
    method = ssl_hub.create_method("moco", backbone="test_vit", **SMALL_V3)
    check_save_and_load(method, tmp_path, ["teacher_backbone.", "teacher_projection_head.", "prediction_head."])


def test_each_version_has_its_papers_augmentation() -> None:
    v2_transform = ssl_hub.create_method("moco", backbone="test_resnet").make_transform(32)
    assert isinstance(v2_transform, MoCoV2Transform)
    view = v2_transform.transforms[0]
    crop = next(t for t in view.transforms if isinstance(t, v2.RandomResizedCrop))
    jitter = next(t.transforms[0] for t in view.transforms if isinstance(t, v2.RandomApply) and t.p == 0.8)
    assert crop.scale == (0.2, 1.0)
    assert (jitter.brightness, jitter.saturation, jitter.hue) == ((0.6, 1.4), (0.6, 1.4), (-0.1, 0.1))
    v3_transform = ssl_hub.create_method("moco", backbone="test_resnet", version=3).make_transform(32)
    assert isinstance(v3_transform, BYOLTransform)
    views = v3_transform(Image.new("RGB", (40, 40), (10, 120, 200)))
    assert [tuple(v.shape) for v in views] == [(3, 32, 32), (3, 32, 32)]


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -0.2}, "temperature"),
        ({"version": 3, "temperature": float("nan")}, "temperature"),
        ({"momentum_start": 1.001}, "momentum_start"),
        ({"version": 3, "momentum_start": -0.5}, "momentum_start"),
        ({"momentum_end": 2.0}, "momentum_end"),
        ({"memory_bank_size": 0}, "memory_bank_size"),
        ({"memory_bank_size": -8}, "memory_bank_size"),
        ({"version": 3, "memory_bank_size": 4096}, "memory_bank_size"),
        ({"prediction_hidden_dim": 512}, "prediction_hidden_dim"),
        ({"version": 3, "prediction_hidden_dim": 0}, "prediction_hidden_dim"),
        ({"projection_num_layers": 1}, "projection_num_layers"),
        ({"version": 1}, "version"),
        ({"version": "3"}, "version"),
        ({"shuffle_bn_group_size": 0}, "shuffle_bn_group_size"),
    ],
)
def test_bad_hyperparameters_fail_at_construction_naming_the_argument(kwargs: dict[str, object], argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        ssl_hub.create_method("moco", backbone="test_resnet", **kwargs)


def test_a_queue_smaller_than_the_batch_fails_at_the_first_forward_naming_both() -> None:
    views = [torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)]
    method = ssl_hub.create_method("moco", backbone="test_resnet", **SMALL_V2, memory_bank_size=7)
    with pytest.raises(ValueError, match=r"memory_bank_size \(7\).*= 8\)"):
        method(views=views)
    assert int(method.criterion.memory_bank.pointer) == 0, "nothing was written"
    exact = ssl_hub.create_method("moco", backbone="test_resnet", **SMALL_V2, memory_bank_size=8)
    assert torch.isfinite(exact(views=views).loss)
