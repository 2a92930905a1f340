"""A kNN monitor for pretraining runs, logged through the Trainer's own logging."""

from __future__ import annotations

import logging
from typing import Any

from torch import nn
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ssl_hub.data.resolve import DataSplits
from ssl_hub.eval.evaluate import evaluate_backbone
from ssl_hub.training.callbacks import log_from_callback

logger = logging.getLogger(__name__)


class KNNMonitorCallback(TrainerCallback):
    """Every ``every_n_steps`` steps (or at each epoch end), the backbone's kNN top-1 on a labelled split.

    The value is logged with ``trainer.log`` as ``knn_top1`` (and the best so far as ``best_knn_top1``), so the
    progress bar, ``state.log_history``, TensorBoard, W&B... all show it. Under torchrun / accelerate the ranks share
    the evaluation (:func:`~ssl_hub.eval.evaluate_backbone` ``across_ranks``), so none waits long for another.

    Args:
        splits: Labelled bank (``train``) and held-out queries (``test``).
        data_config: The backbone's preprocessing (``input_size``, ``mean``, ``std``...).
        every_n_steps: Evaluate every so many optimizer steps; ``None`` evaluates at the end of each epoch.
        k: Neighbours.
        temperature: Vote temperature.
        backbone_attribute: The method's submodule to evaluate (its published backbone by default).
        num_workers: DataLoader worker processes that preprocess the images (``pretrain`` passes the Trainer's
            ``dataloader_num_workers``).
    """

    def __init__(
        self,
        splits: DataSplits,
        data_config: dict[str, Any],
        every_n_steps: int | None = None,
        k: int = 200,
        temperature: float = 0.1,
        backbone_attribute: str | None = None,
        num_workers: int = 0,
    ) -> None:
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"KNNMonitorCallback: every_n_steps must be >= 1 or None, got {every_n_steps}.")
        self.splits = splits
        self.data_config = data_config
        self.every_n_steps = every_n_steps
        self.k = k
        self.temperature = temperature
        self.backbone_attribute = backbone_attribute
        self.num_workers = num_workers
        self.trainer: Trainer | None = None
        self.history: list[tuple[int, float]] = []  # (step, kNN top-1)

    def attach(self, trainer: Trainer) -> KNNMonitorCallback:
        """Give the callback the Trainer whose logging it uses (``ssl_hub.pretrain`` does this)."""
        self.trainer = trainer
        return self

    @property
    def best(self) -> float | None:
        return max((value for _, value in self.history), default=None)

    def _evaluate(self, state: TrainerState, model: nn.Module) -> None:
        if self.trainer is None:
            raise RuntimeError("KNNMonitorCallback needs the Trainer: call monitor.attach(trainer) before training.")
        attribute = self.backbone_attribute or str(getattr(model, "published_backbone", "backbone"))
        backbone = getattr(model, attribute)
        value = evaluate_backbone(
            backbone, self.splits, self.data_config, knn=True, knn_k=self.k, knn_temperature=self.temperature,
            num_workers=self.num_workers, across_ranks=True,
        )["knn_top1"]  # fmt: skip
        self.history.append((state.global_step, value))
        log_from_callback(self.trainer, {"knn_top1": value, "best_knn_top1": self.best or value})

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self.every_n_steps is not None and state.global_step % self.every_n_steps == 0:
            self._evaluate(state, kwargs["model"])

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.every_n_steps is None:
            self._evaluate(state, kwargs["model"])
