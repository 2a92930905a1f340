"""Trainer callbacks every pretraining run uses. Method-specific ones live with their method."""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.hooks import RemovableHandle
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, has_length

from ssl_hub import distributed
from ssl_hub.modules.ema import update_momentum
from ssl_hub.training.schedules import cosine_schedule, linear_schedule, steps_per_epoch

logger = logging.getLogger(__name__)


def trainer_steps_per_epoch(args: TrainingArguments, state: TrainerState, train_dataloader: object = None) -> int:
    """:func:`~ssl_hub.training.schedules.steps_per_epoch` of a Trainer run, from what a ``TrainerCallback`` event
    receives: its ``args``, its ``state`` and its ``train_dataloader`` keyword argument. (The Trainer's
    ``state.num_train_epochs`` is rounded up to whole epochs, so ``max_steps / num_train_epochs`` is the epoch's length
    only in a run of whole epochs.)"""
    batches = len(train_dataloader) if has_length(train_dataloader) else None
    return steps_per_epoch(batches, args.gradient_accumulation_steps, state.max_steps)


# Above this share of its initial weights left at the end of a run, a published EMA teacher gets a warning: with the
# papers' 0.996 -> 1, a run of fewer than about 1,150 steps (a teacher holds 15 % after 936 steps, 83 % after 95).
SHORT_RUN_INITIAL_SHARE = 0.1


class NonFiniteLossError(RuntimeError):
    """Training stopped because the loss became NaN or infinite."""


def log_from_callback(trainer: Any, logs: dict[str, float]) -> None:
    """``trainer.log(logs)`` from a callback, keeping the Trainer's own log of the step.

    In ``on_step_end`` the Trainer has decided to log this step (``control.should_log``) but logs only after the
    callbacks ran; ``trainer.log`` clears that flag (``CallbackHandler.on_log``), which would drop the step's loss,
    learning rate and gradient norm from the logs.
    """
    should_log = trainer.control.should_log
    trainer.log(logs)
    trainer.control.should_log = should_log


class ForwardOutputCallback(TrainerCallback):
    """A callback that reads the output of every forward of the model during training (a forward hook, registered
    when training begins and removed when it ends); subclasses implement :meth:`record`."""

    def __init__(self) -> None:
        self._hook: RemovableHandle | None = None

    def record(self, module: nn.Module, args: Any, output: Any) -> None:
        raise NotImplementedError

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._hook = kwargs["model"].register_forward_hook(self.record)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None


class LossMonitor(ForwardOutputCallback):
    """Records the loss of every optimizer step and stops training cleanly when it stops being finite.

    A forward hook reads the loss of each micro-batch. Before the optimizer step the mean over the step's
    micro-batches is checked (agreed across ranks): when it is not finite, the gradients are dropped so the weights
    keep their last finite values (batch-norm statistics the bad batch made non-finite are reset), a checkpoint is
    saved and training stops; ``ssl_hub.pretrain`` then raises
    :class:`NonFiniteLossError` naming the checkpoint.
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: list[tuple[int, float]] = []  # (optimizer step, mean loss)
        self.nonfinite_step: int | None = None
        self._step_losses: list[torch.Tensor] = []

    def record(self, module: nn.Module, args: Any, output: Any) -> None:
        loss = output.get("loss") if isinstance(output, dict) else getattr(output, "loss", None)
        if module.training and isinstance(loss, torch.Tensor):
            self._step_losses.append(loss.detach().float())

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not self._step_losses:
            return
        step_loss = torch.stack(self._step_losses).mean()
        self._step_losses.clear()
        finite = torch.isfinite(step_loss).float()
        if distributed.is_distributed():
            finite = distributed.all_reduce_sum(finite) / distributed.world_size()
        value = step_loss.item()
        if finite.item() == 1.0:
            self.history.append((state.global_step + 1, value))
            return
        self.nonfinite_step = state.global_step + 1
        model = kwargs["model"]
        for parameter in model.parameters():
            parameter.grad = None  # optimizers skip parameters without a gradient: the weights stay finite
        for module in model.modules():  # the bad batch may have poisoned normalisation statistics
            if (
                isinstance(module, _BatchNorm)
                and module.track_running_stats
                and not all(torch.isfinite(b).all() for b in (module.running_mean, module.running_var) if b is not None)
            ):
                module.reset_running_stats()
        control.should_save = True
        control.should_training_stop = True

    def final_loss(self, last_steps: int = 10) -> float | None:
        """Mean loss of the last ``last_steps`` optimizer steps."""
        if not self.history:
            return None
        tail = [loss for _, loss in self.history[-last_steps:]]
        return sum(tail) / len(tail)

    def curve(self, max_points: int = 200) -> list[list[float]]:
        """The loss history averaged into at most ``max_points`` (step, loss) points."""
        if len(self.history) <= max_points:
            return [[step, loss] for step, loss in self.history]
        size = math.ceil(len(self.history) / max_points)
        bins = [self.history[i : i + size] for i in range(0, len(self.history), size)]
        return [[b[-1][0], sum(loss for _, loss in b) / len(b)] for b in bins]


class CheckpointedHistory(TrainerCallback):
    """Keeps step histories (the loss, the kNN monitor's) and the training time across a resume: each checkpoint gets
    them in ``HISTORY_FILE``, and :meth:`restore` puts a checkpoint's back before the resumed run appends to them, so
    the card of a resumed run describes the whole run.

    Args:
        histories: Named lists of ``(step, value)`` pairs, extended in place by their callbacks.
    """

    HISTORY_FILE = "ssl_hub_history.json"

    def __init__(self, histories: dict[str, list[tuple[int, float]]]) -> None:
        self.histories = histories
        self.earlier_seconds = 0.0  # training time of the run up to the checkpoint resumed from
        self._start: float | None = None
        self._stop: float | None = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._start, self._stop = time.perf_counter(), None

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._stop = time.perf_counter()

    def seconds(self) -> float:
        """Training time: before the checkpoint resumed from, plus this process's until now or the end of training
        (the one clock of the checkpoints and the card)."""
        if self._start is None:
            return self.earlier_seconds
        stop = self._stop if self._stop is not None else time.perf_counter()
        return self.earlier_seconds + (stop - self._start)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        folder = Path(str(args.output_dir)) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            saved = {"histories": self.histories, "seconds": self.seconds()}
            (folder / self.HISTORY_FILE).write_text(json.dumps(saved), encoding="utf-8")

    def restore(self, checkpoint: str | Path) -> None:
        """Put back the histories and the training time saved in ``checkpoint`` (a checkpoint folder; one from before
        this file existed has none, and the histories then start at the resumed step)."""
        path = Path(checkpoint) / self.HISTORY_FILE
        if not path.is_file():
            logger.warning("%s has no %s: the card's histories start at the resumed step.", checkpoint, path.name)
            return
        saved = json.loads(path.read_text(encoding="utf-8"))
        for name, history in self.histories.items():
            history[:0] = [(int(step), float(value)) for step, value in saved["histories"].get(name, [])]
        self.earlier_seconds = float(saved["seconds"])


class MethodMetricsCallback(ForwardOutputCallback):
    """Logs the diagnostics a method returns in ``SSLMethodOutput.metrics`` through the Trainer's own log.

    A forward hook sums each metric over the training forwards; whenever the Trainer logs, their means since the
    last log (over the micro-batches and, under multi-process training, the ranks) go to ``trainer.log``, so the
    progress bar, TensorBoard or W&B show them beside the loss. ``last`` keeps the latest logged values.
    """

    def __init__(self) -> None:
        super().__init__()
        self.trainer: Any = None
        self.last: dict[str, float] = {}
        self._sums: dict[str, torch.Tensor] = {}
        self._count = 0

    def attach(self, trainer: Any) -> MethodMetricsCallback:
        """Give the callback the Trainer whose logging it uses (``ssl_hub.pretrain`` does this)."""
        self.trainer = trainer
        return self

    def record(self, module: nn.Module, args: Any, output: Any) -> None:
        metrics = getattr(output, "metrics", None)
        if not module.training or not metrics:
            return
        for name, tensor in metrics.items():
            value = tensor.detach().float()
            self._sums[name] = self._sums[name] + value if name in self._sums else value
        self._count += 1

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.trainer is None:
            raise RuntimeError("MethodMetricsCallback needs the Trainer: call attach(trainer) before training.")
        super().on_train_begin(args, state, control, **kwargs)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if not control.should_log or not self._count:
            return
        names = sorted(self._sums)
        means = torch.stack([self._sums[name] for name in names]) / self._count  # (M,)
        if distributed.is_distributed():
            means = distributed.all_reduce_sum(means) / distributed.world_size()
        self._sums.clear()
        self._count = 0
        self.last = dict(zip(names, means.tolist(), strict=True))
        log_from_callback(self.trainer, dict(self.last))


class DatasetEpochCallback(TrainerCallback):
    """Tells a dataset with ``set_epoch`` (:class:`~ssl_hub.data.MultiViewDataset`) each epoch as it begins, a resumed
    one too (accelerate's data loader tells the sampler instead when the sampler takes it)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def on_epoch_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # The Trainer counts epochs as a float; an epoch begins on a whole number, or mid-way when resumed.
        self.dataset.set_epoch(math.floor(state.epoch or 0))


class EMAUpdateCallback(TrainerCallback):
    """After each optimizer step, move each teacher towards its student by the scheduled momentum.

    The momentum of the update after step ``k`` (0-based) is ``cosine_schedule(k, max_steps, start, end)``: BYOL's
    schedule, from ``momentum_start`` to ``momentum_end`` (give equal values for a constant momentum, as MoCo).

    Args:
        pairs: ``(student, teacher)`` modules with the same parameter layout.
        momentum_start: Momentum of the first update.
        momentum_end: Momentum of the last update.
    """

    def __init__(self, pairs: Sequence[tuple[nn.Module, nn.Module]], momentum_start: float, momentum_end: float):
        self.pairs = list(pairs)
        self.momentum_start = momentum_start
        self.momentum_end = momentum_end

    def momentum(self, step: int, max_steps: int) -> float:
        return cosine_schedule(step, max_steps, self.momentum_start, self.momentum_end)

    def initial_weight_share(self, max_steps: int, steps: int | None = None) -> float:
        """How much of its initial weights a teacher still holds after the first ``steps`` (all ``max_steps`` by
        default) updates of a ``max_steps`` schedule: the product of the momenta, as
        ``teacher = prod_k m_k * initial + sum_k (1 - m_k) prod_{j > k} m_j * student_k``."""
        return math.prod(self.momentum(step, max_steps) for step in range(max_steps if steps is None else steps))

    def teaches(self, module: Any) -> bool:
        """Whether ``module`` is one of the teachers this callback updates."""
        return any(module is teacher for _, teacher in self.pairs)

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model: Any = None, **kwargs: Any
    ) -> None:
        """Warn (once, on the main process) when the published backbone is a teacher that will still hold more than
        ``SHORT_RUN_INITIAL_SHARE`` of its initial weights at the end of the run."""
        published = getattr(model, getattr(model, "published_backbone", ""), None)
        if not state.is_world_process_zero or not self.teaches(published):
            return
        share = self.initial_weight_share(state.max_steps)
        if share > SHORT_RUN_INITIAL_SHARE:
            logger.warning(
                "The published backbone is an EMA teacher, and with momentum %s -> %s over %d steps it still holds "
                "%.0f%% of its initial weights at the end of this run, so it trails its student. Train for more "
                "steps, lower momentum_start to %.3f or below (the teacher then holds at most %.0f%%), or evaluate "
                "the student (method.backbone) too.",
                self.momentum_start, self.momentum_end, state.max_steps, 100 * share,
                self.momentum_start_for_share(state.max_steps, SHORT_RUN_INITIAL_SHARE), 100 * SHORT_RUN_INITIAL_SHARE,
            )  # fmt: skip

    def momentum_start_for_share(self, max_steps: int, share: float) -> float:
        """The highest ``momentum_start`` (to 3 decimals, same schedule and end) whose teacher holds at most ``share``
        of its initial weights after ``max_steps`` updates."""
        low, high = 0.0, 1.0  # holds 0 at momentum 0 (the first update copies the student); the share rises with it
        probe = copy.copy(self)
        for _ in range(40):
            probe.momentum_start = middle = (low + high) / 2
            if probe.initial_weight_share(max_steps) <= share:
                low = middle
            else:
                high = middle
        return math.floor(low * 1000) / 1000

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        momentum = self.momentum(state.global_step - 1, state.max_steps)
        for student, teacher in self.pairs:
            update_momentum(student, teacher, momentum)


class FreezeParametersCallback(TrainerCallback):
    """Keep parameters unchanged for the first steps of training (DINO's last layer, SwaV's prototypes).

    Their gradients are dropped before each optimizer step of the frozen period, so neither the gradient nor weight
    decay or momentum moves them.

    Args:
        parameters: The parameters to freeze.
        frozen_steps: Number of frozen optimizer steps; or
        frozen_epochs: Number of frozen epochs (converted with the run's steps per epoch).
    """

    def __init__(
        self, parameters: Sequence[nn.Parameter], frozen_steps: int | None = None, frozen_epochs: float | None = None
    ) -> None:
        if (frozen_steps is None) == (frozen_epochs is None):
            raise ValueError("FreezeParametersCallback takes frozen_steps or frozen_epochs, exactly one of them.")
        self.parameters = list(parameters)
        self.frozen_steps = frozen_steps
        self.frozen_epochs = frozen_epochs

    def frozen_until(self, steps_per_epoch: int) -> int:
        """The first step index at which the parameters train, in a run of ``steps_per_epoch`` steps an epoch."""
        if self.frozen_steps is not None:
            return self.frozen_steps
        return round((self.frozen_epochs or 0.0) * steps_per_epoch)

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        epoch = trainer_steps_per_epoch(args, state, kwargs.get("train_dataloader"))
        if state.global_step < self.frozen_until(epoch):
            for parameter in self.parameters:
                parameter.grad = None


class WeightDecayScheduleCallback(TrainerCallback):
    """Before each optimizer step, set the weight decay to a cosine schedule (DINO, Caron et al., 2021, sec. 3.2).

    The weight decay of the step with index ``k`` is ``cosine_schedule(k, max_steps, start, end)``. It is set on the
    parameter groups the Trainer decays: those with a weight decay > 0 when training begins. The Trainer's group
    without decay holds biases and LayerNorm weights, as in DINO (which also exempts BatchNorm weights; the Trainer
    decays those).

    Args:
        weight_decay_start: Weight decay of the first step.
        weight_decay_end: Weight decay of the last step.
    """

    def __init__(self, weight_decay_start: float, weight_decay_end: float) -> None:
        self.weight_decay_start = weight_decay_start
        self.weight_decay_end = weight_decay_end
        self.decayed_groups: list[int] = []

    def weight_decay(self, step: int, max_steps: int) -> float:
        return cosine_schedule(step, max_steps, self.weight_decay_start, self.weight_decay_end)

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        groups = kwargs["optimizer"].param_groups
        self.decayed_groups = [i for i, group in enumerate(groups) if group.get("weight_decay", 0.0) > 0]
        if not self.decayed_groups:
            logger.warning(
                "No parameter group has weight decay (TrainingArguments.weight_decay is 0): the weight-decay "
                "schedule %s -> %s is not applied.",
                self.weight_decay_start,
                self.weight_decay_end,
            )

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        groups = kwargs["optimizer"].param_groups
        weight_decay = self.weight_decay(state.global_step, state.max_steps)
        for index in self.decayed_groups:
            groups[index]["weight_decay"] = weight_decay


def with_fixed_learning_rate(groups: list[dict[str, Any]], parameters: Iterable[nn.Parameter]) -> list[dict[str, Any]]:
    """``groups`` (optimizer parameter groups) each split in two: ``parameters``, flagged ``fixed_learning_rate`` for
    :class:`FixedLearningRateCallback`, and the others; empty groups are left out."""
    fixed = {id(p) for p in parameters}
    split = [
        {**group, "params": [p for p in group["params"] if (id(p) in fixed) == flag], "fixed_learning_rate": flag}
        for group in groups
        for flag in (False, True)
    ]
    return [group for group in split if group["params"]]


class FixedLearningRateCallback(TrainerCallback):
    """Keep the parameter groups flagged ``fixed_learning_rate`` at the rate training began with: the Trainer's
    schedule (warm-up, decay) moves the other groups only. SimSiam's predictor trains at a constant rate (Chen & He,
    2021, Table 1c: 68.1 % against 67.7 % with decay; ``--fix-pred-lr`` in the official code).

    The rate is the group's ``initial_lr``, which the Trainer's scheduler records when it is built; it is set before
    every optimizer step.
    """

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        for group in kwargs["optimizer"].param_groups:
            if group.get("fixed_learning_rate"):
                group["lr"] = group["initial_lr"]


class LinearEMAUpdateCallback(EMAUpdateCallback):
    """:class:`EMAUpdateCallback` with a linear momentum schedule: ``linear_schedule(k, max_steps, start, end)``
    after step ``k`` (MSN, Assran et al. 2022, and I-JEPA, Assran et al. 2023: 0.996 -> 1 linearly).
    """

    def momentum(self, step: int, max_steps: int) -> float:
        return linear_schedule(step, max_steps, self.momentum_start, self.momentum_end)
