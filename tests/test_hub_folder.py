"""The hub folder: what timm and transformers load from it with no ssl_hub code, and the errors it raises."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from conftest import TINY_BACKBONES, random_images
from huggingface_hub import ModelCard
from PIL import Image
from test_methods import train_a_few_steps

import ssl_hub
from ssl_hub.hub import HubFolderError


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[ssl_hub.SSLMethod, Path]]:
    """A briefly trained SimCLR per tiny backbone, and its hub folder."""
    folders = {}
    for backbone in TINY_BACKBONES:
        root = tmp_path_factory.mktemp(backbone)
        method = ssl_hub.create_method("simclr", backbone=backbone)
        train_a_few_steps(method, root / "run", steps=2)
        folders[backbone] = (method.eval(), method.save_pretrained(root / "hub"))
    return folders


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def pooled(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.forward_head(model.forward_features(x), pre_logits=True)


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
def test_timm_local_dir_gives_identical_features(saved, backbone: str, images: torch.Tensor) -> None:
    method, folder = saved[backbone]
    with torch.no_grad():
        expected = method.backbone(images)
        model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
        torch.testing.assert_close(model(images), expected, rtol=0, atol=0)

        classifier = timm.create_model(f"local-dir:{folder}", pretrained=True, num_classes=5).eval()
        assert classifier(images).shape == (3, 5)
        torch.testing.assert_close(pooled(classifier, images), expected, rtol=0, atol=0)


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
def test_timm_features_only_loads_the_pretrained_weights(saved, backbone: str, images: torch.Tensor) -> None:
    method, folder = saved[backbone]
    features = timm.create_model(f"local-dir:{folder}", pretrained=True, features_only=True).eval()
    # feature wrappers flatten module names ("stem.0" -> "stem_0") or nest the model ("model."): compare by name
    trained = {k.replace(".", "_"): v for k, v in method.backbone.state_dict().items()}
    state = {k.removeprefix("model.").replace(".", "_"): v for k, v in features.state_dict().items()}
    shared = [k for k in state if k in trained]
    assert len(shared) >= 0.9 * len(state)
    for key in shared:
        torch.testing.assert_close(state[key], trained[key], rtol=0, atol=0, msg=key)
    with torch.no_grad():
        maps = features(images)
    assert all(m.ndim == 4 and m.shape[0] == 3 for m in maps)


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
def test_transformers_loads_identical_features_and_finetunes(saved, backbone: str, images, tmp_path) -> None:
    from transformers import (
        AutoImageProcessor,
        AutoModel,
        AutoModelForImageClassification,
        Trainer,
        TrainingArguments,
    )

    method, folder = saved[backbone]
    with torch.no_grad():
        expected = method.backbone(images)
        classifier = AutoModelForImageClassification.from_pretrained(folder, num_labels=4).eval()
        encoder = AutoModel.from_pretrained(folder).eval()
        trained = method.backbone.state_dict()
        for model in (classifier, encoder):
            state = {k.removeprefix("timm_model."): v for k, v in model.state_dict().items()}
            for key, value in trained.items():  # the very same weights, bit for bit
                torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=key)
        # Same weights, but transformers' copies sit at other memory alignments, where oneDNN's kernels round
        # float32 differently (seen: 1e-7): features agree to float32 rounding.
        torch.testing.assert_close(pooled(classifier.timm_model, images), expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(encoder(pixel_values=images).pooler_output, expected, rtol=1e-5, atol=1e-6)

    processor = AutoImageProcessor.from_pretrained(folder)
    pictures = [Image.fromarray(a) for a in random_images(8, 28)]
    pixel_values = processor(pictures, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (8, 3, 32, 32)
    rows = [{"pixel_values": p, "labels": i % 4} for i, p in enumerate(pixel_values)]
    head_before = classifier.timm_model.get_classifier().weight.detach().clone()
    trainer = Trainer(
        model=classifier.train(),
        args=TrainingArguments(
            output_dir=str(tmp_path),
            max_steps=2,
            per_device_train_batch_size=4,
            use_cpu=True,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
        ),
        train_dataset=rows,
    )
    output = trainer.train()
    assert np.isfinite(output.training_loss)
    assert not torch.equal(head_before, classifier.timm_model.get_classifier().weight)


def test_config_json_describes_this_model_for_timm_and_transformers(saved) -> None:
    _, folder = saved["test_resnet"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "test_resnet"
    assert config["num_classes"] == 0
    assert "num_classes" not in config.get("model_args", {})  # transformers would pass it twice
    cfg = config["pretrained_cfg"]
    assert cfg["input_size"] == [3, 32, 32]
    assert cfg["crop_pct"] == 1.0
    for foreign in ("license", "origin_url", "paper_ids", "tag", "hf_hub_id", "url"):
        assert foreign not in cfg, f"{foreign} describes timm's supervised checkpoint, not this one"
    block = config["ssl_hub"]
    assert block["method"] == "simclr"
    assert block["method_config"]["temperature"] == 0.5
    assert block["version"] == ssl_hub.__version__


def test_fixed_size_vit_is_resized_for_training_and_reloads_at_that_size(tmp_path: Path) -> None:
    method = ssl_hub.create_method("simclr", backbone="test_vit", backbone_kwargs={"dynamic_img_size": False})
    train_a_few_steps(method, tmp_path / "run", steps=1)  # fits the 160 px ViT to 32 px
    folder = method.save_pretrained(tmp_path / "hub")
    config = json.loads((folder / "config.json").read_text())
    assert config["model_args"]["img_size"] == [32, 32]
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
        torch.testing.assert_close(model(images), method.eval().backbone(images), rtol=0, atol=0)


def test_timm_construction_arguments_reload_through_timm_and_transformers(tmp_path: Path) -> None:
    """A backbone built with timm arguments that change its computation but not its weights' shapes (a dilated
    ResNet, ``output_stride=16``, as small images want): config.json carries them, or the reload would compute at
    stride 32 with the same weights and no error."""
    from transformers import AutoModel

    method = ssl_hub.create_method("simclr", backbone="test_resnet", backbone_kwargs={"output_stride": 16})
    train_a_few_steps(method, tmp_path / "run", steps=1)
    folder = method.save_pretrained(tmp_path / "hub")
    assert json.loads((folder / "config.json").read_text())["model_args"]["output_stride"] == 16
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = method.eval().backbone(images)
        model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
        assert model.forward_features(images).shape[-2:] == (2, 2)  # stride 16; stride 32 would give 1 x 1
        torch.testing.assert_close(model(images), expected, rtol=0, atol=0)
        encoder = AutoModel.from_pretrained(folder).eval()
        torch.testing.assert_close(encoder(pixel_values=images).pooler_output, expected, rtol=1e-5, atol=1e-6)


def test_model_card_parses_and_carries_the_metadata(saved) -> None:
    _, folder = saved["test_vit"]
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "timm"
    assert card.data.license == "apache-2.0"
    assert {"self-supervised", "simclr", "test_vit", "vision_transformer"} <= set(card.data.tags)
    assert f'timm.create_model("local-dir:{folder}", pretrained=True)' in card.text
    assert f'AutoModelForImageClassification.from_pretrained("{folder}", num_labels=10)' in card.text
    assert "@inproceedings{chen2020simclr" in card.text
    assert "| Published weights | the trained backbone (student) |" in card.text  # no EMA teacher, no initial share


def _break(folder: Path, tmp_path: Path, how: str) -> Path:
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    if how == "no config":
        (broken / "config.json").unlink()
    elif how == "bad json":
        (broken / "config.json").write_text('{"architecture": "test_resnet", ')
    elif how == "unknown architecture":
        config = json.loads((broken / "config.json").read_text())
        config["architecture"] = "resnet_from_the_future"
        (broken / "config.json").write_text(json.dumps(config))
    elif how == "truncated weights":
        data = (broken / "model.safetensors").read_bytes()
        (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif how == "truncated ssl weights":
        data = (broken / "ssl" / "model.safetensors").read_bytes()
        (broken / "ssl" / "model.safetensors").write_bytes(data[:100])
    elif how == "no ssl":
        shutil.rmtree(broken / "ssl")
    return broken


@pytest.mark.parametrize(
    ("how", "culprit"),
    [
        ("no config", "config.json is missing"),
        ("bad json", "config.json is not valid JSON"),
        ("unknown architecture", "config.json names architecture 'resnet_from_the_future'"),
        ("truncated weights", "model.safetensors is not a readable safetensors file"),
        ("truncated ssl weights", "ssl/model.safetensors is not a readable safetensors file"),
        ("no ssl", "ssl is missing: this folder holds a backbone only"),
    ],
)
def test_malformed_folders_fail_naming_the_file(saved, tmp_path: Path, how: str, culprit: str) -> None:
    broken = _break(saved["test_resnet"][1], tmp_path, how)
    with pytest.raises(HubFolderError, match=culprit.replace(".", r"\.").replace("(", r"\(")):
        ssl_hub.load_method(broken)


def test_a_published_backbone_starts_a_new_method(saved, images: torch.Tensor) -> None:
    method, folder = saved["test_convnext"]
    continued = ssl_hub.create_method("simclr", backbone=f"local-dir:{folder}").eval()
    with torch.no_grad():
        torch.testing.assert_close(continued.backbone(images), method.backbone(images), rtol=0, atol=0)


def test_a_save_without_a_loss_curve_removes_an_earlier_one(tmp_path: Path) -> None:
    """An untrained method saved over a trained run's folder: its card shows no curve, so the old image goes too
    (a push would upload it beside a card that does not mention it). A hand-edited card keeps it."""
    (tmp_path / "loss_curve.png").write_bytes(b"an earlier run's curve")
    ssl_hub.create_method("simclr", backbone="test_resnet").save_pretrained(tmp_path)
    assert not (tmp_path / "loss_curve.png").exists()
    assert "loss_curve.png" not in (tmp_path / "README.md").read_text()

    (tmp_path / "README.md").write_text("# My notes\n\n![Training loss](loss_curve.png)\n")
    (tmp_path / "loss_curve.png").write_bytes(b"the curve my notes show")
    ssl_hub.create_method("simclr", backbone="test_resnet").save_pretrained(tmp_path)
    assert (tmp_path / "loss_curve.png").read_bytes() == b"the curve my notes show"
