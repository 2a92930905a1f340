"""The contract every registered method keeps, on each tiny timm backbone: Trainer steps, save, load."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from conftest import TINY_BACKBONES, random_images
from PIL import Image

import ssl_hub
from ssl_hub.data import ArrayImageDataset, collate_views

METHODS = ssl_hub.list_methods()
# Every method on every tiny backbone it supports (masked-image methods: ViTs only).
METHOD_BACKBONES = [
    (name, backbone)
    for name in METHODS
    for backbone in TINY_BACKBONES
    if backbone == "test_vit" or not ssl_hub.get_method_class(name).requires_vit
]


# Paper-sized heads that make one CPU step take many seconds (8192-wide projectors: 135M parameters; AIM's head: 404M)
# run the contract with narrow heads; each method's own tests check its paper defaults.
NARROW_HEADS: dict[str, dict[str, int]] = {
    "aim": {"head_hidden_dim": 128, "head_num_blocks": 2},
    "barlowtwins": {"projection_hidden_dim": 256, "projection_output_dim": 256},
    "mmcr": {"projection_hidden_dim": 256, "projection_output_dim": 64},
    "vicreg": {"projection_hidden_dim": 256, "projection_output_dim": 256},
    "vicregl": {"projection_hidden_dim": 256, "projection_output_dim": 256},
}


# SimMIM's 32 px mask units leave a 32 px image one unit, all masked: these images need units of one 16 px patch.
SMALL_IMAGES: dict[str, dict[str, int]] = {"simmim": {"mask_patch_size": 16}}


def create(name: str, backbone: str | torch.nn.Module, **kwargs: object) -> ssl_hub.SSLMethod:
    sizes = {**NARROW_HEADS.get(name, {}), **SMALL_IMAGES.get(name, {})}
    return ssl_hub.create_method(name, backbone=backbone, **sizes, **kwargs)


def default_backbone(name: str) -> str:
    return "test_vit" if ssl_hub.get_method_class(name).requires_vit else "test_resnet"


def train_a_few_steps(method: ssl_hub.SSLMethod, output_dir: Path, steps: int = 3, save: bool = False):
    data = ArrayImageDataset(random_images(24, 32))
    args = {
        "output_dir": str(output_dir),
        "max_steps": steps,
        "per_device_train_batch_size": 8,
        "learning_rate": 1e-2,
        "save_strategy": "no",
        "use_cpu": True,
        "disable_tqdm": True,
        "logging_steps": 1,
    }
    return ssl_hub.pretrain(method, data, args, image_size=32, save=save)


# Methods whose loss is a sum of named terms, logged beside the loss.
METHODS_WITH_LOSS_TERMS = {"barlowtwins", "dinov2", "ibot", "lejepa", "mmcr", "msn", "pmsn", "vicreg", "vicregl"}


@pytest.mark.parametrize(("name", "backbone"), METHOD_BACKBONES)
def test_trainer_steps_change_the_loss_and_the_backbone(name: str, backbone: str, tmp_path: Path) -> None:
    method = create(name, backbone)
    before = copy.deepcopy(method.backbone.state_dict())
    result = train_a_few_steps(method, tmp_path)
    losses = [loss for _, loss in result.training["loss_history"]]
    assert len(losses) == 3
    assert all(torch.isfinite(torch.tensor(losses)))
    assert len(set(losses)) > 1
    terms = {k: v for k, v in result.training["final_metrics"].items() if k.startswith("loss_")}
    assert bool(terms) == (name in METHODS_WITH_LOSS_TERMS)
    if terms:  # logged at the last step: they sum to its loss
        assert sum(terms.values()) == pytest.approx(losses[-1], rel=1e-5)
    after = method.backbone.state_dict()
    changed = [k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2, "most backbone tensors should move"


def method_views(method: ssl_hub.SSLMethod, count: int = 4, size: int = 32) -> list[torch.Tensor]:
    """A fixed batch of the views ``method`` trains on, made by its own transform."""
    torch.manual_seed(0)
    transform = method.make_transform(input_size=size)
    items = [{"views": transform(Image.fromarray(image))} for image in random_images(count, size)]
    return collate_views(items)["views"]


@pytest.mark.parametrize("name", METHODS)
def test_save_then_timm_and_load_method_agree(name: str, tmp_path: Path) -> None:
    method = create(name, default_backbone(name))
    train_a_few_steps(method, tmp_path / "run", steps=2)
    folder = method.save_pretrained(tmp_path / "hub")

    views = method_views(method)
    backbone = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    published = method.eval().published
    with torch.no_grad():
        torch.testing.assert_close(backbone(views[0]), published(views[0]), rtol=0, atol=0)

    restored = ssl_hub.load_method(folder)
    assert type(restored) is type(method)
    assert restored.config == method.config
    assert restored.hub_info["data_config"]["input_size"] == [3, 32, 32]  # what pretrain trained on
    original_state, restored_state = method.state_dict(), restored.state_dict()
    assert original_state.keys() == restored_state.keys()
    for key, value in original_state.items():
        torch.testing.assert_close(restored_state[key], value, rtol=0, atol=0, msg=key)
    method.train()
    restored.train()
    with torch.no_grad():
        torch.testing.assert_close(restored(views=views).loss, method(views=views).loss, rtol=0, atol=0)


def test_methods_that_never_train_the_class_token_publish_the_mean_patch_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pooling = {name for name in METHODS if ssl_hub.get_method_class(name).backbone_defaults.get("global_pool")}
    assert pooling == {"aim", "ijepa", "simmim"}
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for name in sorted(pooling):
        method = create(name, "test_vit")
        published = method.published.eval()
        with torch.no_grad():
            patch_tokens = published.forward_features(images)[:, published.num_prefix_tokens :]  # (B, N, D)
            torch.testing.assert_close(published(images), published.fc_norm(patch_tokens.mean(dim=1)))
        caplog.clear()
        with caplog.at_level("WARNING", logger="ssl_hub.methods.base"):
            chosen = create(name, "test_vit", backbone_kwargs={"global_pool": "token"})  # the user's choice wins
            given = create(name, timm.create_model("test_vit", num_classes=0))  # an instance is left as it is
        assert chosen.backbone.global_pool == given.backbone.global_pool == "token"
        assert sum("trains no class token" in record.message for record in caplog.records) == 2, name
    assert create("mae", "test_vit").backbone.global_pool == "token"  # MAE's decoder trains the class token


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ssl_hub.create_method("dinov2", backbone="test_vit", centering="softmax"), "DINOv2: centering"),
        (lambda: ssl_hub.create_method("ijepa", backbone="test_vit", loss_type="cosine"), "I-JEPA: loss_type"),
        (
            lambda: ssl_hub.create_method("vicregl", backbone="test_resnet", projection_norm="group"),
            "VICRegL: projection_norm",
        ),
        (
            lambda: ssl_hub.create_method("densecl", backbone="test_resnet", dense_queue_keys="all"),
            "DenseCL: dense_queue_keys",
        ),
        (lambda: ssl_hub.losses.DenseCLLoss(dense_queue_keys="all"), "DenseCLLoss: dense_queue_keys"),
        (lambda: ssl_hub.losses.IJEPALoss(loss_type="cosine"), "IJEPALoss: loss_type"),
        (lambda: ssl_hub.losses.IBOTPatchLoss(center_mode="median"), "IBOTPatchLoss: center_mode"),
    ],
)
def test_a_choice_outside_its_choices_is_refused_naming_them(build: Any, message: str) -> None:
    """Every string option fails the same way: owner, argument, the choices, the value given."""
    with pytest.raises(ValueError, match=rf"^{message} must be one of \w+(, \w+)+, got '\w+'\.$"):
        build()
