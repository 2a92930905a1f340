"""Fine-tuning a published backbone for classification with the stock transformers Trainer (no ssl_hub model code).

The model is ``AutoModelForImageClassification.from_pretrained(folder_or_repo, num_labels=K)`` (transformers' timm
wrapper); images are prepared with timm's transforms for the folder's recorded preprocessing (training-time
augmentation from ``timm.data.create_transform(is_training=True)``, evaluation as ``AutoImageProcessor`` does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import timm.data
from torch.utils.data import Dataset
from transformers import AutoModelForImageClassification, Trainer, TrainingArguments, set_seed

from ssl_hub.data.resolve import DataSplits, resolve_data
from ssl_hub.data.sources import ImageDataset
from ssl_hub.eval.knn import eval_transform


class _ClassificationRows(Dataset[dict[str, Any]]):
    """``{"pixel_values", "labels"}`` rows, the input of transformers' image classifiers."""

    def __init__(self, images: ImageDataset, transform: Any) -> None:
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, label = self.images[index]
        return {"pixel_values": self.transform(image), "labels": label}


def _accuracy(prediction: Any) -> dict[str, float]:
    logits, labels = prediction.predictions, prediction.label_ids
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean() * 100.0)}


# A new linear head on a self-supervised backbone wants a larger rate than the Trainer's 5e-5 (set for pretrained
# transformers): on the quick start's folder (ResNet-18, 3,000 demo images, 3 epochs at batch 128) 5e-5 reached 37.7 %
# top-1, below the frozen backbone's 62.2 % kNN, and 1e-3 66.1 % (benchmarks/RESULTS.md, "Fine-tuning on the demo set").
FINETUNE_DEFAULTS: dict[str, Any] = {
    "output_dir": "finetune-output",
    "learning_rate": 1e-3,
    "eval_strategy": "epoch",
    "report_to": "none",
}


@dataclass
class FinetuneResult:
    """The Trainer that fine-tuned, and its final evaluation metrics (``eval_accuracy`` in percent)."""

    trainer: Trainer
    metrics: dict[str, float]


def finetune(
    source: str,
    data: Any = None,
    training_args: TrainingArguments | dict[str, Any] | None = None,
    *,
    num_labels: int | None = None,
) -> FinetuneResult:
    """Fine-tune a published backbone plus a new linear head on labelled images with ``transformers.Trainer``.

    Seeds Python, NumPy and torch with the run's ``seed`` before building the model, so that the new head starts from
    the same weights in every run (``transformers.set_seed``, as the Trainer's examples do).

    Args:
        source: A hub folder path or a Hub repository id (as ``from_pretrained`` takes it).
        data: Labelled images with a held-out split (see :func:`ssl_hub.data.resolve.resolve_data`), or the
            :class:`~ssl_hub.data.resolve.DataSplits` it returns.
        training_args: ``TrainingArguments``, used as they are, or a dict of them over the recipe's defaults:
            :data:`FINETUNE_DEFAULTS` (AdamW at 1e-3 with the Trainer's linear decay, ``output_dir``
            ``finetune-output``, an evaluation each epoch).
        num_labels: Number of classes; read from the data when omitted.
    """
    splits = data if isinstance(data, DataSplits) else resolve_data(data)
    if splits.test is None or not splits.train.has_labels:
        raise ValueError("Fine-tuning needs labelled images with a held-out split.")
    if not isinstance(training_args, TrainingArguments):
        training_args = TrainingArguments(**{**FINETUNE_DEFAULTS, **(training_args or {})})
    if num_labels is None:
        train = splits.train
        num_labels = len(train.classes) if train.classes else 1 + max(train[i][1] for i in range(len(train)))
    location = source.removeprefix("hf-hub:").removeprefix("local-dir:")
    set_seed(training_args.seed)  # the new head's initial weights too, as the Trainer seeds only what follows
    model = AutoModelForImageClassification.from_pretrained(location, num_labels=num_labels)
    # The folder's preprocessing, as AutoImageProcessor reads it: the wrapped timm model carries timm's default
    # pretrained_cfg for the architecture (224 px for a ResNet-18 published at 32 px).
    data_config = timm.data.resolve_data_config({}, pretrained_cfg=model.config.pretrained_cfg)
    train_transform = timm.data.create_transform(**data_config, is_training=True)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=_ClassificationRows(splits.train, train_transform),
        eval_dataset=_ClassificationRows(splits.test, eval_transform(data_config)),
        compute_metrics=_accuracy,
    )
    trainer.train()
    return FinetuneResult(trainer=trainer, metrics=trainer.evaluate())
