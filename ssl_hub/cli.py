"""The ``ssl-hub`` command: ``pretrain``, ``eval``, ``push``, ``convert`` and ``methods``.

``ssl-hub pretrain --method simclr --backbone resnet18 --output-dir out`` trains on the shipped demo set; every
``TrainingArguments`` flag (``--num_train_epochs``, ``--per_device_train_batch_size``, ``--bf16``...) and every
hyperparameter of the method (``--temperature``...) is a flag too, described with its default by
``ssl-hub pretrain --method simclr --help``. Without ``--learning_rate``, the recipe's rate is used; recipes stated
per batch (DINO, MAE...) scale it from a global batch of 64 to the run's (the help says which).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from ssl_hub._validation import json_object
from ssl_hub.registry import get_method_class, list_methods

logger = logging.getLogger("ssl_hub")


@dataclass
class PretrainCommand:
    """Flags of ``ssl-hub pretrain`` beyond TrainingArguments and the method's hyperparameters."""

    method: str = field(metadata={"help": "SSL method, one of `ssl-hub methods`."})
    backbone: str = field(
        metadata={"help": "timm architecture (resnet18, vit_small_patch16_224...), hf-hub:REPO or local-dir:PATH."}
    )
    data: str | None = field(
        default=None,
        metadata={
            "help": "Folder of images (train/ + val/ subfolders give a kNN split), saved HF dataset, or HF dataset "
            "id. Default: the demo set shipped with ssl_hub."
        },
    )
    eval_data: str | None = field(default=None, metadata={"help": "Labelled held-out images for the kNN score."})
    image_size: int | None = field(
        default=None, metadata={"help": "View size in pixels (default: 32 on the demo set, else the backbone's)."}
    )
    backbone_kwargs: str | None = field(
        default=None, metadata={"help": "JSON of timm.create_model arguments, e.g. '{\"drop_path_rate\": 0.1}'."}
    )
    transform_kwargs: str | None = field(
        default=None,
        metadata={
            "help": "JSON of the method's augmentation arguments, e.g. '{\"gaussian_blur\": 0.0}' to switch blur off "
            "on CIFAR-sized images."
        },
    )
    license: str = field(default="apache-2.0", metadata={"help": "Licence of the weights, for the model card."})
    knn: bool = field(
        default=True,
        metadata={"help": "kNN top-1 before and after pretraining on a labelled held-out split (--no_knn to skip)."},
    )
    knn_k: int = field(default=200, metadata={"help": "Neighbours of the kNN evaluation."})
    knn_temperature: float = field(default=0.1, metadata={"help": "Temperature of the kNN evaluation."})
    knn_every_n_steps: int | None = field(
        default=None, metadata={"help": "Also log the kNN top-1 (knn_top1) every so many steps during training."}
    )


def _fail(command: str, message: str, code: int = 1) -> int:
    print(f"ssl-hub {command}: error: {message}", file=sys.stderr)
    return code


def _json_object(flag: str, text: str | None, example: str) -> dict[str, Any]:
    """The JSON object given as ``flag`` (``{}`` when not given); ``ValueError`` saying what is wrong otherwise."""
    if not text:
        return {}
    return json_object(flag, text, example) or {}


def _pop_push_to_hub(argv: list[str]) -> tuple[str | None, list[str]]:
    """Take ``--push-to-hub REPO`` out of argv (TrainingArguments has a boolean flag of that name)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--push-to-hub", "--push_to_hub", dest="push_to_hub", default=None)
    known, rest = parser.parse_known_args(argv)
    return known.push_to_hub, rest


def _describe_flags(parser: argparse.ArgumentParser, descriptions: dict[str, str]) -> None:
    """Give each undescribed ``--NAME`` flag the description of ``NAME`` (``--help`` then shows it with its
    default)."""
    for action in parser._actions:
        text = descriptions.get(action.dest)
        if text is not None and action.help is None and f"--{action.dest}" in action.option_strings:
            action.help = text.replace("%", "%%")  # argparse formats help with %


def run_pretrain(argv: list[str]) -> int:
    from transformers import HfArgumentParser, set_seed

    from ssl_hub.methods.base import RECIPE_BATCH_SIZE, SSLMethod
    from ssl_hub.training.arguments import (
        RECIPE_DEPENDENT,
        PretrainingArguments,
        complete_from_recipe,
        recommended_training_arguments,
    )

    first = argparse.ArgumentParser(prog="ssl-hub pretrain", add_help=False)
    first.add_argument("--method")
    first.add_argument("--optim")  # given or not: TrainingArguments has no "not given" value for it
    known, _ = first.parse_known_args(argv)
    if known.method is None:
        if any(a in ("-h", "--help") for a in argv):
            print(__doc__)
            print(f"Methods: {', '.join(list_methods())}")
            return 0
        return _fail("pretrain", f"--method is required; one of {', '.join(list_methods())}.", code=2)
    try:
        method_class = get_method_class(known.method)
    except ValueError as error:
        return _fail("pretrain", str(error), code=2)
    push_repo, argv = _pop_push_to_hub(argv)

    def parse(method_config: Any = None) -> tuple[Any, Any, Any]:
        """The command line parsed over the recipe for ``method_config`` (default: the config class's defaults)."""
        recipe = recommended_training_arguments(method_class, method_config)
        recipe_help = f"Without --learning_rate: the recipe's {recipe['learning_rate']:g}"
        if method_class.learning_rate_scaling:
            recipe_help += (
                f" for a global batch of {RECIPE_BATCH_SIZE}, scaled ({method_class.learning_rate_scaling}) to yours"
            )
        if recipe.get("timm_optimizer"):
            recipe_help += f", with timm's {recipe['timm_optimizer']} unless --optim or --timm_optimizer is given"
        if method_class.backbone_training_arguments is not SSLMethod.backbone_training_arguments:
            recipe_help += (
                f"; the optimizer, its rate or the weight decay follow the backbone ({method_class.__name__}."
                "backbone_training_arguments"
                "; the card names the one used)"
            )
        parser = HfArgumentParser(
            cast(Any, [PretrainCommand, method_class.config_class, PretrainingArguments]),
            prog="ssl-hub pretrain",
            description=f"Pretrain with {method_class.display_name}. {recipe_help}.",
        )
        _describe_flags(parser, method_class.config_class.field_descriptions())
        # None = not given: complete_from_recipe fills these in from the recipe
        not_given = dict.fromkeys(("output_dir", *RECIPE_DEPENDENT))
        parser.set_defaults(**{**recipe, **not_given})
        return cast(tuple[Any, Any, Any], parser.parse_args_into_dataclasses(argv))

    try:  # twice: the recipe may follow the method's config (MoCo's version), which is known after the first parse
        _, method_config, _ = parse()
        command, method_config, args = parse(method_config)
    except ValueError as error:
        return _fail("pretrain", str(error), code=2)
    if not args.output_dir:
        return _fail("pretrain", "--output-dir is required.", code=2)
    try:
        backbone_kwargs = _json_object("--backbone_kwargs", command.backbone_kwargs, '{"drop_path_rate": 0.1}')
        set_seed(args.seed)  # the initial weights follow --seed, the same on every rank of a torchrun launch
        method = method_class(command.backbone, method_config, backbone_kwargs=backbone_kwargs)
    except (ValueError, TypeError, OSError, RuntimeError, ImportError) as error:
        return _fail("pretrain", str(error))
    given = [name for name in RECIPE_DEPENDENT if getattr(args, name) is not None]
    try:  # the recipe may follow the backbone too (MoCo v3: LARS for ResNets), known once the method is built
        complete_from_recipe(args, method, given + ["optim"] * (known.optim is not None))
    except ValueError as error:
        return _fail("pretrain", str(error), code=2)
    return _pretrain(command, method, args, push_repo)


def _pretrain(command: PretrainCommand, method: Any, args: Any, push_repo: str | None) -> int:
    from ssl_hub.training.pretrain import pretrain

    try:
        transform_kwargs = _json_object("--transform_kwargs", command.transform_kwargs, '{"gaussian_blur": 0.0}')
        result = pretrain(
            method,
            command.data,
            args,
            image_size=command.image_size,
            transform_kwargs=transform_kwargs,
            eval_dataset=command.eval_data,
            knn=command.knn,
            knn_k=command.knn_k,
            knn_temperature=command.knn_temperature,
            knn_every_n_steps=command.knn_every_n_steps,
            license=command.license,
        )
    except (ValueError, TypeError, OSError, RuntimeError, ImportError) as error:
        return _fail("pretrain", str(error))
    if result.output_dir is not None:
        print(f"Hub folder written to {result.output_dir}")
    if push_repo and result.output_dir is not None:
        from ssl_hub.hub.push import push_folder

        try:
            print(f"Pushed: {push_folder(result.output_dir, push_repo)}")
        except (OSError, ValueError, RuntimeError) as error:
            return _fail(
                "pretrain", f"training succeeded and {result.output_dir} is complete, but the push failed: {error}"
            )
    return 0


def run_push(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="ssl-hub push", description="Upload a hub folder to the Hugging Face Hub in one commit."
    )
    parser.add_argument("folder", help="a folder written by ssl-hub pretrain / save_pretrained")
    parser.add_argument("--repo-id", "--repo_id", required=True, help="user/name on the Hub")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--revision", default=None, help="branch to commit to (created if missing)")
    parser.add_argument("--commit-message", "--commit_message", default=None)
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the logged-in one)")
    parser.add_argument(
        "--overwrite-card", "--overwrite_card", action="store_true", help="replace a hand-edited card on the Hub"
    )
    args = parser.parse_args(argv)
    from ssl_hub.hub.push import push_folder

    try:
        url = push_folder(
            args.folder,
            args.repo_id,
            private=args.private or None,
            revision=args.revision,
            commit_message=args.commit_message,
            token=args.token,
            overwrite_card=args.overwrite_card,
        )
    except (OSError, ValueError, RuntimeError) as error:
        return _fail("push", str(error))
    print(f"Pushed: {url}")
    return 0


def run_eval(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="ssl-hub eval",
        description="kNN / linear-probe / fine-tuned top-1 of a published backbone, written into its model card "
        "(and pushed back when the source is a Hub repository).",
    )
    parser.add_argument("source", help="hub folder, local-dir:PATH or hf-hub:REPO")
    parser.add_argument("--data", default=None, help="labelled images with a held-out split (default: demo set)")
    parser.add_argument("--knn", action="store_true", help="run the kNN classifier (default: kNN and linear probe)")
    parser.add_argument("--linear", action="store_true", help="run the linear probe (default: kNN and linear probe)")
    parser.add_argument(
        "--finetune", action="store_true", help="fine-tune the backbone with a new linear head (transformers.Trainer)"
    )
    parser.add_argument("--knn-k", "--knn_k", type=int, default=200)
    parser.add_argument("--knn-temperature", "--knn_temperature", type=float, default=0.1)
    parser.add_argument("--linear-epochs", "--linear_epochs", type=int, default=100)
    parser.add_argument("--finetune-epochs", "--finetune_epochs", type=float, default=3.0)
    parser.add_argument("--finetune-learning-rate", "--finetune_learning_rate", type=float, default=1e-3)
    parser.add_argument("--batch-size", "--batch_size", type=int, default=256, help="images per batch")
    parser.add_argument(
        "--num-workers", "--num_workers", type=int, default=0, help="DataLoader workers that preprocess the images"
    )
    parser.add_argument("--no-push", "--no_push", action="store_true", help="do not push results to the Hub")
    parser.add_argument("--token", default=None, help="Hub token for the push (default: HF_TOKEN / logged-in)")
    args = parser.parse_args(argv)
    from ssl_hub.eval.evaluate import evaluate_published

    frozen = not (args.knn or args.linear or args.finetune)  # no evaluation named: the two on frozen features
    try:
        entries = evaluate_published(
            args.source,
            args.data,
            knn=args.knn or frozen,
            linear=args.linear or frozen,
            finetune=args.finetune,
            knn_k=args.knn_k,
            knn_temperature=args.knn_temperature,
            linear_epochs=args.linear_epochs,
            finetune_epochs=args.finetune_epochs,
            finetune_learning_rate=args.finetune_learning_rate,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            push=not args.no_push,
            token=args.token,
        )
    except (OSError, ValueError, RuntimeError, ImportError) as error:
        return _fail("eval", str(error))
    for entry in entries:
        print(f"{entry['name']} on {entry['dataset_name']} ({entry['split']}): {entry['value']:.2f} %")
    return 0


def run_convert(argv: list[str]) -> int:
    from ssl_hub.conversion import FORMATS

    parser = argparse.ArgumentParser(
        prog="ssl-hub convert",
        description="Convert the backbone of another library's checkpoint into a hub folder (config.json + "
        "model.safetensors + a model card saying what was converted from what). Heads and teachers are dropped.",
    )
    parser.add_argument("checkpoint", help="the checkpoint file (.ckpt, .pth, .pth.tar, .pt, .safetensors)")
    parser.add_argument(
        "--from", dest="source_format", metavar="FORMAT", required=True, help=f"its format: {', '.join(FORMATS)}"
    )
    parser.add_argument("--output-dir", "--output_dir", required=True, help="the hub folder to write")
    parser.add_argument(
        "--backbone",
        default=None,
        help="timm architecture of the weights (default: named by the checkpoint, or "
        "recognised for standard ViTs and ResNets)",
    )
    parser.add_argument("--image-size", "--image_size", type=int, default=None, help="input size to record, px")
    parser.add_argument(
        "--license",
        default=None,
        help="licence of the weights (default: the official weights' for dino, mocov3, mae, vicregl)",
    )
    parser.add_argument("--method", default=None, help="ssl_hub method that trained them (lightly, torchvision)")
    parser.add_argument(
        "--encoder", default=None, help="dino: teacher (default) or student; mocov3: base (default) or momentum"
    )
    parser.add_argument("--prefix", default=None, help="lightly, torchvision: the backbone's key prefix (detected)")
    parser.add_argument("--model-args", "--model_args", default=None, help="JSON of timm.create_model arguments")
    parser.add_argument("--base-model", "--base_model", default=None, help="Hub repository of the source weights")
    parser.add_argument(
        "--allow-pickle",
        "--allow_pickle",
        action="store_true",
        help="load a checkpoint that needs pickle "
        "(torch.load weights_only=False): it can run code from the file, so only for files you trust",
    )
    args = parser.parse_args(argv)
    from ssl_hub.conversion import convert_checkpoint

    try:
        model_args = _json_object("--model-args", args.model_args, '{"num_heads": 12}')
    except ValueError as error:
        return _fail("convert", str(error))
    try:
        result = convert_checkpoint(
            args.checkpoint,
            args.source_format,
            args.output_dir,
            backbone=args.backbone,
            image_size=args.image_size,
            license=args.license,
            method=args.method,
            encoder=args.encoder,
            prefix=args.prefix,
            model_args=model_args,
            base_model=args.base_model,
            allow_pickle=args.allow_pickle,
        )
    except (ValueError, OSError) as error:
        return _fail("convert", str(error))
    print(result.summary())
    return 0


def run_methods(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="ssl-hub methods", description="List the SSL methods.").parse_args(argv)
    for name in list_methods():
        cls = get_method_class(name)
        print(f"{name:<14} {cls.display_name:<14} {cls.paper.year}  {cls.paper.title}")
    return 0


COMMANDS = {
    "pretrain": run_pretrain,
    "eval": run_eval,
    "push": run_push,
    "convert": run_convert,
    "methods": run_methods,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ssl-hub`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(f"usage: ssl-hub {{{','.join(COMMANDS)}}} ...\n\n{__doc__}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
