"""Evaluate a published backbone (kNN and linear probe of its frozen features, fine-tuning) and record the results in
a hub folder's card."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import timm
from torch import nn

from ssl_hub import distributed
from ssl_hub._validation import check_positive
from ssl_hub.data.resolve import DataSplits, resolve_data
from ssl_hub.data.sources import ImageDataset
from ssl_hub.eval.finetune import FINETUNE_DEFAULTS
from ssl_hub.eval.finetune import finetune as finetune_published
from ssl_hub.eval.knn import eval_transform, extract_features, gather_shares, knn_accuracy
from ssl_hub.eval.linear import linear_probe

logger = logging.getLogger(__name__)

METRIC_NAMES = {
    "knn_top1": "kNN top-1 (k={k}, t={t})",
    "linear_top1": "Linear probe top-1",
    "finetune_top1": "Fine-tuned top-1",
}


def evaluate_backbone(
    backbone: nn.Module,
    splits: DataSplits,
    data_config: dict[str, Any],
    *,
    knn: bool = True,
    linear: bool = False,
    knn_k: int = 200,
    knn_temperature: float = 0.1,
    linear_epochs: int = 100,
    batch_size: int = 256,
    num_workers: int = 0,
    across_ranks: bool = False,
) -> dict[str, float]:
    """Top-1 accuracies (percent) of a frozen backbone, features extracted once for every evaluation.

    Args:
        backbone: Maps images to pooled ``(B, D)`` features.
        splits: Labelled training split (kNN bank / probe training set) and held-out test split.
        data_config: The backbone's preprocessing (``input_size``, ``mean``, ``std``, ``crop_pct``...).
        knn: Run the kNN classifier.
        linear: Run the linear probe.
        knn_k: Neighbours.
        knn_temperature: Vote temperature.
        linear_epochs: Epochs of the linear probe.
        batch_size: Images per feature-extraction batch.
        num_workers: DataLoader worker processes that decode and preprocess the images.
        across_ranks: Under torchrun / accelerate, share the work among the ranks: each extracts the features of
            every ``W``-th image and keeps its share of the kNN bank; the held-out features are gathered, and every
            rank gets the results. Every rank must call it.

    Returns:
        ``{"knn_top1": ..., "linear_top1": ...}`` for the evaluations run.
    """
    if splits.test is None:
        raise ValueError(
            f"Evaluating needs a held-out split: {splits.info.get('name')} has none (use a folder with train/ and "
            "val/ or test/ subfolders, a dataset with a test split, or pass eval data)."
        )
    if not (splits.train.has_labels and splits.test.has_labels):
        raise ValueError(f"Evaluating needs labelled images; {splits.info.get('name')} has no labels.")
    transform = eval_transform(data_config)
    train_features, train_labels = extract_features(
        backbone, splits.train, transform, batch_size, num_workers, across_ranks=across_ranks
    )
    test_features, test_labels = extract_features(
        backbone, splits.test, transform, batch_size, num_workers, across_ranks=across_ranks
    )
    unlabelled = (train_labels < 0).sum() + (test_labels < 0).sum()
    if across_ranks:  # the count of every share, so that every rank raises with the whole count
        unlabelled = distributed.gather_no_grad(unlabelled.reshape(1)).sum()
    if unlabelled:  # has_labels reads the first image only
        raise ValueError(
            f"Evaluating needs a label on every image; {splits.info.get('name')} has {int(unlabelled)} without one "
            "(label -1). Evaluate on labelled splits only."
        )
    if across_ranks:  # every rank queries its share of the bank with every held-out image
        test_features, test_labels = gather_shares(test_features), gather_shares(test_labels)
    results = {}
    if knn:
        results["knn_top1"] = knn_accuracy(
            train_features, train_labels, test_features, test_labels, knn_k, knn_temperature, across_ranks
        )
    if linear:
        if across_ranks:  # the probe trains on every image, the same on every rank
            train_features, train_labels = gather_shares(train_features), gather_shares(train_labels)
        results["linear_top1"] = linear_probe(
            train_features, train_labels, test_features, test_labels, epochs=linear_epochs
        )
    return results


def evaluate_knn(
    backbone: nn.Module,
    train: Any,
    test: Any,
    data_config: dict[str, Any],
    k: int = 200,
    temperature: float = 0.1,
    batch_size: int = 256,
    num_workers: int = 0,
    across_ranks: bool = False,
) -> float:
    """kNN top-1 (percent) of ``backbone`` on ``test`` with ``train`` as the labelled bank: :func:`evaluate_backbone`
    for two labelled image sources of any kind :class:`~ssl_hub.data.ImageDataset` reads (torchvision datasets,
    Hugging Face datasets, lists of ``(image, label)``)."""
    splits = DataSplits(ImageDataset(train), ImageDataset(test), {"name": "the evaluation data"})
    return evaluate_backbone(
        backbone,
        splits,
        data_config,
        knn_k=k,
        knn_temperature=temperature,
        batch_size=batch_size,
        num_workers=num_workers,
        across_ranks=across_ranks,
    )["knn_top1"]


def result_entries(
    values: dict[str, float],
    info: dict[str, Any],
    *,
    before: dict[str, float] | None = None,
    knn_k: int = 200,
    knn_temperature: float = 0.1,
    finetune_config: str | None = None,
) -> list[dict[str, Any]]:
    """Card / config.json records of evaluation ``values`` on the data described by ``info``; ``finetune_config``
    names the fine-tuning's settings (e.g. ``"epochs=3,lr=0.001"``)."""
    configs = {"knn_top1": f"k={knn_k},t={knn_temperature}", "finetune_top1": finetune_config}
    entries = []
    for metric, value in values.items():
        entries.append({
            "name": METRIC_NAMES[metric].format(k=knn_k, t=knn_temperature),
            "metric": metric,
            "value": value,
            "untrained_value": (before or {}).get(metric),
            "dataset_name": info.get("name", "dataset"),
            "dataset_id": info.get("hub_id") or info.get("name", "dataset"),
            "split": "test",
            "config": configs.get(metric),
        })  # fmt: skip
    return entries


def merge_entries(existing: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``existing`` with entries of the same metric, dataset and split replaced by ``new`` ones (kept in order)."""

    def key(entry: dict[str, Any]) -> tuple[Any, ...]:
        return entry["metric"], entry["dataset_id"], entry["split"]

    replaced = {key(e): e for e in new}
    merged = [replaced.pop(key(e), e) for e in existing]
    for entry in new:
        if key(entry) in replaced:
            merged.append(entry)
    for old, entry in zip(existing, merged, strict=False):
        if key(old) == key(entry) and entry.get("untrained_value") is None:  # keep a known baseline
            entry["untrained_value"] = old.get("untrained_value")
    return merged


def record_results(folder: Path, entries: list[dict[str, Any]]) -> None:
    """Add evaluation ``entries`` to a hub folder: its config.json ``ssl_hub`` block and its card's model-index.

    A generated card is rendered again; a hand-edited one keeps its text and gets the new model-index only.
    """
    from huggingface_hub import ModelCard

    from ssl_hub.hub.card import _eval_results, card_is_generated, render_model_card
    from ssl_hub.hub.folder import CARD_NAME, CONFIG_NAME, check_backbone_folder

    config = check_backbone_folder(folder)
    if "ssl_hub" not in config:
        raise ValueError(f"{folder / CONFIG_NAME} has no 'ssl_hub' block, so the results cannot be recorded there.")
    block = config["ssl_hub"]
    block["evaluation"] = merge_entries(block.get("evaluation") or [], entries)
    _write_atomically(folder / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
    card_path = folder / CARD_NAME
    if card_path.is_file() and not card_is_generated(card_path.read_text("utf-8")):
        card = ModelCard.load(card_path)
        card.data.eval_results = _eval_results(block["evaluation"])
        card.data.model_name = card.data.model_name or f"{config['architecture']}-{block['method']}"
        text = str(card)
    else:
        text = str(render_model_card(config, f"local-dir:{folder}"))
    _write_atomically(card_path, text)


def _write_atomically(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(temporary, path)


def evaluate_published(
    source: str,
    data: Any = None,
    *,
    knn: bool = True,
    linear: bool = False,
    finetune: bool = False,
    knn_k: int = 200,
    knn_temperature: float = 0.1,
    linear_epochs: int = 100,
    finetune_epochs: float = 3.0,
    finetune_learning_rate: float = FINETUNE_DEFAULTS["learning_rate"],
    batch_size: int = 256,
    num_workers: int = 0,
    push: bool = True,
    token: str | None = None,
) -> list[dict[str, Any]]:
    """``ssl-hub eval``: evaluate a published backbone and write the results into its card.

    Args:
        source: A hub folder, ``local-dir:PATH`` or ``hf-hub:REPO`` (then the updated card is pushed back).
        data: Labelled data with a held-out split (see :func:`ssl_hub.data.resolve.resolve_data`); ``None`` for
            the demo set.
        knn: Run the kNN classifier.
        linear: Run the linear probe.
        finetune: Fine-tune the backbone with a new linear head (:func:`ssl_hub.eval.finetune`: the stock Trainer,
            AdamW with linear decay) and record its held-out top-1.
        knn_k: Neighbours.
        knn_temperature: Vote temperature.
        linear_epochs: Epochs of the linear probe.
        finetune_epochs: Epochs of the fine-tuning (the Trainer's default, 3).
        finetune_learning_rate: Peak learning rate of the fine-tuning (the recipe's 1e-3).
        batch_size: Images per feature-extraction and fine-tuning batch.
        num_workers: DataLoader worker processes that decode and preprocess the images.
        push: Push the updated folder back when ``source`` is a Hub repository.
        token: Hub token for the push.

    Returns:
        The recorded entries.
    """
    from ssl_hub.hub.folder import resolve_folder
    from ssl_hub.hub.push import push_folder

    if not (knn or linear or finetune):
        raise ValueError("Nothing to evaluate: set knn, linear or finetune (or several) to True.")
    if finetune:
        check_positive("finetune_epochs", finetune_epochs, "Fine-tuning")
        check_positive("finetune_learning_rate", finetune_learning_rate, "Fine-tuning")
    remote = str(source).startswith("hf-hub:")
    folder = resolve_folder(source)
    splits = resolve_data(data)
    values = {}
    if knn or linear:
        backbone = timm.create_model(f"local-dir:{folder}", pretrained=True)
        data_config = timm.data.resolve_data_config({}, model=backbone)
        values = evaluate_backbone(
            backbone, splits, data_config, knn=knn, linear=linear, knn_k=knn_k, knn_temperature=knn_temperature,
            linear_epochs=linear_epochs, batch_size=batch_size, num_workers=num_workers,
        )  # fmt: skip
    finetune_config = f"epochs={finetune_epochs:g},lr={finetune_learning_rate:g}"
    if finetune:
        values["finetune_top1"] = _finetune_top1(
            folder, splits, finetune_epochs, finetune_learning_rate, batch_size, num_workers
        )
    entries = result_entries(
        values, splits.info, knn_k=knn_k, knn_temperature=knn_temperature, finetune_config=finetune_config
    )
    if not remote:
        record_results(folder, entries)
        return entries
    repo_id, _, revision = str(source).removeprefix("hf-hub:").partition("@")
    with tempfile.TemporaryDirectory(prefix="ssl_hub-eval-") as work:
        copy = Path(shutil.copytree(folder, Path(work) / "folder"))  # the cache's files are read-only links
        record_results(copy, entries)
        if push:
            url = push_folder(
                copy, repo_id, revision=revision or None, token=token, overwrite_card=True,  # the updated card
                commit_message="Add evaluation results (ssl-hub eval)",
            )  # fmt: skip
            logger.info("Pushed the results: %s", url)
    return entries


def _finetune_top1(
    folder: Path, splits: DataSplits, epochs: float, learning_rate: float, batch_size: int, num_workers: int
) -> float:
    """Held-out top-1 (percent) of the published backbone fine-tuned with a new linear head; nothing is saved."""
    with tempfile.TemporaryDirectory(prefix="ssl_hub-finetune-") as work:
        args = {
            "output_dir": work,
            "num_train_epochs": epochs,
            "learning_rate": learning_rate,
            "per_device_train_batch_size": batch_size,
            "per_device_eval_batch_size": batch_size,
            "dataloader_num_workers": num_workers,
            "eval_strategy": "no",
            "save_strategy": "no",
        }
        return finetune_published(str(folder), splits, args).metrics["eval_accuracy"]
