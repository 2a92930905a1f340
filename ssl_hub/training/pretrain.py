"""``ssl_hub.pretrain``: the stock transformers Trainer, the method's callbacks, data -> views, the hub folder."""

from __future__ import annotations

import inspect
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, cast

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import get_model_input_config
from transformers import Trainer, TrainerCallback, TrainingArguments

from ssl_hub import distributed
from ssl_hub.data.resolve import resolve_data
from ssl_hub.data.views import MultiViewDataset, collate_views
from ssl_hub.eval.evaluate import evaluate_backbone, result_entries
from ssl_hub.eval.monitor import KNNMonitorCallback
from ssl_hub.methods.base import SSLMethod
from ssl_hub.training.arguments import optimizer_name, training_arguments
from ssl_hub.training.callbacks import (
    CheckpointedHistory,
    DatasetEpochCallback,
    EMAUpdateCallback,
    LossMonitor,
    MethodMetricsCallback,
    NonFiniteLossError,
)

logger = logging.getLogger(__name__)

DEMO_IMAGE_SIZE = 32


@dataclass
class PretrainResult:
    """What :func:`pretrain` did: the Trainer, the training summary, evaluation results, and the hub folder."""

    trainer: Trainer
    training: dict[str, Any]
    evaluation: list[dict[str, Any]] = field(default_factory=list)
    dataset: dict[str, Any] = field(default_factory=dict)
    output_dir: Path | None = None


def _precision(args: TrainingArguments) -> str:
    return "bf16 mixed" if args.bf16 else "fp16 mixed" if args.fp16 else "fp32"


def _warmup(args: TrainingArguments) -> str:
    if not args.warmup_steps:
        return ""
    if 0 < args.warmup_steps < 1:
        return f"{args.warmup_steps:.0%} of the steps"
    return f"{int(args.warmup_steps)} steps"


def _optimizer(method: SSLMethod, args: TrainingArguments) -> torch.optim.Optimizer | None:
    """The optimizer over the method's parameter groups: timm's ``args.timm_optimizer`` if it names one, else the one
    ``args.optim`` names (built by the Trainer's own factory).

    ``None`` lets the Trainer build its own where it must (DeepSpeed and FSDP manage the optimizer themselves).
    """
    timm_optimizer = getattr(args, "timm_optimizer", None)  # a plain TrainingArguments has none
    timm_optimizer_kwargs = getattr(args, "timm_optimizer_kwargs", None) or {}
    if timm_optimizer_kwargs and not timm_optimizer:
        raise ValueError(
            "timm_optimizer_kwargs are the arguments of a timm optimizer: name it with timm_optimizer too."
        )
    if args.deepspeed or args.fsdp:
        if timm_optimizer:
            raise ValueError(
                f"timm's {timm_optimizer!r} cannot be used under DeepSpeed or FSDP, which build the optimizer "
                "themselves: choose one with --optim instead."
            )
        return None
    groups = method.parameter_groups(args.weight_decay)
    if timm_optimizer is None:
        optimizer_class, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, cast(Any, method))
        return optimizer_class(groups, **optimizer_kwargs)
    from timm.optim import create_optimizer_v2, list_optimizers

    if timm_optimizer not in list_optimizers():
        raise ValueError(
            f"timm has no optimizer named {timm_optimizer!r}. Its names (timm.optim.list_optimizers()) include lars, "
            "larc (LARS with trust-ratio clipping), lamb and lion."
        )
    try:  # weight decay: each group's own (none on biases and norms, which LARS then leaves unadapted, as BYOL does)
        optimizer = create_optimizer_v2(
            groups,
            timm_optimizer,
            lr=args.learning_rate,
            weight_decay=args.weight_decay,
            **_timm_kwargs(args, timm_optimizer),
        )
    except TypeError as error:
        raise ValueError(f"The timm_optimizer_kwargs do not fit timm's {timm_optimizer!r}: {error}.") from None
    _check_lars_adapts(optimizer, timm_optimizer)
    return optimizer


def _timm_kwargs(args: TrainingArguments, name: str) -> dict[str, Any]:
    """The arguments of timm's optimizer ``name``: ``timm_optimizer_kwargs`` over the Adam settings of
    ``TrainingArguments`` (``adam_beta1``, ``adam_beta2``, ``adam_epsilon``) that differ from their defaults, for an
    optimizer of the Adam family (two betas: AdamW, LAMB, Lion, NAdamW...). An unchanged setting keeps timm's default
    for that optimizer (Lion's beta2 0.99, LAMB's eps 1e-6); optimizers without betas (LARS, SGD) ignore them, as the
    Trainer's SGD does."""
    from timm.optim import get_optimizer_class, get_optimizer_info

    kwargs = getattr(args, "timm_optimizer_kwargs", None) or {}
    info = get_optimizer_info(name)
    if not info.has_betas or info.num_betas != 2:
        return dict(kwargs)
    defaults = {item.name: item.default for item in fields(TrainingArguments)}
    changed = {key: getattr(args, key) for key in ("adam_beta1", "adam_beta2", "adam_epsilon")
               if getattr(args, key) != defaults[key]}  # fmt: skip
    adam: dict[str, Any] = {}
    if "adam_beta1" in changed or "adam_beta2" in changed:
        signature = inspect.signature(get_optimizer_class(name, bind_defaults=False))
        beta1, beta2 = signature.parameters["betas"].default  # timm's, for the one left unchanged
        adam["betas"] = (changed.get("adam_beta1", beta1), changed.get("adam_beta2", beta2))
    if info.has_eps and "adam_epsilon" in changed:
        adam["eps"] = changed["adam_epsilon"]
    return {**adam, **kwargs}


def _check_lars_adapts(optimizer: torch.optim.Optimizer, name: str) -> None:
    """Refuse a LARS of timm's (lars, larc, nlars...) that would adapt no rate: it adapts only the groups with weight
    decay unless ``always_adapt``, so without weight decay it is plain SGD with momentum at a LARS rate."""
    adapts_only_decayed = not optimizer.defaults.get("always_adapt", True)  # only timm's LARS family has the key
    if adapts_only_decayed and not any(group["weight_decay"] for group in optimizer.param_groups):
        raise ValueError(
            f"timm's {name!r} adapts the learning rate only of parameters with weight decay, and weight_decay is 0: "
            "it would train as plain SGD with momentum at this LARS rate. Set weight_decay (BYOL's LARS recipe: "
            '1.5e-6) or pass timm_optimizer_kwargs {"always_adapt": true}.'
        )


def _optimizer_arguments(args: TrainingArguments) -> str | None:
    """The optimizer's arguments for the training summary, as ``optim_args`` spells them."""
    if timm_optimizer := getattr(args, "timm_optimizer", None):
        return ",".join(f"{key}={value}" for key, value in _timm_kwargs(args, timm_optimizer).items()) or None
    return args.optim_args


_MEMORY_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _describe_transform(transform: Callable[[Any], Sequence[Any]]) -> str:
    """The augmentation as the card records it: the transform's repr (torchvision's lists every step) without the
    memory addresses of Python's default reprs (``<MyViews object at 0x...>``, a lambda inside a pipeline), which mean
    nothing once the run is over and would make two identical runs' cards differ."""
    return _MEMORY_ADDRESS.sub("", repr(transform))


def _check_launch(args: TrainingArguments) -> None:
    """Refuse a launch of several processes that the Trainer set up as one each: every process would train alone,
    on its own weights, and write the same folder. Accelerate does so on a machine without GPUs unless ``use_cpu``."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and args.world_size == 1:
        raise ValueError(
            f"{launched} processes were launched (WORLD_SIZE={launched}, torchrun / accelerate), but the Trainer set "
            f"each up as a run of its own on {args.device}: each would train alone and write {args.output_dir}. On a "
            "machine without GPUs pass --use_cpu true (use_cpu=True) to train them as one DDP run over gloo; "
            "otherwise launch one process."
        )


def _check_one_full_batch(num_images: int, args: TrainingArguments) -> None:
    """Refuse data that fills no batch: with ``dataloader_drop_last`` (the default here) the Trainer would get no
    batch at all and fail with a message about ``max_steps``."""
    global_batch = args.per_device_train_batch_size * args.world_size
    if args.dataloader_drop_last and num_images < global_batch:
        largest_batch = num_images // args.world_size
        remedy = (
            f"Lower per_device_train_batch_size to at most {largest_batch} or add images"
            if largest_batch
            else "Add images or train on fewer processes"
        )
        raise ValueError(
            f"The training data holds {num_images} images, fewer than one batch of {global_batch} "
            f"({args.per_device_train_batch_size} per device on {args.world_size} process"
            f"{'es' if args.world_size > 1 else ''}), and incomplete batches are dropped (dataloader_drop_last). "
            f"{remedy}."
        )


def pretrain(
    method: SSLMethod,
    dataset: Any = None,
    training_args: TrainingArguments | dict[str, Any] | None = None,
    *,
    image_size: int | None = None,
    transform: Callable[[Any], Sequence[Any]] | None = None,
    transform_kwargs: Mapping[str, Any] | None = None,
    eval_dataset: Any = None,
    callbacks: Sequence[TrainerCallback] = (),
    knn: bool = True,
    knn_k: int = 200,
    knn_temperature: float = 0.1,
    knn_every_n_steps: int | None = None,
    save: bool = True,
    license: str = "apache-2.0",
) -> PretrainResult:
    """Pretrain ``method`` with the stock ``transformers.Trainer`` and write its hub folder.

    The Trainer does the loop (devices, mixed precision, DDP under torchrun / accelerate, logging, checkpoints,
    ``resume_from_checkpoint``); the method's :meth:`~SSLMethod.callbacks` add its step-dependent dynamics. When the
    data has a labelled held-out split, the backbone's kNN top-1 before and after pretraining goes into the card.
    The initial weights are drawn when ``method`` is built: call ``transformers.set_seed`` before building it for a
    reproducible run (``ssl-hub pretrain`` does, with ``--seed``); under torchrun every rank starts from rank 0's.

    Args:
        method: The method to train (see :func:`ssl_hub.create_method`).
        dataset: The images: ``None`` for the shipped demo set, a folder, a Hugging Face dataset (id or object), or
            any torch Dataset (see :func:`ssl_hub.data.resolve.resolve_data`).
        training_args: A dict of :class:`~ssl_hub.training.PretrainingArguments` values, merged over the method's
            recipe (:func:`~ssl_hub.training.training_arguments`: with the recipe's timm optimizer, LARS for NNCLR,
            unless the dict names ``optim``), or finished ``PretrainingArguments`` / ``TrainingArguments``, used as
            they are (a plain ``TrainingArguments`` trains with its ``optim``).
        image_size: View size in pixels; defaults to the transform's, 32 for the demo set, else the backbone's.
        transform: Image -> list of views; defaults to ``method.make_transform(image_size, **transform_kwargs)``.
        transform_kwargs: Arguments of the method's default augmentation, e.g. ``{"gaussian_blur": 0.0}`` to switch
            blur off on CIFAR-sized images; not with ``transform``.
        eval_dataset: Labelled held-out images for the kNN evaluation (``dataset`` is the kNN bank).
        callbacks: More Trainer callbacks.
        knn: Evaluate the kNN top-1 before and after pretraining when the data has a labelled held-out split (two
            passes of feature extraction over the labelled images).
        knn_k: Neighbours of the kNN evaluation.
        knn_temperature: Vote temperature of the kNN evaluation.
        knn_every_n_steps: Also log the kNN top-1 every so many steps during training (``knn_top1`` in the
            Trainer's logs); ``None`` for before and after only.
        save: Write the hub folder into ``training_args.output_dir`` when done.
        license: Licence of the weights, for the model card.

    Raises:
        NonFiniteLossError: The loss became NaN / infinite; the last finite state is saved as a checkpoint.
    """
    if transform is not None and transform_kwargs:
        raise ValueError("pretrain: transform_kwargs are arguments of the method's default transform; pass them to "
                         "the transform you give instead.")  # fmt: skip
    if not isinstance(training_args, TrainingArguments):
        training_args = training_arguments(method, **(training_args or {}))
    _check_launch(training_args)
    splits = resolve_data(dataset, eval_dataset)
    _check_one_full_batch(len(splits.train), training_args)
    image_size = (
        image_size
        or getattr(transform, "input_size", None)
        or (DEMO_IMAGE_SIZE if dataset is None else get_model_input_config(method.backbone)["input_size"][-1])
    )
    method.fit_input_size(image_size)
    transform = transform or method.make_transform(input_size=image_size, **(transform_kwargs or {}))
    normalize = getattr(transform, "normalize", None) or {"mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD}
    data_config = {
        "input_size": (3, image_size, image_size),
        "interpolation": "bicubic",
        "mean": tuple(normalize["mean"]),
        "std": tuple(normalize["std"]),
        "crop_pct": 1.0,
        "crop_mode": "center",
    }
    evaluate = knn and splits.test is not None and splits.train.has_labels and splits.test.has_labels
    method.to(training_args.device)
    distributed.broadcast_module(method)  # as DDP will: every rank evaluates and starts from rank 0's weights
    optimizer = _optimizer(method, training_args)  # bad arguments fail here
    published = method.published

    workers = training_args.dataloader_num_workers  # the pretraining's, for the evaluation's preprocessing too

    def knn_top1() -> dict[str, float]:
        return evaluate_backbone(
            published, splits, data_config, knn_k=knn_k, knn_temperature=knn_temperature, num_workers=workers,
            across_ranks=True,
        )  # fmt: skip

    before = knn_top1() if evaluate else None
    monitors = []
    if evaluate and knn_every_n_steps is not None:
        monitors.append(
            KNNMonitorCallback(splits, data_config, knn_every_n_steps, knn_k, knn_temperature, num_workers=workers)
        )

    monitor = LossMonitor()
    method_metrics = MethodMetricsCallback()
    method_callbacks = method.callbacks()
    data_seed = training_args.seed if training_args.data_seed is None else training_args.data_seed
    train_dataset = MultiViewDataset(splits.train, transform, seed=data_seed)
    epoch_callback = DatasetEpochCallback(train_dataset)
    history = CheckpointedHistory({"loss": monitor.history, **({"knn": monitors[0].history} if monitors else {})})
    trainer = Trainer(
        model=method,
        args=training_args,
        train_dataset=train_dataset,
        data_collator=collate_views,
        callbacks=[epoch_callback, *method_callbacks, monitor, method_metrics, *monitors, history, *callbacks],
        optimizers=(optimizer, None),
    )
    method_metrics.attach(trainer)
    for knn_monitor in monitors:
        knn_monitor.attach(trainer)
    checkpoint = training_args.resume_from_checkpoint
    if checkpoint:
        history.restore(checkpoint)
    trainer.train(resume_from_checkpoint=checkpoint)
    if monitor.nonfinite_step is not None:
        raise NonFiniteLossError(
            f"The loss became NaN or infinite at step {monitor.nonfinite_step}; training stopped before that step "
            f"changed the weights, and the last finite state is saved in {training_args.output_dir}/checkpoint-"
            f"{trainer.state.global_step}. Set --max_grad_norm or train in fp32, then resume with "
            "--resume_from_checkpoint; a lower learning rate needs a new run, since resuming restores the saved "
            "optimizer and schedule with their rates."
        )

    training = {
        "global_step": trainer.state.global_step,
        "epochs": trainer.state.epoch or 0.0,
        "per_device_batch_size": training_args.per_device_train_batch_size,
        "world_size": training_args.world_size,
        "gradient_accumulation_steps": training_args.gradient_accumulation_steps,
        "global_batch_size": training_args.per_device_train_batch_size
        * training_args.world_size
        * training_args.gradient_accumulation_steps,
        "optimizer": optimizer_name(training_args),
        "optimizer_arguments": _optimizer_arguments(training_args),
        "learning_rate": training_args.learning_rate,
        "weight_decay": training_args.weight_decay,
        "lr_scheduler": str(getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type)),
        "warmup": _warmup(training_args),
        "precision": _precision(training_args),
        "seed": training_args.seed,
        "image_size": image_size,
        "final_loss": monitor.final_loss(),
        "loss_history": monitor.curve(),
        "final_metrics": method_metrics.last,
        "runtime_seconds": round(history.seconds(), 1),
        "augmentation": _describe_transform(transform),
    }
    for callback in method_callbacks:  # a published EMA teacher: what is left of its initialisation (the card says)
        if isinstance(callback, EMAUpdateCallback) and callback.teaches(published):
            state = trainer.state
            training["teacher_initial_share"] = callback.initial_weight_share(state.max_steps, state.global_step)
    result = PretrainResult(trainer=trainer, training=training, dataset=splits.info)
    if monitors:
        training["knn_history"] = [[step, value] for step, value in monitors[0].history]
    if before is not None:
        after = knn_top1()
        result.evaluation = result_entries(
            after, splits.info, before=before, knn_k=knn_k, knn_temperature=knn_temperature
        )
        if trainer.is_world_process_zero():  # every rank has the values
            logger.info("kNN top-1: %.2f %% (before pretraining: %.2f %%)", after["knn_top1"], before["knn_top1"])
    method.hub_info.update(
        data_config=data_config, training=training, evaluation=result.evaluation, dataset=splits.info, license=license
    )
    if save and trainer.is_world_process_zero():
        result.output_dir = method.save_pretrained(str(training_args.output_dir))
    return result
