"""The ``ssl-hub`` command, run as users run it: a subprocess."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import random_images
from huggingface_hub import ModelCard
from PIL import Image

import ssl_hub
from ssl_hub.cli import main
from ssl_hub.methods import MethodConfig


def ssl_hub_command(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "ssl_hub.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )


def test_pretrain_on_the_demo_set_writes_a_complete_folder_with_knn_in_the_card(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = ssl_hub_command(
        "pretrain",
        "--method",
        "simclr",
        "--backbone",
        "test_resnet",
        "--output-dir",
        str(out),
        "--max_steps",
        "4",
        "--per_device_train_batch_size",
        "32",
        "--temperature",
        "0.2",
        "--disable_tqdm",
        "true",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert {"config.json", "model.safetensors", "README.md", "loss_curve.png", "ssl"} <= {p.name for p in out.iterdir()}
    assert {p.name for p in (out / "ssl").iterdir()} == {"config.json", "model.safetensors"}

    config = json.loads((out / "config.json").read_text())
    assert config["ssl_hub"]["method_config"]["temperature"] == 0.2  # a method flag reached the method
    assert config["ssl_hub"]["training"]["global_step"] == 4
    assert config["ssl_hub"]["dataset"]["hub_id"] == "zalando-datasets/fashion_mnist"

    card = ModelCard.load(out / "README.md")
    results = card.data.eval_results
    assert results is not None
    assert len(results) == 1
    knn = results[0]
    assert knn.metric_type == "accuracy"
    assert knn.dataset_split == "test"
    assert 10.0 < knn.metric_value <= 100.0  # percent, above chance on 10 classes
    evaluation = config["ssl_hub"]["evaluation"][0]
    assert f"{evaluation['value']:.2f} %" in card.text
    assert f"{evaluation['untrained_value']:.2f} %" in card.text  # the untrained backbone's kNN beside it
    assert "![Training loss](loss_curve.png)" in card.text


# The error paths run main() in this process: the code a subprocess would run, without 10 s of imports each.


def test_methods_lists_every_registered_method(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["methods"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ssl_hub.list_methods()


def test_unknown_method_and_unknown_backbone_fail_with_clear_messages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pretrain", "--method", "simclrr", "--backbone", "test_resnet", "--output-dir", str(tmp_path)]) == 2
    assert "Unknown method 'simclrr'. Did you mean 'simclr'?" in capsys.readouterr().err

    assert main(["pretrain", "--method", "simclr", "--backbone", "resnet181", "--output-dir", str(tmp_path)]) == 1
    assert "Unknown backbone 'resnet181'" in capsys.readouterr().err


def test_a_bad_method_hyperparameter_is_a_usage_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    arguments = ["--backbone", "test_resnet", "--output-dir", str(out), "--temperature", "-1"]
    assert main(["pretrain", "--method", "simclr", *arguments]) == 2
    assert "SimCLR: temperature must be a finite number > 0, got -1.0." in capsys.readouterr().err
    assert not out.exists()


def test_empty_data_folder_fails_with_a_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data").mkdir()
    arguments = ["--data", str(tmp_path / "data"), "--output-dir", str(tmp_path / "out")]
    assert main(["pretrain", "--method", "simclr", "--backbone", "test_resnet", *arguments]) == 1
    assert "No images found under" in capsys.readouterr().err


def test_fewer_images_than_one_batch_fail_with_a_clear_message_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "data").mkdir()
    for index, image in enumerate(random_images(5, 32)):
        Image.fromarray(image).save(tmp_path / "data" / f"{index}.png")
    arguments = ["--data", str(tmp_path / "data"), "--output-dir", str(tmp_path / "out")]
    assert main(["pretrain", "--method", "simclr", "--backbone", "test_resnet", *arguments]) == 1
    error = capsys.readouterr().err
    assert "holds 5 images, fewer than one batch of 64 (64 per device on 1 process)" in error
    assert "Lower per_device_train_batch_size to at most 5" in error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ssl_hub.list_methods())
def test_every_hyperparameter_of_every_method_is_a_flag(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--method", name, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    config_class = ssl_hub.get_method_class(name).config_class
    descriptions = config_class.field_descriptions()
    unspaced = "".join(text.split())  # argparse wraps the help to the terminal's width
    for field in dataclasses.fields(config_class):
        assert f"--{field.name}" in text, field.name
        # each flag's help is the config docstring's description of the field, with its default
        assert field.name in descriptions, f"{config_class.__name__} does not document {field.name}"
        assert "".join(f"{descriptions[field.name]} (default:".split()) in unspaced, field.name
    assert not re.search(r"``|:\w+:`", text)  # the docstrings' markup shows as plain text
    assert "--num_train_epochs" in text


def test_field_descriptions_come_from_the_nearest_docstring_that_documents_each_field() -> None:
    @dataclasses.dataclass
    class BaseConfig(MethodConfig):
        """Base.

        Args:
            width: Hidden width,
                over two lines.
            depth: Number of layers.

        Returns nothing here.
        """

        width: int = 8
        depth: int = 2

    @dataclasses.dataclass
    class ChildConfig(BaseConfig):
        """Child.

        Args:
            depth: Layers of the child.
            scale: A new field, read as plain text: ``scale=2.0`` doubles :class:`~torch.nn.Linear`'s output,
                :func:`torch.tanh` bounds it.
        """

        scale: float = 1.0
        undocumented: int = 0

    assert ChildConfig.field_descriptions() == {
        "width": "Hidden width, over two lines.",
        "depth": "Layers of the child.",
        "scale": "A new field, read as plain text: scale=2.0 doubles Linear's output, torch.tanh bounds it.",
    }


def test_no_knn_skips_the_evaluation(tmp_path: Path) -> None:
    out = tmp_path / "out"
    arguments = ["--output-dir", str(out), "--max_steps", "1", "--per_device_train_batch_size", "8", "--no_knn"]
    assert main(["pretrain", "--method", "simclr", "--backbone", "test_resnet", *arguments]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["ssl_hub"]["evaluation"] == []
    assert config["ssl_hub"]["training"]["global_step"] == 1


@pytest.mark.skipif(torch.accelerator.is_available(), reason="the recipe's use_cpu is for machines without one")
def test_bf16_trains_on_a_machine_without_an_accelerator(tmp_path: Path) -> None:
    """transformers refuses bf16 without a GPU unless use_cpu is set, which the recipe does on such a machine."""
    out = tmp_path / "out"
    arguments = ["--output-dir", str(out), "--max_steps", "1", "--per_device_train_batch_size", "8", "--no_knn"]
    assert main(["pretrain", "--method", "simclr", "--backbone", "test_resnet", "--bf16", "true", *arguments]) == 0
    assert json.loads((out / "config.json").read_text())["ssl_hub"]["training"]["precision"] == "bf16 mixed"


def test_transform_kwargs_reach_the_augmentation_and_its_record(tmp_path: Path) -> None:
    out = tmp_path / "out"
    arguments = ["--output-dir", str(out), "--max_steps", "1", "--per_device_train_batch_size", "8", "--no_knn"]
    view_arguments = ["--transform_kwargs", '{"gaussian_blur": 0.0}']
    assert main(["pretrain", "--method", "byol", "--backbone", "test_resnet", *view_arguments, *arguments]) == 0
    augmentation = json.loads((out / "config.json").read_text())["ssl_hub"]["training"]["augmentation"]
    blur_steps = [line.strip() for line in augmentation.splitlines() if "GaussianBlur" in line]
    assert len(blur_steps) == 2  # BYOL's two views, blurred by default with probabilities 1.0 and 0.1
    assert all(step.startswith("RandomApply(p=0.0, GaussianBlur(") for step in blur_steps)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--transform_kwargs", "{gaussian_blur: 0}"], "--transform_kwargs is not valid JSON"),
        (["--transform_kwargs", "[0.0]"], "--transform_kwargs must be a JSON object such as"),
        (["--transform_kwargs", '{"blur": 0.0}'], "unexpected keyword argument 'blur'"),
        (["--backbone_kwargs", "drop_path_rate=0.1"], "--backbone_kwargs is not valid JSON"),
        (["--timm_optimizer", "lars", "--learning_rate", "0.3", "--timm_optimizer_kwargs", '{"trust": 0.02}'],
         "do not fit timm's 'lars'"),
    ],
)  # fmt: skip
def test_malformed_json_arguments_fail_with_clear_messages(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = ["--output-dir", str(tmp_path / "out"), "--max_steps", "1", "--no_knn", *flags]
    assert main(["pretrain", "--method", "byol", "--backbone", "test_resnet", *arguments]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("method", "flags", "message"),
    [
        ("byol", ["--timm_optimizer", "lars"], "its learning rate for adamw_torch_fused, not for timm lars"),
        ("nnclr", ["--optim", "adamw_torch"], "recipe sets its learning rate for timm larc, not for adamw_torch"),
        ("nnclr", ["--timm_optimizer", "lamb"], "recipe sets its learning rate for timm larc, not for timm lamb"),
        ("byol", ["--timm_optimizer", "lars", "--learning_rate", "0.3", "--timm_optimizer_kwargs", "trust_coeff=0.02"],
         "timm_optimizer_kwargs is not valid JSON"),
        ("byol", ["--timm_optimizer", "lars", "--learning_rate", "0.3", "--timm_optimizer_kwargs", "[0.02]"],
         "timm_optimizer_kwargs must be a JSON object"),
    ],
)  # fmt: skip
def test_an_optimizer_without_its_learning_rate_or_with_malformed_arguments_is_a_usage_error(
    method: str, flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The recipe's rate belongs to the recipe's optimizer: LARS and Adam rates differ a hundredfold."""
    arguments = ["--output-dir", str(tmp_path / "out"), "--max_steps", "1", *flags]
    assert main(["pretrain", "--method", method, "--backbone", "test_resnet", *arguments]) == 2
    error = capsys.readouterr().err
    assert message in error
    assert "give the learning rate too" in error or "JSON" in error
    assert not (tmp_path / "out").exists()


SMALL_NNCLR = ["--memory_bank_size", "64", "--projection_hidden_dim", "32", "--prediction_hidden_dim", "32"]
SMALL_MOCO_V3 = ["--version", "3", "--projection_hidden_dim", "32", "--prediction_hidden_dim", "32"]


@pytest.mark.parametrize(
    ("method", "flags", "optimizer", "optimizer_arguments", "rate"),
    [  # the recipes' rates per 256 images, scaled to the batch of 16; a rate that is given is kept
        ("moco", ["--version", "2", "--memory_bank_size", "64"], "sgd", "momentum=0.9", 0.03 * 16 / 256),
        ("moco", ["--version", "2", "--memory_bank_size", "64", "--optim", "adamw_torch"],
         "adamw_torch", None, 0.03 * 16 / 256),  # the recipe's momentum=0.9 is SGD's only
        ("moco", ["--version", "2", "--memory_bank_size", "64", "--timm_optimizer", "larc", "--learning_rate", "0.3",
          "--timm_optimizer_kwargs", '{"trust_coeff": 0.02}'], "timm larc", "trust_coeff=0.02", 0.3),
        # MoCo v3 on a ResNet: LARS (timm larc), AdamW on a ViT
        ("moco", SMALL_MOCO_V3, "timm larc", "trust_coeff=0.02", 0.3 * 16 / 256),
        ("moco", [*SMALL_MOCO_V3, "--optim", "adamw_torch", "--learning_rate", "1e-3"], "adamw_torch", None, 1e-3),
        # NNCLR's recipe: timm larc, unless the run chooses another optimizer; its trust_coeff is larc's only
        ("nnclr", SMALL_NNCLR, "timm larc", "trust_coeff=0.02", 0.4 * 16 / 256),
        ("nnclr", [*SMALL_NNCLR, "--timm_optimizer_kwargs", '{"trust_coeff": 0.001}'],
         "timm larc", "trust_coeff=0.001", 0.4 * 16 / 256),
        ("nnclr", [*SMALL_NNCLR, "--learning_rate", "0.2"], "timm larc", "trust_coeff=0.02", 0.2),
        ("nnclr", [*SMALL_NNCLR, "--optim", "adamw_torch", "--learning_rate", "1e-3"], "adamw_torch", None, 1e-3),
        ("nnclr", [*SMALL_NNCLR, "--optim=sgd", "--optim_args", "momentum=0.9", "--learning_rate", "0.05"],
         "sgd", "momentum=0.9", 0.05),
        ("nnclr", [*SMALL_NNCLR, "--timm_optimizer", "lars", "--learning_rate", "0.3"], "timm lars", None, 0.3),
    ],
)  # fmt: skip
def test_the_recipe_optimizer_follows_the_config_and_backbone_unless_the_run_chooses_one(
    method: str, flags: list[str], optimizer: str, optimizer_arguments: str | None, rate: float, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    arguments = ["--output-dir", str(out), "--max_steps", "1", "--per_device_train_batch_size", "16", "--no_knn"]
    assert main(["pretrain", "--method", method, "--backbone", "test_resnet", *flags, *arguments]) == 0
    training = json.loads((out / "config.json").read_text())["ssl_hub"]["training"]
    assert (training["optimizer"], training["learning_rate"]) == (optimizer, pytest.approx(rate))
    assert training["optimizer_arguments"] == optimizer_arguments
    card = (out / "README.md").read_text()
    assert f"| Optimizer | {optimizer}{f' ({optimizer_arguments})' if optimizer_arguments else ''}, learning" in card


@pytest.mark.parametrize(
    ("backbone", "flags", "weight_decay"),
    [("test_resnet", [], 5e-4), ("test_vit", [], 5e-2), ("test_resnet", ["--weight_decay", "0.1"], 0.1)],
)
def test_the_recipe_weight_decay_follows_the_backbone_unless_given(
    backbone: str, flags: list[str], weight_decay: float, tmp_path: Path
) -> None:
    """LeJEPA decays ViTs by 5e-2 and ResNets by 5e-4 (official README), known once the backbone is built."""
    out = tmp_path / "out"
    arguments = ["--output-dir", str(out), "--max_steps", "1", "--per_device_train_batch_size", "16", "--no_knn"]
    small = ["--projection_hidden_dim", "16", "--sigreg_num_vectors", "8"]
    assert main(["pretrain", "--method", "lejepa", "--backbone", backbone, *small, *flags, *arguments]) == 0
    training = json.loads((out / "config.json").read_text())["ssl_hub"]["training"]
    assert training["weight_decay"] == weight_decay


@pytest.mark.parametrize(
    ("flags", "expected"),
    [([], 0.03 * 16 / 256), (["--learning-rate", "0.5"], 0.5), (["--learning_r=0.5"], 0.5)],  # argparse abbreviates
)
def test_the_recipe_learning_rate_is_scaled_to_the_batch_unless_given(
    flags: list[str], expected: float, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    arguments = ["--output-dir", str(out), "--max_steps", "1", "--per_device_train_batch_size", "16", "--no_knn"]
    assert main(["pretrain", "--method", "densecl", "--backbone", "test_resnet", *arguments, *flags]) == 0
    training = json.loads((out / "config.json").read_text())["ssl_hub"]["training"]
    assert training["learning_rate"] == pytest.approx(expected)  # DenseCL: SGD at 0.03 per 256 images
