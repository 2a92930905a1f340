"""``ssl-hub convert``: real checkpoints in each source format, built here, become hub folders with the same features.

Each test builds a model in the layout its source writes (LightlySSL modules, DINO's student / teacher
MultiCropWrappers, MoCo v3's DistributedDataParallel encoders, MAE's encoder + decoder, torchvision ResNets), saves
it as that source saves it, converts it, and checks that timm (``local-dir:``) and transformers load the folder with
no ssl_hub code and compute the source backbone's features.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import pathlib
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import timm
import torch
import torchvision
from huggingface_hub import ModelCard
from timm.layers import resample_abs_pos_embed
from torch import nn

import ssl_hub
from ssl_hub.cli import main
from ssl_hub.conversion import ConversionError, convert_checkpoint, mocov3, vicregl
from ssl_hub.hub import HubFolderError
from ssl_hub.hub.card import card_is_generated


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random values in every parameter and BatchNorm statistic, so a misplaced tensor changes the features."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            values = torch.randn(tensor.shape, generator=generator) * 0.2
            tensor.copy_(values.abs() + 0.5 if name.endswith("running_var") else values)
    return model.eval()


def tiny(architecture: str, seed: int, **kwargs: Any) -> nn.Module:
    return randomize(timm.create_model(architecture, num_classes=0, **kwargs), seed)


def prefixed(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    return {prefix + key: value for key, value in module.state_dict().items()}


def mlp(*widths: int) -> nn.Sequential:
    """A projection head: Linear, BatchNorm, ReLU, ..., Linear."""
    layers: list[nn.Module] = []
    for width_in, width_out in itertools.pairwise(widths):
        layers += [nn.Linear(width_in, width_out), nn.BatchNorm1d(width_out), nn.ReLU()]
    return nn.Sequential(*layers[:-2])


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))


def check_folder(folder: Path, expected: torch.Tensor, images: torch.Tensor, atol: float = 0.0) -> dict[str, Any]:
    """The folder loads through timm and transformers with the expected features (to ``atol`` where the source's
    code computes them another way); returns its config.json."""
    from transformers import AutoModel

    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", "README.md"}
    with torch.no_grad():
        model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
        torch.testing.assert_close(model(images), expected, rtol=0, atol=atol)
        encoder = AutoModel.from_pretrained(folder).eval()
        # the same weights at other memory alignments: oneDNN may round float32 differently (see test_hub_folder)
        pooled = encoder(pixel_values=images).pooler_output
        torch.testing.assert_close(pooled, expected, rtol=1e-5, atol=max(atol, 1e-6))
    config = json.loads((folder / "config.json").read_text())
    assert config["num_classes"] == 0
    assert config["ssl_hub"]["training"] is None
    return config


def check_card(folder: Path, *texts: str) -> ModelCard:
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "timm"
    assert card_is_generated((folder / "README.md").read_text("utf-8"))
    assert "## Conversion" in card.text
    assert "## Training" not in card.text
    assert "Only the backbone was converted: there is no `ssl/` folder" in card.text
    for text in texts:
        assert text in card.text, text
    return card


# LightlySSL


class LightlyBYOL(nn.Module):
    """LightlySSL's examples/pytorch_lightning/byol.py: a torchvision ResNet-18 as nn.Sequential, heads, EMA copies."""

    def __init__(self) -> None:
        super().__init__()
        resnet = torchvision.models.resnet18(weights=None)
        self.backbone = randomize(nn.Sequential(*list(resnet.children())[:-1]), seed=1)
        self.projection_head = mlp(512, 64, 16)
        self.prediction_head = mlp(16, 64, 16)
        self.backbone_momentum = randomize(copy.deepcopy(self.backbone), seed=2)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)


def lightning_checkpoint(state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """What Lightning's Trainer writes to a .ckpt."""
    return {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.5.0",
        "state_dict": state_dict,
        "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 3}}}},
        "callbacks": {},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.06, "params": [0, 1]}]}],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": {"lr": 0.06},
    }


def test_lightly_lightning_checkpoint_of_a_sequential_resnet(tmp_path: Path, images: torch.Tensor) -> None:
    model = LightlyBYOL().eval()
    path = tmp_path / "epoch=3-step=120.ckpt"
    torch.save(lightning_checkpoint(model.state_dict()), path)

    result = convert_checkpoint(path, "lightly", tmp_path / "hub", method="byol")  # resnet18, from its weights

    assert result.architecture == "resnet18"
    assert result.prefix == "backbone."
    assert [group["keys"] for group in result.dropped_groups] == [
        "projection_head.*",
        "prediction_head.*",
        "backbone_momentum.*",
        "projection_head_momentum.*",
    ]
    assert set(result.ignored_entries) >= {"optimizer_states", "hyper_parameters", "epoch"}
    with torch.no_grad():
        expected = model.backbone(images).flatten(1)
    config = check_folder(tmp_path / "hub", expected, images)
    record = config["ssl_hub"]
    assert record["method"] == "byol"
    assert record["converted_from"]["key_names"].startswith("nn.Sequential child indices renamed")
    assert record["license"] is None
    card = check_card(tmp_path / "hub", "`epoch=3-step=120.ckpt`", "a LightlySSL checkpoint", "`backbone_momentum.*`")
    assert {"self-supervised", "byol", "resnet18"} <= set(card.data.tags)
    assert card.data.license is None


class LightlyDINO(nn.Module):
    """LightlySSL's DINO example over a timm ViT: student and teacher backbones and heads."""

    def __init__(self) -> None:
        super().__init__()
        self.student_backbone = tiny("test_vit", seed=3)
        self.student_head = mlp(64, 32, 16)
        self.teacher_backbone = tiny("test_vit", seed=4)
        self.teacher_head = mlp(64, 32, 16)


class LightlyMAE(nn.Module):
    """LightlySSL's MAE over a timm ViT (MaskedVisionTransformerTIMM keeps it as ``vit``), inside a wrapper."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.vit = tiny("test_vit", seed=5)
        self.backbone.mask_token = nn.Parameter(torch.zeros(1, 1, 64))
        self.decoder = mlp(64, 32)
        self.prediction_head = nn.Linear(32, 768)


@pytest.mark.parametrize(
    ("layout", "backbone_prefix", "dropped"),
    [
        ("dino state dict", "student_backbone.", ["student_head.*", "teacher_backbone.*", "teacher_head.*"]),
        (
            "mae lightning module",
            "model.backbone.vit.",
            ["model.backbone.mask_token", "model.decoder.*", "model.prediction_head.*"],
        ),
    ],
)
def test_lightly_timm_backbones_are_found_by_their_prefix(
    tmp_path: Path, images: torch.Tensor, layout: str, backbone_prefix: str, dropped: list[str]
) -> None:
    path = tmp_path / "model.pt"
    if layout == "dino state dict":
        model: nn.Module = LightlyDINO()
        torch.save(model.state_dict(), path)  # torch.save(model.state_dict()), as the examples' plain loops do
        source = model.student_backbone
    else:
        model = LightlyMAE()
        torch.save(lightning_checkpoint(prefixed("model.", model)), path)  # a LightningModule wrapping the model
        source = model.backbone.vit

    result = convert_checkpoint(path, "lightly", tmp_path / "hub", backbone="test_vit")

    assert result.prefix == backbone_prefix
    assert [group["keys"] for group in result.dropped_groups] == dropped
    with torch.no_grad():
        check_folder(tmp_path / "hub", source(images), images)
    assert ssl_hub.hub.folder.check_backbone_folder(tmp_path / "hub")["ssl_hub"]["method"] is None
    card = check_card(tmp_path / "hub", "not recorded in the checkpoint", f"tensors under `{backbone_prefix}`")
    assert "self-supervised" not in card.data.tags  # no method was named: nothing claims how it was trained
    assert "## Citation" not in card.text


def test_lightly_prefix_can_be_named(tmp_path: Path, images: torch.Tensor) -> None:
    model = LightlyDINO()
    torch.save(model.state_dict(), tmp_path / "dino.pt")
    result = convert_checkpoint(
        tmp_path / "dino.pt", "lightly", tmp_path / "hub", backbone="test_vit", prefix="teacher_backbone."
    )
    assert result.prefix == "teacher_backbone."
    with torch.no_grad():
        check_folder(tmp_path / "hub", model.teacher_backbone(images), images)


# Official DINO


def dino_training_checkpoint(student: nn.Module, teacher: nn.Module, teacher_ddp: bool) -> dict[str, Any]:
    """main_dino.py's save_dict: MultiCropWrapper(backbone, head); the student (and a ResNet teacher) under DDP."""
    head = {"head.mlp.0.weight": torch.randn(32, 64), "head.last_layer.weight_g": torch.ones(16, 1)}
    student_state = {**prefixed("module.backbone.", student), **{f"module.{k}": v for k, v in head.items()}}
    teacher_prefix = "module." if teacher_ddp else ""
    teacher_state = {
        **prefixed(teacher_prefix + "backbone.", teacher),
        **{teacher_prefix + k: v for k, v in head.items()},
    }
    return {
        "student": student_state,
        "teacher": teacher_state,
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.0005, "params": [0]}]},
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_small", patch_size=16, out_dim=65536, lr=0.0005),
        "dino_loss": {"center": torch.zeros(1, 16)},
    }


@pytest.mark.parametrize(
    ("architecture", "encoder", "prefix"),
    [
        ("test_vit", None, "teacher.backbone."),
        ("test_vit", "student", "student.module.backbone."),
        ("test_resnet", None, "teacher.module.backbone."),
    ],
)
def test_dino_training_checkpoint(
    tmp_path: Path, images: torch.Tensor, architecture: str, encoder: str | None, prefix: str
) -> None:
    kwargs = {"img_size": 64} if architecture == "test_vit" else {}  # a ViT trained at 64 px, not timm's 160
    student, teacher = tiny(architecture, seed=10, **kwargs), tiny(architecture, seed=11, **kwargs)
    path = tmp_path / "checkpoint.pth"
    torch.save(dino_training_checkpoint(student, teacher, teacher_ddp=architecture == "test_resnet"), path)

    result = convert_checkpoint(path, "dino", tmp_path / "hub", backbone=architecture, encoder=encoder)

    assert result.prefix == prefix
    chosen = student if encoder == "student" else teacher
    with torch.no_grad():
        config = check_folder(tmp_path / "hub", chosen(images), images)
    if architecture == "test_vit":
        assert config["model_args"]["img_size"] == [64, 64]
        assert config["pretrained_cfg"]["input_size"] == [3, 64, 64]
    assert config["pretrained_cfg"]["crop_pct"] == 0.875
    assert config["pretrained_cfg"]["interpolation"] == "bicubic"
    record = config["ssl_hub"]
    assert record["method"] == "dino"
    assert record["license"] == "apache-2.0"
    dropped = {group["keys"] for group in record["converted_from"]["dropped"]}
    other = "student" if encoder is None else "teacher"
    assert f"{other}.*" in dropped
    assert any(group.endswith("head.*") for group in dropped)
    assert record["converted_from"]["ignored_entries"] == ["optimizer", "epoch", "args", "dino_loss"]
    card = check_card(tmp_path / "hub", "an official DINO checkpoint (facebookresearch/dino)", "`checkpoint.pth`")
    assert {"dino", "self-supervised"} <= set(card.data.tags)
    assert ssl_hub.get_method_class("dino").paper.bibtex in card.text


def test_dino_released_backbone_with_architecture_from_its_weights(tmp_path: Path) -> None:
    # dino_resnet50_pretrain.pth is a bare torchvision ResNet-50 state dict; a ResNet-18 keeps the test small
    resnet = randomize(torchvision.models.resnet18(weights=None), seed=12)
    resnet.fc = nn.Identity()
    torch.save(resnet.state_dict(), tmp_path / "dino_resnet18_pretrain.pth")

    result = convert_checkpoint(tmp_path / "dino_resnet18_pretrain.pth", "dino", tmp_path / "hub")

    assert result.architecture == "resnet18"
    assert result.prefix == ""
    assert result.dropped == []
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        check_folder(tmp_path / "hub", resnet(images), images)
    check_card(
        tmp_path / "hub",
        "| Dropped | nothing |",
        "| Weights taken | the backbone the file holds: all 120 tensors |",
    )


# Official MoCo v3


def mocov3_checkpoint(base: nn.Module, momentum: nn.Module, projector: str, arch: str) -> dict[str, Any]:
    """main_moco.py's checkpoint: the DDP-wrapped MoCo module, each encoder's classifier replaced by a projector."""
    width = base.num_features
    heads = {f"{projector}.{k}": v for k, v in mlp(width, 32, 16).state_dict().items()}
    state = {
        **prefixed("module.base_encoder.", base),
        **{f"module.base_encoder.{k}": v for k, v in heads.items()},
        **prefixed("module.momentum_encoder.", momentum),
        **{f"module.momentum_encoder.{k}": v for k, v in heads.items()},
        **prefixed("module.predictor.", mlp(16, 32, 16)),
    }
    return {"epoch": 300, "arch": arch, "state_dict": state, "optimizer": {"state": {}}, "scaler": {"scale": 1.0}}


@pytest.mark.parametrize(
    ("architecture", "projector", "arch", "encoder"),
    [
        ("test_vit", "head", "vit_small", None),
        ("test_resnet", "fc", "resnet50", None),
        ("test_resnet", "fc", "resnet50", "momentum"),
    ],
)
def test_mocov3_checkpoint(
    tmp_path: Path, images: torch.Tensor, architecture: str, projector: str, arch: str, encoder: str | None
) -> None:
    base, momentum = tiny(architecture, seed=20), tiny(architecture, seed=21)
    torch.save(mocov3_checkpoint(base, momentum, projector, arch), tmp_path / "vit-s-300ep.pth.tar")

    result = convert_checkpoint(
        tmp_path / "vit-s-300ep.pth.tar", "mocov3", tmp_path / "hub", backbone=architecture, encoder=encoder
    )

    chosen = momentum if encoder == "momentum" else base
    other = "base" if encoder == "momentum" else "momentum"
    assert result.prefix == f"module.{encoder or 'base'}_encoder."
    assert {group["keys"] for group in result.dropped_groups} == {
        f"module.{encoder or 'base'}_encoder.{projector}.*",
        f"module.{other}_encoder.*",
        "module.predictor.*",
    }
    with torch.no_grad():
        config = check_folder(tmp_path / "hub", chosen(images), images)
    assert config["ssl_hub"]["method"] == "moco"
    assert config["ssl_hub"]["method_config"] == {"version": 3}
    assert config["ssl_hub"]["license"] == "cc-by-nc-4.0"
    card = check_card(tmp_path / "hub", "MoCo (`moco`, version=3)")
    assert f'ssl_hub.create_method("moco", backbone="local-dir:{tmp_path / "hub"}", version=3)' in card.text
    assert card.data.license == "cc-by-nc-4.0"


def test_mocov3_vit_small_gets_its_twelve_heads(tmp_path: Path, images: torch.Tensor, monkeypatch) -> None:
    """MoCo v3's ViT-S has 12 heads, timm's 6, and heads leave no trace in the weights: the converter records them.

    Checked end to end on a tiny ViT standing in for ViT-S: 64 wide with 4 heads where timm's test_vit has 2.
    """
    monkeypatch.setattr(mocov3, "_SMALL_WIDTH", 64)
    monkeypatch.setattr(mocov3, "_SMALL_HEADS", 4)
    base = tiny("test_vit", seed=22, num_heads=4)
    torch.save(mocov3_checkpoint(base, base, "head", "vit_small"), tmp_path / "moco.pth.tar")
    convert_checkpoint(tmp_path / "moco.pth.tar", "mocov3", tmp_path / "hub", backbone="test_vit")
    with torch.no_grad():
        config = check_folder(tmp_path / "hub", base(images), images)  # 2 heads would compute other features
    assert config["model_args"]["num_heads"] == 4


def test_mocov3_names_vit_small_with_twelve_heads() -> None:
    width = 384
    state = {
        "module.base_encoder.patch_embed.proj.weight": torch.zeros(width, 3, 16, 16),
        "module.base_encoder.cls_token": torch.zeros(1, 1, width),
        "module.base_encoder.pos_embed": torch.zeros(1, 197, width),
    }
    extraction = mocov3.extract(
        {"arch": "vit_small", "state_dict": state}, architecture=None, model_args={}, encoder=None, prefix=None
    )
    assert extraction.architecture == "vit_small_patch16_224"
    assert extraction.model_args == {"num_heads": 12}
    with pytest.raises(ConversionError, match="vit_conv_small"):
        mocov3.extract(
            {"arch": "vit_conv_small", "state_dict": state}, architecture=None, model_args={}, encoder=None, prefix=None
        )


# Official MAE


def test_mae_pretraining_checkpoint_drops_the_decoder(tmp_path: Path, images: torch.Tensor) -> None:
    encoder = tiny("test_vit", seed=30, img_size=64)
    decoder = {
        "mask_token": torch.zeros(1, 1, 32),
        "decoder_embed.weight": torch.randn(32, 64),
        "decoder_pos_embed": torch.zeros(1, 17, 32),
        "decoder_blocks.0.norm1.weight": torch.ones(32),
        "decoder_norm.weight": torch.ones(32),
        "decoder_pred.weight": torch.randn(768, 32),
    }
    checkpoint = {
        "model": {**encoder.state_dict(), **decoder},
        "optimizer": {"state": {}},
        "epoch": 799,
        "scaler": {"scale": 65536.0},
        "args": argparse.Namespace(model="mae_vit_base_patch16", mask_ratio=0.75, norm_pix_loss=True),
    }
    torch.save(checkpoint, tmp_path / "checkpoint-799.pth")

    result = convert_checkpoint(tmp_path / "checkpoint-799.pth", "mae", tmp_path / "hub", backbone="test_vit")

    assert sorted(result.dropped) == sorted(decoder)
    with torch.no_grad():
        config = check_folder(tmp_path / "hub", encoder(images), images)
    assert config.get("global_pool", "token") == "token"  # the class token after the pretrained norm
    assert config["ssl_hub"]["method"] == "mae"
    check_card(tmp_path / "hub", "`decoder_blocks.*` (1)", "`mask_token` (1)", "MAE")


def test_mae_fine_tuned_checkpoint_keeps_global_average_pooling(tmp_path: Path, images: torch.Tensor) -> None:
    # models_vit.py with global_pool=True: fc_norm instead of norm, average of the patch tokens, a classifier
    fine_tuned = randomize(timm.create_model("test_vit", num_classes=10, global_pool="avg", img_size=64), seed=31)
    torch.save({"model": fine_tuned.state_dict()}, tmp_path / "mae_finetuned_vit_test.pth")

    result = convert_checkpoint(tmp_path / "mae_finetuned_vit_test.pth", "mae", tmp_path / "hub", backbone="test_vit")

    assert result.model_args["global_pool"] == "avg"
    assert sorted(result.dropped) == ["head.bias", "head.weight"]
    with torch.no_grad():
        expected = fine_tuned.forward_head(fine_tuned.forward_features(images), pre_logits=True)
        config = check_folder(tmp_path / "hub", expected, images)
    assert config["model_args"]["global_pool"] == "avg"


# VICRegL


class OfficialChannelsFirstLayerNorm(nn.Module):
    """VICRegL's convnext.LayerNorm with data_format="channels_first": the norm over channels at each location."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        variance = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(variance + 1e-6)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class OfficialConvNeXtBlock(nn.Module):
    """VICRegL's convnext.Block: depthwise 7x7, norm, 4x MLP, layer scale gamma only when its init value is > 0."""

    def __init__(self, dim: int, layer_scale: bool) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.ones(dim)) if layer_scale else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))  # (B, H, W, C)
        y = self.pwconv2(self.act(self.pwconv1(y)))
        if self.gamma is not None:
            y = self.gamma * y
        return x + y.permute(0, 3, 1, 2)


class OfficialVICRegLConvNeXt(nn.Module):
    """VICRegL's convnext.ConvNeXt: its names, and the final norm at each location before the average pooling."""

    def __init__(self, depths: tuple[int, ...], dims: tuple[int, ...], layer_scale: bool = False) -> None:
        super().__init__()
        stem = nn.Sequential(nn.Conv2d(3, dims[0], kernel_size=4, stride=4), OfficialChannelsFirstLayerNorm(dims[0]))
        downsamples = [
            nn.Sequential(OfficialChannelsFirstLayerNorm(dims[i]), nn.Conv2d(dims[i], dims[i + 1], 2, stride=2))
            for i in range(3)
        ]
        self.downsample_layers = nn.ModuleList([stem, *downsamples])
        self.stages = nn.ModuleList(
            nn.Sequential(*[OfficialConvNeXtBlock(dim, layer_scale) for _ in range(depth)])
            for depth, dim in zip(depths, dims, strict=True)
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for downsample, stage in zip(self.downsample_layers, self.stages, strict=True):
            x = stage(downsample(x))
        tokens = self.norm(x.flatten(2).transpose(1, 2))  # (B, H * W, C)
        return tokens, tokens.mean(1)


def vicregl_training_checkpoint(backbone: nn.Module, width: int) -> dict[str, Any]:
    """main_vicregl.py's model.pth: the DDP-wrapped VICRegL module (backbone, both expanders, the online probe)."""
    state = {
        **prefixed("module.backbone.", backbone),
        **prefixed("module.projector.", mlp(width, 32, 16)),
        **prefixed("module.maps_projector.", mlp(width, 16, 8)),
        **prefixed("module.classifier.", nn.Linear(width, 10)),
    }
    return {"epoch": 300, "model": state, "optimizer": {"state": {}}}


@pytest.mark.parametrize(("layout", "layer_scale"), [("released backbone", False), ("training checkpoint", True)])
def test_vicregl_convnext_normalises_each_location_before_pooling(
    tmp_path: Path, images: torch.Tensor, layout: str, layer_scale: bool
) -> None:
    dims = (8, 16, 24, 32)
    official = randomize(OfficialVICRegLConvNeXt((1, 1, 2, 1), dims, layer_scale), seed=35)
    checkpoint = official.state_dict() if layout == "released backbone" else vicregl_training_checkpoint(official, 32)
    torch.save(checkpoint, tmp_path / "convnext_alpha0.75.pth")

    result = convert_checkpoint(
        tmp_path / "convnext_alpha0.75.pth",
        "vicregl",
        tmp_path / "hub",
        backbone="convnext_tiny",
        model_args={"depths": [1, 1, 2, 1], "dims": list(dims)},
    )

    assert result.model_args["head_norm_first"] is True
    assert result.num_tensors == len(official.state_dict())  # every official tensor used (a gamma of ones added)
    assert result.dropped == [] or layout == "training checkpoint"
    if layout == "training checkpoint":
        assert result.prefix == "module.backbone."
        assert {group["keys"] for group in result.dropped_groups} == {
            "module.projector.*",
            "module.maps_projector.*",
            "module.classifier.*",
        }
        assert result.ignored_entries == ["epoch", "optimizer"]
    with torch.no_grad():
        tokens, pooled = official(images)
        config = check_folder(tmp_path / "hub", pooled, images, atol=1e-5)  # its channels-first norm is hand-written
        model = timm.create_model(f"local-dir:{tmp_path / 'hub'}", pretrained=True).eval()
        feature_map = model.forward_features(images)  # (B, C, H, W): the maps VICRegL's local loss trained
        torch.testing.assert_close(feature_map.flatten(2).transpose(1, 2), tokens, rtol=0, atol=1e-5)
    assert config["ssl_hub"]["method"] == "vicregl"
    assert config["ssl_hub"]["license"] == "cc-by-nc-4.0"
    assert config["pretrained_cfg"]["crop_pct"] == 0.875
    check_card(tmp_path / "hub", "VICRegL", "head_norm_first" if layer_scale else "a layer scale of ones added")


def test_vicregl_resnet_training_checkpoint_is_torchvisions(tmp_path: Path, images: torch.Tensor) -> None:
    """VICRegL's resnet.py pads the image by 1 zero pixel, then its stem convolution by 2: torchvision's 3."""
    resnet = randomize(torchvision.models.resnet18(weights=None), seed=36)
    resnet.fc = nn.Identity()
    torch.save(vicregl_training_checkpoint(resnet, 512), tmp_path / "resnet18_fullckpt.pth")

    result = convert_checkpoint(tmp_path / "resnet18_fullckpt.pth", "vicregl", tmp_path / "hub")

    assert result.architecture == "resnet18"
    assert result.model_args == {}
    official_stem = copy.deepcopy(resnet)
    official_stem.conv1.padding = (2, 2)
    with torch.no_grad():
        expected = official_stem(nn.functional.pad(images, (1, 1, 1, 1)))
        check_folder(tmp_path / "hub", expected, images, atol=1e-5)


def test_vicregl_convnext_sizes_are_named_from_the_weights() -> None:
    def official_state(depths: tuple[int, ...], width: int) -> dict[str, torch.Tensor]:
        state = {"downsample_layers.0.0.weight": torch.empty(width, 3, 4, 4)}
        for stage, depth in enumerate(depths):
            state.update({f"stages.{stage}.{block}.dwconv.weight": torch.empty(0) for block in range(depth)})
        return state

    assert vicregl._convnext_architecture(official_state((3, 3, 27, 3), 96)) == "convnext_small"
    assert vicregl._convnext_architecture(official_state((3, 3, 27, 3), 128)) == "convnext_base"
    assert vicregl._convnext_architecture(official_state((3, 3, 27, 3), 256)) == "convnext_xlarge"
    assert vicregl._convnext_architecture(official_state((1, 1, 2, 1), 8)) is None


# torchvision


@pytest.mark.parametrize("layout", ["state dict", "reference script checkpoint under DDP"])
def test_torchvision_resnet(tmp_path: Path, images: torch.Tensor, layout: str) -> None:
    resnet = randomize(torchvision.models.resnet18(weights=None), seed=40)
    state = resnet.state_dict()
    if layout == "state dict":
        checkpoint: dict[str, Any] = state
    else:  # torchvision's references/classification/train.py, the model wrapped in DistributedDataParallel
        checkpoint = {"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 89, "args": argparse.Namespace()}
    torch.save(checkpoint, tmp_path / "resnet18.pth")

    result = convert_checkpoint(tmp_path / "resnet18.pth", "torchvision", tmp_path / "hub", method="barlowtwins")

    assert result.architecture == "resnet18"
    assert [group["keys"] for group in result.dropped_groups] == ["fc.*" if layout == "state dict" else "module.fc.*"]
    resnet.fc = nn.Identity()
    with torch.no_grad():
        config = check_folder(tmp_path / "hub", resnet(images), images)
    assert config["pretrained_cfg"]["interpolation"] == "bilinear"
    assert config["ssl_hub"]["method"] == "barlowtwins"


def test_safetensors_input_and_image_size(tmp_path: Path) -> None:
    vit = tiny("test_vit", seed=41, dynamic_img_size=False, img_size=64)
    safetensors.torch.save_file(vit.state_dict(), str(tmp_path / "vit.safetensors"))
    convert_checkpoint(
        tmp_path / "vit.safetensors",
        "torchvision",
        tmp_path / "hub",
        backbone="test_vit",
        model_args={"dynamic_img_size": False},
        image_size=32,
    )
    config = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert config["model_args"]["img_size"] == [32, 32]  # the position embeddings resampled to 32 px
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    model = timm.create_model(f"local-dir:{tmp_path / 'hub'}", pretrained=True).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 64)
    # Every weight is the source's, the position embedding resampled from the 4 x 4 patch grid to 2 x 2 as timm does.
    source, converted = vit.state_dict(), model.state_dict()
    assert set(converted) == set(source)
    for name, value in source.items():
        if name != "pos_embed":
            torch.testing.assert_close(converted[name], value, rtol=0, atol=0, msg=name)
    resampled = resample_abs_pos_embed(vit.pos_embed.detach(), new_size=(2, 2), old_size=(4, 4), num_prefix_tokens=1)
    assert converted["pos_embed"].shape == (1, 1 + 4, 64)
    torch.testing.assert_close(converted["pos_embed"], resampled)


# What a converted folder is to ssl_hub


def test_a_converted_folder_starts_a_new_method_but_has_no_method_state(tmp_path: Path, images: torch.Tensor) -> None:
    resnet = randomize(torchvision.models.resnet18(weights=None), seed=50)
    torch.save(resnet.state_dict(), tmp_path / "resnet18.pth")
    folder = convert_checkpoint(tmp_path / "resnet18.pth", "torchvision", tmp_path / "hub").output_dir
    with pytest.raises(HubFolderError, match="ssl is missing: this folder holds a backbone only"):
        ssl_hub.load_method(folder)
    method = ssl_hub.create_method("simclr", backbone=f"local-dir:{folder}").eval()
    resnet.fc = nn.Identity()
    with torch.no_grad():
        torch.testing.assert_close(method.backbone(images), resnet(images), rtol=0, atol=0)


# The command line


def test_cli_converts_and_reports_what_it_dropped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    student, teacher = tiny("test_vit", seed=60), tiny("test_vit", seed=61)
    torch.save(dino_training_checkpoint(student, teacher, teacher_ddp=False), tmp_path / "checkpoint.pth")
    out = tmp_path / "hub"
    code = main(
        [
            "convert",
            "--from",
            "dino",
            str(tmp_path / "checkpoint.pth"),
            "--output-dir",
            str(out),
            "--backbone",
            "test_vit",
            "--license",
            "mit",
            "--base-model",
            "facebook/dino-vits16",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "Converted the teacher's backbone (78 tensors under teacher.backbone.)" in printed
    assert "teacher.head.* (2), student.* (" in printed
    assert f"Hub folder written to {out}" in printed
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        check_folder(out, teacher(images), images)
    card = check_card(out, "[facebook/dino-vits16](https://huggingface.co/facebook/dino-vits16)")
    assert card.data.license == "mit"
    assert card.data.base_model == "facebook/dino-vits16"


def _vit_checkpoint(path: Path) -> Path:
    torch.save({"model": tiny("test_vit", seed=70).state_dict()}, path)
    return path


class Unpicklable:
    """An object only pickle can load."""


@pytest.mark.parametrize(
    ("case", "message"),
    [
        (
            "unknown format",
            "Unknown checkpoint format 'simclr'; one of lightly, dino, mocov3, mae, vicregl, torchvision.",
        ),
        ("missing file", "does not exist or is not a file"),
        ("not a checkpoint", "is not a PyTorch checkpoint"),
        (
            "text read as pickle opcodes",
            "is not a PyTorch checkpoint, or is truncated (torch.load: Unsupported operand",
        ),
        ("truncated", "is not a PyTorch checkpoint, or is truncated"),
        ("wrong architecture", "do not fit timm's test_resnet: missing ("),
        ("unknown architecture", "has no architecture 'vit_smal_patch16_224'. Close matches: vit_small_patch16_224"),
        ("unrecognised weights", "are not a standard ViT or ResNet, so their timm architecture is unknown"),
        ("no backbone", "No key prefix holds the weights of timm's test_vit"),
        ("wrong encoder", "--encoder 'student' does not apply to mocov3 checkpoints (one of base, momentum)."),
        ("method of another format", "mae checkpoints come from mae, not dino: leave out --method."),
        ("needs pickle", "pass --allow-pickle"),
        ("model arguments timm refuses", "timm's test_vit does not build with the model arguments {'num_heads': 5}"),
        ("model arguments not JSON", "--model-args is not valid JSON"),
        ("folder of a trained method", "holds ssl/, the state of a trained method"),
    ],
)
def test_cli_errors_are_clear_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, message: str
) -> None:
    vit = _vit_checkpoint(tmp_path / "vit.pth")
    args = ["--from", "mae", str(vit), "--output-dir", str(tmp_path / "hub"), "--backbone", "test_vit"]
    if case == "unknown format":
        args[1] = "simclr"
    elif case == "missing file":
        args[2] = str(tmp_path / "nothing.pth")
    elif case == "not a checkpoint":
        (tmp_path / "notes.pth").write_text("these are not weights")
        args[2] = str(tmp_path / "notes.pth")
    elif case == "text read as pickle opcodes":
        (tmp_path / "hostname").write_text("vm\n")
        args[2] = str(tmp_path / "hostname")
    elif case == "truncated":
        (tmp_path / "half.pth").write_bytes(vit.read_bytes()[:2000])
        args[2] = str(tmp_path / "half.pth")
    elif case == "wrong architecture":
        args[-1] = "test_resnet"
    elif case == "unknown architecture":
        args[-1] = "vit_smal_patch16_224"
    elif case == "unrecognised weights":
        args = args[:-2]
    elif case == "no backbone":
        torch.save({"state_dict": prefixed("projection_head.", mlp(8, 4))}, tmp_path / "heads.ckpt")
        args = ["--from", "lightly", str(tmp_path / "heads.ckpt"), *args[3:]]
    elif case == "wrong encoder":
        args = ["--from", "mocov3", *args[2:], "--encoder", "student"]
    elif case == "method of another format":
        args += ["--method", "dino"]
    elif case == "needs pickle":
        torch.save({"model": torch.load(vit)["model"], "run": pathlib.PurePosixPath("runs/1")}, vit)
    elif case == "model arguments timm refuses":
        args += ["--model-args", '{"num_heads": 5}']
    elif case == "model arguments not JSON":
        args += ["--model-args", "num_heads=5"]
    elif case == "folder of a trained method":
        (tmp_path / "hub" / "ssl").mkdir(parents=True)
    assert main(["convert", *args]) == 1
    error = capsys.readouterr().err
    assert error.startswith("ssl-hub convert: error: ")
    assert message in error
    assert "Traceback" not in error
    if case == "wrong architecture":
        assert "conv1.0.weight" in error
        assert "Pass the architecture they were trained with as --backbone" in error


def test_allow_pickle_loads_what_weights_only_refuses(tmp_path: Path) -> None:
    vit = tiny("test_vit", seed=71)
    torch.save({"model": vit.state_dict(), "run": pathlib.PurePosixPath("runs/1")}, tmp_path / "mae.pth")
    with pytest.raises(ConversionError, match=r"holds Python objects \(pathlib.PurePosixPath\)"):
        convert_checkpoint(tmp_path / "mae.pth", "mae", tmp_path / "hub", backbone="test_vit")
    result = convert_checkpoint(tmp_path / "mae.pth", "mae", tmp_path / "hub", backbone="test_vit", allow_pickle=True)
    assert result.ignored_entries == ["run"]
