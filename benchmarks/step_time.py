"""Step time and step memory of each method against the bare backbone on the same views, in one run.

    python benchmarks/step_time.py --backbone resnet18 --image-size 32 --batch-size 128 [--methods simclr ...]

For every method: one batch of views is made with the method's own transform; then, interleaved so that drift in
machine load hits both alike, we time (a) the bare timm backbone's forward + backward + SGD step on exactly those
views (same-size views concatenated into one batch), (b) the method's forward (backbone, heads, loss) + backward +
SGD step, and (c) the same method step driven by ``transformers.Trainer`` (from on_step_begin to on_step_end).
Ratios b/a and c/a are ssl_hub's overhead (heads and loss included). With ``--lightly`` (the ``lightly`` package
installed), (d) the same step of LightlySSL's implementation (benchmarks/lightly_reference.py) on views made by its
own transform is timed in the same interleaved loop. Step memory: the peak allocated during a step
(GPU: torch's peak statistics; CPU: the growth of the process's resident memory during the first step, sampled every
millisecond in a fresh process), i.e. activations, gradients and optimizer state beyond the weights. Prints a
markdown table.
"""

from __future__ import annotations

import argparse
import copy
import gc
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import Trainer, TrainerCallback, TrainingArguments

import ssl_hub
from ssl_hub.data.views import collate_views

sys.path.insert(0, str(Path(__file__).parent))  # lightly_reference.py, next to this script

HEADER = (
    "| method | bare backbone (ms) | ssl_hub step (ms) | ratio | Trainer step (ms) | ratio "
    "| step memory MiB, bare / ssl_hub (ratio) |"
)


def make_views(method: ssl_hub.SSLMethod, batch_size: int, image_size: int) -> list[torch.Tensor]:
    rng = np.random.default_rng(0)
    transform = method.make_transform(input_size=image_size)
    images = [
        Image.fromarray(rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)) for _ in range(batch_size)
    ]
    return collate_views([{"views": transform(image)} for image in images])["views"]


def group_by_shape(views: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    groups: dict[tuple[int, ...], list[torch.Tensor]] = {}
    for view in views:
        groups.setdefault(tuple(view.shape[1:]), []).append(view)
    return list(groups.values())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(step: Callable[[], None], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    step()
    sync(device)
    return time.perf_counter() - start


def peak_memory(step: Callable[[], None], device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats(device)
    step()
    sync(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


class StepTimer(TrainerCallback):
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times: list[float] = []
        self._start = 0.0

    def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
        sync(self.device)
        self._start = time.perf_counter()

    def on_step_end(self, *args: Any, **kwargs: Any) -> None:
        sync(self.device)
        self.times.append(time.perf_counter() - self._start)


class FixedViews(torch.utils.data.Dataset):
    """The benchmark's one batch, served item by item to the Trainer."""

    def __init__(self, views: list[torch.Tensor]) -> None:
        self.views = [v.cpu() for v in views]

    def __len__(self) -> int:
        return self.views[0].shape[0] * 1000

    def __getitem__(self, index: int) -> dict[str, list[torch.Tensor]]:
        index %= self.views[0].shape[0]
        return {"views": [v[index] for v in self.views]}


def make_steps(
    name: str, args: argparse.Namespace, device: torch.device
) -> tuple[ssl_hub.SSLMethod, list[torch.Tensor], Callable[[], None], Callable[[], None]]:
    """The method, its views, and the two steps compared: bare backbone vs method, both with SGD."""
    torch.manual_seed(0)
    method = ssl_hub.create_method(name, backbone=args.backbone).to(device)
    method.fit_input_size(args.image_size)
    views = [v.to(device) for v in make_views(method, args.batch_size, args.image_size)]
    # the very backbone the method trains (e.g. made dynamic for multi-crop), before training, on its own
    bare = copy.deepcopy(method.backbone).requires_grad_(True)
    bare_optimizer = torch.optim.SGD(bare.parameters(), lr=1e-3, momentum=0.9)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    images = [v for v in views if v.ndim == 4]  # VICRegL's views also carry their (B, 5) locations
    same_size_batches = [torch.cat(group) for group in group_by_shape(images)]  # the bare model's best batching

    def bare_step() -> None:
        with autocast:
            loss = sum(bare(batch).float().mean() for batch in same_size_batches)
        loss.backward()
        bare_optimizer.step()
        bare_optimizer.zero_grad(set_to_none=True)

    return method, views, bare_step, training_step(method, views, args, device)


def training_step(model: torch.nn.Module, views: list[torch.Tensor], args: argparse.Namespace,
                  device: torch.device) -> Callable[[], None]:  # fmt: skip
    """One step of an SSL method (ours or LightlySSL's) on ``views``: forward to its loss, backward, SGD."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss = model(views=views).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def cpu_step_memory(step: Callable[[], None]) -> float:
    """MiB the process grows by during ``step`` (activations, gradients, optimizer state), sampled every ms."""
    import threading

    import psutil

    gc.collect()
    process = psutil.Process()
    baseline = peak = process.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    step()
    done.set()
    sampler.join()
    return (peak - baseline) / 2**20


def cpu_peak_memory(name: str, which: str, args: argparse.Namespace) -> float:
    """:func:`cpu_step_memory` of the first ``which`` step, in a fresh process (freed memory stays in RSS)."""
    command = [sys.executable, __file__, "--methods", name, "--backbone", args.backbone, "--image-size",
               str(args.image_size), "--batch-size", str(args.batch_size), "--memory-of", which]  # fmt: skip
    if args.threads:
        command += ["--threads", str(args.threads)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return float(output.strip().splitlines()[-1])


def reference_step(name: str, args: argparse.Namespace, device: torch.device) -> Callable[[], None] | None:
    """The step of LightlySSL's implementation of ``name`` (benchmarks/lightly_reference.py) on views made by its
    own transform, with SGD; ``None`` when ``--lightly`` is off or LightlySSL lacks the method."""
    if not args.lightly:
        return None
    from lightly_reference import LIGHTLY_METHODS

    if name not in LIGHTLY_METHODS:
        return None
    torch.manual_seed(0)
    reference = LIGHTLY_METHODS[name](args.backbone).to(device)
    reference.fit_input_size(args.image_size)
    views = [v.to(device) for v in make_views(reference, args.batch_size, args.image_size)]
    return training_step(reference, views, args, device)


def benchmark(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    method, views, bare_step, method_step = make_steps(name, args, device)
    lightly_step = reference_step(name, args, device)
    steps = {"bare": bare_step, "method": method_step, **({"lightly": lightly_step} if lightly_step else {})}

    for _ in range(args.warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {key: [] for key in steps}
    for _ in range(args.steps):  # interleaved, so that drift in machine load hits every implementation alike
        for key, step in steps.items():
            times[key].append(timed(step, device))
    bare_times, method_times = times["bare"], times["method"]

    timer = StepTimer(device)
    trainer = Trainer(
        model=method,
        args=TrainingArguments(
            output_dir="/tmp/ssl_hub-step-time",
            max_steps=args.warmup + args.steps,
            report_to="none",
            per_device_train_batch_size=args.batch_size,
            save_strategy="no",
            disable_tqdm=True,
            logging_steps=10_000,
            optim="sgd",
            learning_rate=1e-3,
            bf16=args.bf16,
            use_cpu=device.type == "cpu",
            dataloader_pin_memory=device.type == "cuda",
            max_grad_norm=type(method).default_training_arguments()["max_grad_norm"],  # as users get it
        ),
        train_dataset=FixedViews(views),
        data_collator=collate_views,
        callbacks=[timer],
    )
    trainer.train()
    bare_ms = 1000 * statistics.median(bare_times)
    method_ms = 1000 * statistics.median(method_times)
    trainer_ms = 1000 * statistics.median(timer.times[args.warmup :])
    return {
        "method": name,
        "lightly_ms": 1000 * statistics.median(times["lightly"]) if "lightly" in times else None,
        "bare_ms": bare_ms,
        "method_ms": method_ms,
        "trainer_ms": trainer_ms,
        "bare_mib": peak_memory(bare_step, device) if device.type == "cuda" else cpu_peak_memory(name, "bare", args),
        "method_mib": peak_memory(method_step, device)
        if device.type == "cuda"
        else cpu_peak_memory(name, "method", args),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="*", default=ssl_hub.list_methods())
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--lightly", action="store_true", help="also time LightlySSL's implementation (if installed)")
    parser.add_argument("--memory-of", choices=["bare", "method"], help=argparse.SUPPRESS)  # one CPU memory probe
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.memory_of:
        _, _, bare_step, method_step = make_steps(args.methods[0], args, device)
        print(cpu_step_memory(bare_step if args.memory_of == "bare" else method_step))
        return
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    )
    print(
        f"{args.backbone}, {args.image_size} px, batch {args.batch_size}, {where}, torch {torch.__version__}, "
        f"median of {args.steps} steps after {args.warmup} warm-up{', bf16 autocast' if args.bf16 else ''}\n"
    )
    print(HEADER + (" LightlySSL step (ms) | ssl_hub / LightlySSL |" if args.lightly else ""))
    print("|---" * (9 if args.lightly else 7) + "|")
    is_vit = hasattr(ssl_hub.modules.backbone.create_backbone(args.backbone), "patch_embed")
    for name in args.methods:
        if ssl_hub.get_method_class(name).requires_vit and not is_vit:
            continue  # masked-image methods: ViT backbones only
        r = benchmark(name, args, device)
        memory = f"{r['bare_mib']:.0f} / {r['method_mib']:.0f} ({r['method_mib'] / r['bare_mib']:.2f})"
        lightly = (
            f" {r['lightly_ms']:.1f} | {r['method_ms'] / r['lightly_ms']:.3f} |" if r["lightly_ms"] else " n/a | n/a |"
        )
        print(
            f"| {r['method']} | {r['bare_ms']:.1f} | {r['method_ms']:.1f} | {r['method_ms'] / r['bare_ms']:.3f} "
            f"| {r['trainer_ms']:.1f} | {r['trainer_ms'] / r['bare_ms']:.3f} | {memory} |"
            + (lightly if args.lightly else ""),
            flush=True,
        )


if __name__ == "__main__":
    main()
