"""Evaluation: linear probe against a closed-form accuracy, the kNN monitor, ssl-hub eval, fine-tuning."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from conftest import random_images
from hub_server import HubState
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file
from test_methods import train_a_few_steps

import ssl_hub
from ssl_hub.data.resolve import resolve_data
from ssl_hub.eval import KNNMonitorCallback, eval_transform, extract_features, finetune, linear_probe
from ssl_hub.eval import knn as knn_module
from ssl_hub.eval.evaluate import evaluate_published, merge_entries


def test_linear_probe_reaches_the_bayes_accuracy_of_two_gaussians() -> None:
    # Classes N(-mu, I) and N(+mu, I) in 4-D, |mu| = 0.5: the Bayes-optimal (linear) rule x.mu > 0 is right with
    # probability Phi(|mu|) = 69.15 %. With 20,000 test points its sampling noise is 0.33 % (one std).
    generator = torch.Generator().manual_seed(0)
    mu = torch.tensor([0.3, -0.4, 0.0, 0.0])
    bayes = 100 * 0.5 * (1 + math.erf(mu.norm().item() / math.sqrt(2)))

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, 2, (n,), generator=generator)
        return torch.randn(n, 4, generator=generator) + (2 * labels[:, None] - 1) * mu, labels

    (train, train_labels), (test, test_labels) = sample(4000), sample(20000)
    accuracy = linear_probe(train, train_labels, test, test_labels, epochs=20, batch_size=512)
    assert bayes == pytest.approx(69.15, abs=0.01)
    assert accuracy == pytest.approx(bayes, abs=1.5)


def test_linear_probe_separates_separable_classes_perfectly() -> None:
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(3).repeat(50)
    features = torch.eye(3)[labels] * 5 + 0.1 * torch.randn(150, 3, generator=generator)
    assert linear_probe(features[:90], labels[:90], features[90:], labels[90:], epochs=30) == 100.0


def test_merge_replaces_results_of_the_same_metric_and_data_and_keeps_the_baseline() -> None:
    old = [{"metric": "knn_top1", "dataset_id": "d", "split": "test", "value": 50.0, "untrained_value": 20.0},
           {"metric": "knn_top1", "dataset_id": "other", "split": "test", "value": 40.0}]  # fmt: skip
    new = [{"metric": "knn_top1", "dataset_id": "d", "split": "test", "value": 60.0, "untrained_value": None},
           {"metric": "linear_top1", "dataset_id": "d", "split": "test", "value": 70.0}]  # fmt: skip
    merged = merge_entries(old, new)
    assert [(e["metric"], e["dataset_id"], e["value"]) for e in merged] == [
        ("knn_top1", "d", 60.0), ("knn_top1", "other", 40.0), ("linear_top1", "d", 70.0)]  # fmt: skip
    assert merged[0]["untrained_value"] == 20.0


def labelled_folder(root: Path, per_split: dict[str, int]) -> Path:
    """``root/{train,val}/{class0,class1}/*.png``: two visibly different classes (dark / bright blobs)."""
    for split, count in per_split.items():
        for i, array in enumerate(random_images(count, 32, seed=len(split))):
            label = i % 2
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array // 4 if label == 0 else 192 + array // 4).save(folder / f"{i}.png")
    return root


def test_dataloader_workers_extract_the_same_features_in_the_same_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    splits = resolve_data(str(labelled_folder(tmp_path / "data", {"train": 10, "val": 2})))
    backbone = timm.create_model("test_resnet", num_classes=0)
    transform = eval_transform(timm.data.resolve_data_config({}, model=backbone) | {"input_size": (3, 32, 32)})
    workers_used = []
    data_loader = knn_module.DataLoader

    def recording_data_loader(*args: Any, **kwargs: Any) -> Any:
        workers_used.append(kwargs["num_workers"])
        return data_loader(*args, **kwargs)

    monkeypatch.setattr(knn_module, "DataLoader", recording_data_loader)
    features, labels = extract_features(backbone, splits.train, transform, batch_size=3)
    with_workers = extract_features(backbone, splits.train, transform, batch_size=3, num_workers=2)
    assert workers_used == [0, 2]
    assert features.shape == (10, backbone.num_features)
    torch.testing.assert_close(with_workers[0], features, rtol=0, atol=0)
    assert torch.equal(with_workers[1], labels)
    assert sorted(labels.tolist()) == [0] * 5 + [1] * 5


def test_knn_monitor_logs_through_the_trainer_and_reaches_the_card(tmp_path: Path) -> None:
    data = labelled_folder(tmp_path / "data", {"train": 24, "val": 8})
    method = ssl_hub.create_method("simclr", backbone="test_resnet")
    args = {"output_dir": str(tmp_path / "out"), "max_steps": 4, "per_device_train_batch_size": 8,
            "use_cpu": True, "save_strategy": "no", "disable_tqdm": True, "logging_steps": 2,
            "dataloader_num_workers": 1}  # fmt: skip
    result = ssl_hub.pretrain(method, str(data), args, image_size=32, knn_every_n_steps=2, knn_k=5)
    monitors = [c for c in result.trainer.callback_handler.callbacks if isinstance(c, KNNMonitorCallback)]
    assert [monitor.num_workers for monitor in monitors] == [1]  # the pretraining's workers preprocess its images
    logged = [(entry["step"], entry["knn_top1"]) for entry in result.trainer.state.log_history if "knn_top1" in entry]
    assert [step for step, _ in logged] == [2, 4]
    # the Trainer's own log of those steps is kept
    assert [entry["step"] for entry in result.trainer.state.log_history if "loss" in entry] == [2, 4]
    assert all(0.0 <= value <= 100.0 for _, value in logged)
    assert result.training["knn_history"] == [list(item) for item in logged]
    card = ModelCard.load(tmp_path / "out" / "README.md")
    best = max(value for _, value in logged)
    assert f"best {best:.2f} %" in card.text
    assert card.data.eval_results[0].metric_name == "kNN top-1 (k=5, t=0.1)"


def test_eval_command_writes_knn_linear_and_finetuned_results_into_a_local_card(tmp_path: Path) -> None:
    method = ssl_hub.create_method("simclr", backbone="test_resnet")
    train_a_few_steps(method, tmp_path / "run", steps=1)
    folder = method.save_pretrained(tmp_path / "hub")
    files_before = [path.name for path in folder.iterdir()]
    data = labelled_folder(tmp_path / "data", {"train": 20, "val": 10})
    command = [sys.executable, "-m", "ssl_hub.cli", "eval", str(folder), "--data", str(data), "--knn", "--linear",
               "--finetune", "--knn-k", "5", "--linear-epochs", "5", "--finetune-epochs", "10",
               "--finetune-learning-rate", "1e-3", "--batch-size", "8", "--num-workers", "1"]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    card = ModelCard.load(folder / "README.md")
    results = {r.metric_name: r for r in card.data.eval_results}
    assert set(results) == {"kNN top-1 (k=5, t=0.1)", "Linear probe top-1", "Fine-tuned top-1"}
    for name, result in results.items():
        assert f"{name} on data (test): {result.metric_value:.2f} %" in run.stdout  # printed is what the card says
        assert result.metric_value >= 90.0  # dark against bright images: any features separate them
    assert results["Fine-tuned top-1"].metric_config == "epochs=10,lr=0.001"
    assert "fine-tuning trains the whole backbone" in card.text
    assert sorted(path.name for path in folder.iterdir()) == sorted(files_before)  # the fine-tuning saved nothing


def test_eval_of_a_hub_repo_pushes_the_results_back_into_a_hand_edited_card(hub: HubState, tmp_path: Path) -> None:
    repo = "ivan/resnet-simclr"
    method = ssl_hub.create_method("simclr", backbone="test_resnet")
    method.push_to_hub(repo)
    from huggingface_hub import HfApi

    edited = hub.files(repo)["README.md"].decode().replace("## Training", "## Training\n\nHand-written notes.", 1)
    HfApi().upload_file(path_or_fileobj=edited.encode(), path_in_repo="README.md", repo_id=repo)
    data = labelled_folder(tmp_path / "data", {"train": 16, "val": 8})
    entries = evaluate_published(f"hf-hub:{repo}", str(data), knn=True, linear=False, knn_k=5)
    assert [e["metric"] for e in entries] == ["knn_top1"]
    card = ModelCard(hub.files(repo)["README.md"].decode())
    assert "Hand-written notes." in card.text  # the hand edit survives
    assert card.data.eval_results[0].metric_value == pytest.approx(round(entries[0]["value"], 2))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"knn": False}, "Nothing to evaluate: set knn, linear or finetune"),
        ({"finetune": True, "finetune_epochs": 0}, "Fine-tuning: finetune_epochs must be a finite number > 0, got 0."),
        ({"finetune": True, "finetune_learning_rate": -1e-3}, "Fine-tuning: finetune_learning_rate must be a finite"),
    ],
)
def test_evaluating_nothing_or_fine_tuning_for_no_time_is_refused_before_reading_the_folder(
    tmp_path: Path, arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):  # the folder does not exist: the check came first
        evaluate_published(str(tmp_path / "absent"), **arguments)


def test_finetune_recipe_trains_a_classifier_with_the_stock_trainer(tmp_path: Path) -> None:
    method = ssl_hub.create_method("simclr", backbone="test_resnet")
    train_a_few_steps(method, tmp_path / "run", steps=1)  # at 32 px, where test_resnet's timm default is 160
    folder = method.save_pretrained(tmp_path / "hub")
    data = labelled_folder(tmp_path / "data", {"train": 16, "val": 8})
    args = {"output_dir": str(tmp_path / "ft"), "max_steps": 2, "per_device_train_batch_size": 8, "use_cpu": True,
            "save_strategy": "no", "disable_tqdm": True, "eval_strategy": "no"}  # fmt: skip
    result = finetune(str(folder), str(data), args)
    assert 0.0 <= result.metrics["eval_accuracy"] <= 100.0
    assert result.trainer.model.num_labels == 2
    assert result.trainer.state.global_step == 2
    for rows in (result.trainer.train_dataset, result.trainer.eval_dataset):  # the folder's size, not timm's default
        assert rows[0]["pixel_values"].shape == (3, 32, 32)
    # It started from the published weights: two AdamW steps at 1e-3 (the recipe's) move each backbone weight by
    # about 2e-3 at most, where another random initialisation differs by tenths. And it trained.
    published = load_file(folder / "model.safetensors")
    trained = dict(result.trainer.model.timm_model.named_parameters())
    moved = {
        name: (trained[name].detach() - value).abs().max().item()
        for name, value in published.items()
        if name in trained
    }
    assert len(moved) == len(trained) - 2  # every parameter but the new head's weight and bias
    assert 0.0 < max(moved.values()) < 1e-2
    torch.manual_seed(1)  # another global random state: the run seeds the new head itself
    again = finetune(str(folder), str(data), {**args, "output_dir": str(tmp_path / "ft-again")})
    for name, value in again.trainer.model.timm_model.named_parameters():
        torch.testing.assert_close(value, trained[name], rtol=0, atol=0, msg=f"{name} differs between two runs")
