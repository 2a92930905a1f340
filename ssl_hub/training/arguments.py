"""A pretraining run's arguments: ``TrainingArguments`` plus a timm optimizer, completed from the method's recipe."""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import TrainingArguments

from ssl_hub._validation import json_object
from ssl_hub.methods.base import RECIPE_BATCH_SIZE, MethodConfig, SSLMethod

# The arguments a run leaves to the recipe unless it gives them (complete_from_recipe); the backbone may decide the
# optimizer's and the weight decay (SSLMethod.backbone_training_arguments).
RECIPE_DEPENDENT = ("learning_rate", "weight_decay", "optim_args", "timm_optimizer", "timm_optimizer_kwargs")
BACKBONE_DEPENDENT = ("learning_rate", "weight_decay", "timm_optimizer", "timm_optimizer_kwargs")


@dataclass
class PretrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus the optimizer of timm's a run may train with in place of the one ``optim`` names.

    LARS, which most joint-embedding papers train with, is timm's (``lars``; ``larc`` adds LARC's trust-ratio
    clipping) and not among the Trainer's ``optim`` names. :func:`training_arguments` and ``ssl-hub pretrain`` fill
    both fields from the method's recipe unless the run names its optimizer (:func:`complete_from_recipe`).
    """

    timm_optimizer: str | None = field(
        default=None,
        metadata={
            "help": "Train with this optimizer of timm's in place of --optim's (lars, larc, lamb...: "
            "timm.optim.list_optimizers()), over the same parameter groups and schedule."
        },
    )
    timm_optimizer_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "JSON of the timm optimizer's arguments beyond its rate and weight decay, e.g. "
                          "'{\"trust_coeff\": 0.02}'."},
    )  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        self.timm_optimizer_kwargs = json_object(
            "timm_optimizer_kwargs", self.timm_optimizer_kwargs, '{"trust_coeff": 0.02}'
        )


def recommended_training_arguments(method_class: type[SSLMethod], config: MethodConfig | None = None) -> dict[str, Any]:
    """The ``PretrainingArguments`` values ``pretrain`` and ``ssl-hub pretrain`` use unless told otherwise.

    ``config`` is the method's (default: its config class's defaults): a recipe may follow it (MoCo v2 / v3).
    """
    return {
        "output_dir": "ssl_hub-output",
        "per_device_train_batch_size": RECIPE_BATCH_SIZE,  # the Trainer's 8 starves contrastive losses of negatives
        "dataloader_drop_last": True,  # a last batch of one image breaks BatchNorm and contrastive losses
        "dataloader_pin_memory": torch.cuda.is_available(),
        # Without an accelerator, use_cpu lets torchrun's processes train as one DDP run (accelerate sets them up as
        # one run each otherwise) and bf16 autocast on the CPU
        "use_cpu": not torch.accelerator.is_available(),
        "logging_steps": 10,
        **method_class.default_training_arguments(config),
    }


def method_recipe(method: SSLMethod) -> dict[str, Any]:
    """The recipe of ``method``: its class's for its config, with the values its backbone decides on top
    (:meth:`~ssl_hub.methods.SSLMethod.backbone_training_arguments`)."""
    for_backbone = method.backbone_training_arguments()
    if unexpected := sorted(set(for_backbone) - set(BACKBONE_DEPENDENT)):
        raise TypeError(
            f"{type(method).__name__}.backbone_training_arguments may set {', '.join(BACKBONE_DEPENDENT)} only, which "
            f"every run leaves to the recipe unless it gives them; got {', '.join(unexpected)}."
        )
    return {**recommended_training_arguments(type(method), method.config), **for_backbone}


def scaled_learning_rate(rate: float, method: SSLMethod, args: TrainingArguments) -> float:
    """``rate``, the recipe's learning rate for ``method``, scaled from ``RECIPE_BATCH_SIZE`` to the global batch of
    ``args``.

    Recipes state their rate per batch ("5e-4 per 256 images", DINO; DINOv2 scales by the square root): a run on 4
    GPUs of 64 images, or with gradient accumulation, gets the rate the paper prescribes for that batch. The method's
    ``learning_rate_scaling`` names the rule; ``None`` keeps the rate (the Adam recipes at 1e-3).
    """
    batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    if method.learning_rate_scaling == "linear":
        return rate * batch / RECIPE_BATCH_SIZE
    if method.learning_rate_scaling == "sqrt":
        return rate * math.sqrt(batch / RECIPE_BATCH_SIZE)
    return rate


def optimizer_name(args: TrainingArguments) -> str:
    """The optimizer ``args`` train with: ``"timm NAME"`` for a timm optimizer, else the ``optim`` name."""
    timm_optimizer = getattr(args, "timm_optimizer", None)
    return f"timm {timm_optimizer}" if timm_optimizer else str(getattr(args.optim, "value", args.optim))


def complete_from_recipe(args: PretrainingArguments, method: SSLMethod, given: Collection[str]) -> None:
    """Fill in the recipe-dependent values of ``args`` (``RECIPE_DEPENDENT``) that are not among the ``given``
    argument names, from the recipe of ``method`` (:func:`method_recipe`).

    ``weight_decay``: the recipe's. ``timm_optimizer``: the recipe's, unless ``optim`` is given (the run chose the
    Trainer's optimizer). The optimizer's arguments (``optim_args``, ``timm_optimizer_kwargs``): the recipe's if the
    run trains with the recipe's optimizer, else none, as they are that optimizer's (SGD's ``momentum=0.9`` would
    reach RMSprop if a user switched to it). ``learning_rate``: the recipe's, scaled to the global batch
    (:func:`scaled_learning_rate`); a run that trains with a timm optimizer other than the recipe's, or none where the
    recipe has one, must give its own, as LARS rates and Adam rates differ a hundredfold.

    Raises:
        ValueError: The timm optimizer differs from the recipe's and no learning rate is given.
    """
    recipe = method_recipe(method)
    if "weight_decay" not in given:
        args.weight_decay = recipe.get("weight_decay", 0.0)
    recipe_timm_optimizer = recipe.get("timm_optimizer")
    if "timm_optimizer" not in given:
        args.timm_optimizer = None if "optim" in given else recipe_timm_optimizer
    if "timm_optimizer_kwargs" not in given:
        is_recipe_timm_optimizer = args.timm_optimizer == recipe_timm_optimizer
        args.timm_optimizer_kwargs = recipe.get("timm_optimizer_kwargs") if is_recipe_timm_optimizer else None
    if "optim_args" not in given:
        is_recipe_optimizer = getattr(args.optim, "value", args.optim) == recipe.get("optim")
        args.optim_args = recipe.get("optim_args") if is_recipe_optimizer else None
    if "learning_rate" in given:
        return
    if args.timm_optimizer != recipe_timm_optimizer:
        default_optim = PretrainingArguments.__dataclass_fields__["optim"].default
        recipe_optimizer = (
            f"timm {recipe_timm_optimizer}" if recipe_timm_optimizer else recipe.get("optim", default_optim)
        )
        raise ValueError(
            f"{method.display_name}'s recipe sets its learning rate for {recipe_optimizer}, not for "
            f"{optimizer_name(args)}: give the learning rate too (--learning_rate; BYOL's LARS recipe is 0.2 per 256 "
            "images, SimCLR's 0.3, the shared AdamW recipe 1e-3)."
        )
    args.learning_rate = scaled_learning_rate(float(recipe["learning_rate"]), method, args)


def training_arguments(method: SSLMethod, **overrides: Any) -> PretrainingArguments:
    """``PretrainingArguments`` with the method's recipe (for its config and backbone), then ``overrides`` on top.

    What ``overrides`` leaves out follows the recipe's rules (:func:`complete_from_recipe`): the recipe's timm
    optimizer unless ``optim`` is given, the optimizer's arguments for the recipe's optimizer only, the learning rate
    scaled to the global batch.
    """
    args = PretrainingArguments(**{**method_recipe(method), **overrides})
    complete_from_recipe(args, method, given=overrides)
    return args
