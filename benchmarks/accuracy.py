"""Accuracy benchmark on Fashion-MNIST: every registered method on a stated CPU-sized budget.

    python benchmarks/accuracy.py --data ../shared/data/fashion-mnist --seeds 0 1 [--methods simclr byol ...]
                                  [--lightly] [--output benchmarks/results/rows.jsonl]
    python benchmarks/accuracy.py --table benchmarks/results/rows.jsonl [more.jsonl ...]

For each method and seed: pretrain with ``ssl_hub.pretrain`` (the stock Trainer, the method's default recipe and
augmentation at 32 px, budget below), then the frozen backbone's kNN top-1 (k=200, t=0.1, bank = the 60k training
images) and linear-probe top-1 on the 10k test images; wall time and images/s of the pretraining. Reference rows:
raw-pixel kNN, the untrained backbone, and with ``--lightly`` (the ``lightly`` package installed; benchmark-only,
never a dependency of ssl_hub) the same method built from LightlySSL's blocks (benchmarks/lightly_reference.py),
trained by the same Trainer on the same data, budget and seed.

Images are Fashion-MNIST's 28 x 28 grayscale, as 3 x 32 x 32 RGB. ``--output`` appends one JSON row per run as it
finishes, so that a budget too long for one sitting runs a few methods at a time; ``--checkpoint-steps`` lets one run
too long for a sitting go on in the next from its last checkpoint; ``--table`` renders saved rows as the markdown table
of benchmarks/RESULTS.md (mean ± standard deviation over seeds).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

import ssl_hub
from ssl_hub._validation import json_object
from ssl_hub.data import ArrayImageDataset, read_fashion_mnist
from ssl_hub.data.fashion_mnist import FASHION_MNIST_CLASSES
from ssl_hub.data.resolve import DataSplits
from ssl_hub.data.sources import ImageDataset
from ssl_hub.eval import effective_rank, eval_transform, evaluate_backbone, extract_features, knn_accuracy
from ssl_hub.modules.backbone import create_backbone

IMAGE_SIZE = 32
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # pretraining (the Trainer's choice) and feature extraction
DATA_CONFIG = {
    "input_size": (3, IMAGE_SIZE, IMAGE_SIZE),
    "interpolation": "bicubic",
    "mean": IMAGENET_DEFAULT_MEAN,
    "std": IMAGENET_DEFAULT_STD,
    "crop_pct": 1.0,
    "crop_mode": "center",
}


# Paper defaults sized for ImageNet runs of hundreds of epochs, scaled to this CPU budget (a few thousand images,
# a few epochs), as LightlySSL's CIFAR-10 benchmarks scale them; both implementations get the same values.
CPU_BUDGET_KWARGS: dict[str, dict[str, Any]] = {
    # 8192-wide projectors make one CPU step 7-14x a resnet18 step: LightlySSL's CIFAR heads are 2048 wide
    "barlowtwins": {"projection_hidden_dim": 2048, "projection_output_dim": 2048},
    "vicreg": {"projection_hidden_dim": 2048, "projection_output_dim": 2048},
    "vicregl": {"projection_hidden_dim": 2048, "projection_output_dim": 2048},
    "mmcr": {"projection_hidden_dim": 2048},
    # queues / support sets no larger than the data (65536 would hold mostly random or stale keys); MoCo v2's and
    # DenseCL's constant key-encoder momentum at 0.99, as LightlySSL's CIFAR-10 benchmark: at 0.999 the key encoder
    # moves only 61 % of the way in 936 steps (1 - 0.999^936); at 0.99 it averages the last ~100 query encoders
    "moco": {"memory_bank_size": 4096, "momentum_start": 0.99},
    "nnclr": {"memory_bank_size": 4096},
    "densecl": {"memory_bank_size": 4096, "dense_memory_bank_size": 4096, "momentum": 0.99},
    "smog": {"n_groups": 300, "memory_bank_size": 4096},
    # schedules counted in epochs or steps of a 100-epoch run, shortened to this run; DINO's teacher at 0.99, as in
    # LightlySSL's CIFAR-10 benchmark: at 0.996 -> 1 it keeps 15 % of its initial weights after 936 steps (pretrain's
    # warning), at 0.99 0.9 %
    "dino": {"output_dim": 4096, "warmup_teacher_temp_epochs": 1, "momentum_start": 0.99},
    "swav": {"n_prototypes": 512, "n_steps_frozen_prototypes": 10},
    "msn": {"num_prototypes": 512},
    "pmsn": {"num_prototypes": 512},
    "ibot": {"output_dim": 4096, "warmup_teacher_temp_epochs": 1},
    "dinov2": {"output_dim": 4096, "warmup_teacher_temp_epochs": 1},
    # AIM's 404M-parameter head; I-JEPA's ViT-H predictor (384 wide, 12 blocks: twice ViT-Tiny's width, on every
    # target block) at the encoder's width and half its depth
    "aim": {"head_hidden_dim": 512, "head_num_blocks": 4},
    # SimMIM's 32 px mask units are for 192 px images (6 x 6 units); a 32 px image would be one unit, all masked
    "simmim": {"mask_patch_size": 8},
    "ijepa": {"predictor_dim": 192, "predictor_depth": 6},
}


def balanced_subset(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` indices, the same number per class, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    per_class = count // 10
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                                   for c in range(10)]))  # fmt: skip


def raw_pixel_knn(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray) -> float:
    """kNN (cosine, k=200, t=0.1) on the raw 784 pixel values: the baseline an SSL backbone must beat."""
    as_features = [torch.from_numpy(a.reshape(len(a), -1).astype(np.float32)) for a in (train, test)]
    labels = [torch.from_numpy(a.astype(np.int64)) for a in (train_labels, test_labels)]
    return knn_accuracy(as_features[0], labels[0], as_features[1], labels[1], k=200, temperature=0.1)


def row_label(method: str, *overrides: dict[str, Any], training: tuple[str, ...] = (), note: str | None = None) -> str:
    """The method's name, plus the method and augmentation arguments given on the command line, the recipe settings
    replaced (:func:`recipe_overrides`) and ``--label``'s note (the table averages the seeds of one label, so runs of
    other settings must not share it): ``barlowtwins, gaussian_blur=0.0``, ``simsiam, learning rate 0.5``."""
    arguments = [f"{key}={value}" for given in overrides for key, value in given.items()]
    return ", ".join([method, *arguments, *training, *([note] if note else [])])


def json_object_argument(text: str) -> dict[str, Any]:
    """The type of the JSON flags: a JSON object (labels and configs read its items), else a usage error saying why."""
    try:
        return json_object("the value", text, '{"output_stride": 16}') or {}
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def short_number(value: float) -> str:
    """A rate as the rows name it: 1e-3, 3e-4, 0.03, 0.5, 1.0."""
    if value != 0 and abs(value) < 0.01:
        mantissa, exponent = f"{value:e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return repr(float(value))


def recipe_overrides(args: argparse.Namespace) -> tuple[str, ...]:
    """The recipe's settings this command replaces, for the row label: ``learning rate 0.5``, ``timm larc 0.3``."""
    parts = []
    if args.timm_optimizer:
        rate = "" if args.learning_rate is None else f" {short_number(args.learning_rate)}"
        parts.append(f"timm {args.timm_optimizer}{rate}")
        parts += [f"{key}={value}" for key, value in (args.timm_optimizer_kwargs or {}).items()]
    elif args.learning_rate is not None:
        parts.append(f"learning rate {short_number(args.learning_rate)}")
    if args.optim:
        parts.append(f"optim {args.optim}")
    if args.weight_decay is not None:
        parts.append(f"weight decay {short_number(args.weight_decay)}")
    if args.warmup_ratio is not None:
        parts.append(f"warm-up ratio {short_number(args.warmup_ratio)}")
    return tuple(parts)


# Arguments that do not change a run's training: a checkpoint saved under other values of these may be resumed.
NOT_TRAINING_ARGS = {"seeds", "methods", "threads", "workers", "work_dir", "output", "table", "no_reference_rows",
                     "evaluate_initial", "evaluate_teacher", "lightly", "lightly_only", "checkpoint_steps", "data",
                     "linear_epochs", "label"}  # fmt: skip


def last_checkpoint(
    output_dir: Path, name: str, seed: int, method_config: dict[str, Any], args: argparse.Namespace
) -> str | None:
    """The last checkpoint of an interrupted run of ``name`` and ``seed`` in ``output_dir``, if its settings are this
    run's (recorded in ``run.json`` when it started: the command line's and the method's whole config, budget
    included, so that a changed CPU_BUDGET_KWARGS counts); else None, recording this run's settings. A checkpoint of
    other settings stops the benchmark rather than mixing two runs."""
    settings = {"method": name, "seed": seed, "method_config": method_config,
                **{k: v for k, v in vars(args).items() if k not in NOT_TRAINING_ARGS}}  # fmt: skip
    settings = json.loads(json.dumps(settings))  # as read back: tuples as lists
    record = output_dir / "run.json"
    checkpoints = sorted(output_dir.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    if checkpoints and record.exists() and json.loads(record.read_text()) == settings:
        print(f"# {name}, seed {seed}: resuming from {checkpoints[-1]}", flush=True)
        return str(checkpoints[-1])
    if checkpoints:
        raise SystemExit(
            f"{output_dir} holds checkpoints of a run with other settings than this one ({record} tells which): "
            "remove the folder or give another --work-dir."
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(settings))
    return None


def run_one(
    build_method: Any,
    name: str,
    seed: int,
    method_config: dict[str, Any],
    args: argparse.Namespace,
    data: dict[str, Any],
) -> dict[str, Any]:
    """Pretrain ``build_method(backbone, **method_config)`` and evaluate it: the row of ``name`` and ``seed``."""
    torch.manual_seed(seed)
    # the Trainer moves it to DEVICE too; --evaluate-initial extracts features first
    method = build_method(args.backbone, **method_config).to(DEVICE)
    initial: dict[str, Any] = {}
    if args.evaluate_initial:  # what the published backbone scores before pretraining: the method's own starting point
        with torch.random.fork_rng():  # the DataLoaders draw seeds: the pretraining must see the same random stream
            initial = evaluate_backbone(method.published, data["eval"], DATA_CONFIG, knn=True, linear=True,
                                        linear_epochs=args.linear_epochs, num_workers=args.workers)  # fmt: skip
    output_dir = Path(args.work_dir) / f"{name}-seed{seed}"
    checkpoint = last_checkpoint(output_dir, name, seed, method_config, args) if args.checkpoint_steps else None
    training_args = {
        "output_dir": str(output_dir),
        "num_train_epochs": args.epochs,
        "per_device_train_batch_size": args.batch_size,
        "seed": seed,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "logging_steps": 50,
        "dataloader_num_workers": args.workers,
        "use_cpu": not torch.cuda.is_available(),
    }
    if args.checkpoint_steps:
        training_args.update(save_strategy="steps", save_steps=args.checkpoint_steps, save_total_limit=1,
                             resume_from_checkpoint=checkpoint)  # fmt: skip
    if args.warmup_ratio is not None:
        training_args["warmup_steps"] = args.warmup_ratio
    # The recipe's rate, weight decay (which may follow the backbone: MoCo v3, LeJEPA) and optimizer unless one is
    # given; the recipes' rates are set for hundreds of epochs, not a few hundred steps.
    for flag in ("learning_rate", "weight_decay", "optim", "timm_optimizer", "timm_optimizer_kwargs"):
        if getattr(args, flag) is not None:
            training_args[flag] = getattr(args, flag)
    start = time.perf_counter()
    result = ssl_hub.pretrain(method, data["pretrain"], training_args, image_size=IMAGE_SIZE,
                              transform_kwargs=args.transform_kwargs, save=False)  # fmt: skip
    # a resumed run: the training clock of all its parts, saved in the checkpoints (the setup of each part left out)
    seconds = result.training["runtime_seconds"] if checkpoint else time.perf_counter() - start
    published = method.published
    accuracy = evaluate_backbone(published, data["eval"], DATA_CONFIG, knn=True, linear=True,
                                 linear_epochs=args.linear_epochs, num_workers=args.workers)  # fmt: skip
    row = {
        "method": name, "seed": seed, "knn": accuracy["knn_top1"], "linear": accuracy["linear_top1"],
        "seconds": seconds, "images_per_second": len(data["pretrain"]) * args.epochs / seconds,
        "final_loss": result.training["final_loss"],
        "optimizer": result.training["optimizer"], "optimizer_arguments": result.training["optimizer_arguments"],
        "learning_rate": result.training["learning_rate"],
        "augmentation": result.training["augmentation"].splitlines()[0], "device": device_name(),
    }  # fmt: skip
    # RankMe of the test features: how many directions they use (cosine kNN suffers from a few dominant ones)
    test_features, _ = extract_features(published, data["eval"].test, eval_transform(DATA_CONFIG),
                                        num_workers=args.workers)  # fmt: skip
    row["feature_rank"] = effective_rank(test_features)
    if args.method_kwargs:
        row["method_kwargs"] = args.method_kwargs
    if args.transform_kwargs:
        row["transform_kwargs"] = args.transform_kwargs
    if result.training["final_metrics"]:  # the loss's terms and other diagnostics at the last log
        row["final_metrics"] = result.training["final_metrics"]
    if initial:
        row.update(initial_knn=initial["knn_top1"], initial_linear=initial["linear_top1"])
    if checkpoint:
        row["resumed_from"] = Path(checkpoint).name
    # the other encoder of a method with an EMA teacher: the student where the teacher is published (always, to see
    # what it learnt), the teacher where the student is (with --evaluate-teacher)
    other: tuple[str, torch.nn.Module] | None = None
    if published is not method.backbone:
        other = ("student", method.backbone)
    elif args.evaluate_teacher and getattr(method, "teacher_backbone", None) is not None:  # MMCR may have none
        other = ("teacher", method.teacher_backbone)
    if other is not None:
        prefix, encoder = other
        scores = evaluate_backbone(encoder, data["eval"], DATA_CONFIG, knn=True, linear=True,
                                   linear_epochs=args.linear_epochs, num_workers=args.workers)  # fmt: skip
        row.update({f"{prefix}_knn": scores["knn_top1"], f"{prefix}_linear": scores["linear_top1"]})
    return row


def device_name() -> str:
    """What pretrained the row: its time compares only with rows of the same device."""
    return torch.cuda.get_device_name() if DEVICE == "cuda" else f"CPU, {torch.get_num_threads()} threads"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """One line per method (in order of first appearance, LightlySSL's right after ours): mean ± standard deviation
    over its seeds. Methods that publish an EMA teacher also show their student's scores, and rows run with
    --evaluate-teacher the EMA teacher's of methods that publish their student."""
    by_method: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        group = by_method.setdefault(row["method"], [])
        if row.get("seed") is not None or not group:  # a reference row (no seed) repeats in every run: once
            group.append(row)

    def cell(group: list[dict[str, Any]], key: str, unit: str = "") -> str:
        values = [r[key] for r in group if r.get(key) is not None]
        if not values:
            return "n/a"
        spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
        return f"{statistics.mean(values):.2f}{spread}{unit}"

    def pair(group: list[dict[str, Any]], prefix: str) -> str:
        if not any(f"{prefix}_knn" in r for r in group):
            return ""
        return f"{cell(group, f'{prefix}_knn')} / {cell(group, f'{prefix}_linear')}"

    # columns shown only when some row has them: the EMA teacher of a method publishing its student (rows run with
    # --evaluate-teacher), the backbone before pretraining (--evaluate-initial; a method may initialise it its own way)
    optional = [(prefix, header) for prefix, header in (("teacher", "EMA teacher"), ("initial", "before pretraining"))
                if any(f"{prefix}_knn" in row for row in rows)]  # fmt: skip
    lines = ["| method | seeds | kNN top-1 (%) | linear top-1 (%) | pretraining time | images/s | final loss | "
             "student kNN / linear (%) |" + "".join(f" {header} kNN / linear (%) |" for _, header in optional),
             "|---|---|---|---|---|---|---|---|" + "---|" * len(optional)]  # fmt: skip
    order = list(by_method)

    def position(name: str) -> tuple[int, bool]:
        ours = name.removeprefix("lightly ")
        return order.index(ours if ours in by_method else name), name != ours

    for name in sorted(by_method, key=position):
        group = by_method[name]
        seeds = ", ".join(str(seed) for seed in sorted(r["seed"] for r in group if r.get("seed") is not None)) or "n/a"
        lines.append(f"| {name} | {seeds} | {cell(group, 'knn')} | {cell(group, 'linear')} | "
                     f"{cell(group, 'seconds', ' s')} | {cell(group, 'images_per_second')} | "
                     f"{cell(group, 'final_loss')} | {pair(group, 'student')} |"
                     + "".join(f" {pair(group, prefix)} |" for prefix, _ in optional))  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--methods", nargs="*", default=ssl_hub.list_methods())
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument(
        "--backbone-kwargs",
        type=json_object_argument,
        default={},
        help="timm arguments, e.g. '{\"patch_size\": 8}' for ViTs",
    )
    parser.add_argument(
        "--method-kwargs",
        type=json_object_argument,
        default={},
        help="method config values over CPU_BUDGET_KWARGS, e.g. '{\"momentum_start\": 0.99}'; both implementations",
    )
    parser.add_argument(
        "--transform-kwargs",
        type=json_object_argument,
        default={},
        help="arguments of the methods' transforms, e.g. "
        "'{\"gaussian_blur\": 0.0}'; LightlySSL's transforms take the same names",
    )
    parser.add_argument("--pretrain-images", type=int, default=10000, help="class-balanced subset for pretraining")
    parser.add_argument("--epochs", type=float, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=None, help="instead of each method's recipe")
    parser.add_argument("--warmup-ratio", type=float, default=None, help="instead of each method's recipe")
    parser.add_argument("--optim", default=None, help="a TrainingArguments optim instead of the recipe's optimizer")
    parser.add_argument(
        "--timm-optimizer",
        default=None,
        help="a timm optimizer (lars, larc...) instead of the recipe's; needs --learning-rate",
    )
    parser.add_argument(
        "--timm-optimizer-kwargs",
        type=json_object_argument,
        default=None,
        help="its arguments, e.g. '{\"trust_coeff\": 0.02}'",
    )
    parser.add_argument("--weight-decay", type=float, default=None, help="instead of the recipe's")
    parser.add_argument("--linear-epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0])
    parser.add_argument(
        "--workers", type=int, default=0, help="DataLoader workers for the augmentations and the evaluations' images"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-reference-rows", action="store_true",
                        help="skip the raw-pixel and untrained-backbone rows (the same in every run)")  # fmt: skip
    parser.add_argument("--evaluate-initial", action="store_true",
                        help="also evaluate each method's published backbone before pretraining")  # fmt: skip
    parser.add_argument("--evaluate-teacher", action="store_true",
                        help="also evaluate the EMA teacher of methods that publish their student")  # fmt: skip
    parser.add_argument("--lightly", action="store_true", help="also train LightlySSL's version of each method")
    parser.add_argument("--lightly-only", action="store_true",
                        help="train only LightlySSL's version (to add its rows beside ours saved earlier)")  # fmt: skip
    parser.add_argument("--work-dir", default="/tmp/ssl_hub-accuracy")
    parser.add_argument(
        "--checkpoint-steps",
        type=int,
        default=None,
        help="save a checkpoint in --work-dir every so many steps, and resume an interrupted run of the same method, "
        "seed and settings from its last one (removed once its row is written)",
    )
    parser.add_argument(
        "--label",
        default=None,
        help="appended to every row's label, the untrained backbone's too, for a setting the label does not name "
        "(the backbone's arguments), e.g. 'output_stride=16'",
    )
    parser.add_argument("--output", default=None, help="append the JSON rows to this file as they finish")
    parser.add_argument("--table", nargs="+", metavar="JSONL", help="only print the table of rows saved by --output")
    args = parser.parse_args()
    if args.table:
        print(markdown_table([json.loads(line) for path in args.table for line in Path(path).read_text().splitlines()]))
        return
    if not args.data:
        parser.error("--data is required to run the benchmark")
    if args.threads:
        torch.set_num_threads(args.threads)

    train_images, train_labels = read_fashion_mnist(args.data, "train")
    test_images, test_labels = read_fashion_mnist(args.data, "test")
    subset = balanced_subset(train_labels, args.pretrain_images, seed=0)
    data = {
        "pretrain": ArrayImageDataset(train_images[subset], train_labels[subset], FASHION_MNIST_CLASSES),
        "eval": DataSplits(
            ImageDataset(ArrayImageDataset(train_images, train_labels, FASHION_MNIST_CLASSES)),
            ImageDataset(ArrayImageDataset(test_images, test_labels, FASHION_MNIST_CLASSES)),
            {"name": "Fashion-MNIST"},
        ),
    }
    print(f"# {args.backbone}, {IMAGE_SIZE} px, "
          f"{args.pretrain_images} pretraining images x {args.epochs} epochs, batch {args.batch_size}, learning rate "
          f"{args.learning_rate or 'of the recipe'}, warm-up {args.warmup_ratio or 'of the recipe'}, seeds "
          f"{args.seeds}, {device_name()}, {platform.machine()}, torch {torch.__version__}", flush=True)  # fmt: skip

    rows: list[dict[str, Any]] = []

    def report(row: dict[str, Any]) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.output:
            with open(args.output, "a") as file:
                file.write(json.dumps(row) + "\n")

    def run_and_report(build_method: Any, label: str, seed: int, method_config: dict[str, Any]) -> None:
        report(run_one(build_method, label, seed, method_config, args, data))
        if args.checkpoint_steps:  # the row is saved: a later run of these settings starts afresh
            shutil.rmtree(Path(args.work_dir) / f"{label}-seed{seed}")

    if not args.no_reference_rows:
        raw_pixels = raw_pixel_knn(train_images, train_labels, test_images, test_labels)
        report({"method": "raw pixels", "seed": None, "knn": raw_pixels, "linear": None})
        torch.manual_seed(0)  # the untrained row is reproducible too
        untrained_backbone = create_backbone(args.backbone, **args.backbone_kwargs).to(DEVICE)
        untrained = evaluate_backbone(untrained_backbone, data["eval"], DATA_CONFIG, knn=True, linear=True,
                                      linear_epochs=args.linear_epochs, num_workers=args.workers)  # fmt: skip
        report({"method": row_label(f"untrained {args.backbone}", note=args.label), "seed": None,
                "knn": untrained["knn_top1"], "linear": untrained["linear_top1"]})  # fmt: skip

    references: dict[str, Any] = {}
    if args.lightly or args.lightly_only:
        from lightly_reference import LIGHTLY_METHODS

        references = LIGHTLY_METHODS
    for name in args.methods:
        kwargs = {"backbone_kwargs": args.backbone_kwargs, **CPU_BUDGET_KWARGS.get(name, {}), **args.method_kwargs}
        label = row_label(name, args.method_kwargs, args.transform_kwargs, training=recipe_overrides(args),
                          note=args.label)  # fmt: skip
        for seed in args.seeds:
            if not args.lightly_only:
                run_and_report(partial(ssl_hub.create_method, name), label, seed, kwargs)
            if name in references:
                run_and_report(references[name], f"lightly {label}", seed, kwargs)

    print("\n" + markdown_table(rows))


if __name__ == "__main__":
    main()
