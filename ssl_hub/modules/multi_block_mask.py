"""I-JEPA's multi-block masking: a large context block and several target blocks the context must not see.

Assran et al., "Self-Supervised Learning from Images with a Joint-Embedding Predictive Architecture", CVPR 2023
(arXiv:2301.08243), section 3 ("Targets", "Context") and the official ``src/masks/multiblock.py``. The patches
are positions on the patch grid in raster order, as in :mod:`ssl_hub.modules.masking`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ssl_hub._validation import check_positive, check_positive_int

Device = torch.device | str | None


@dataclass
class MultiBlockMask:
    """The blocks of a batch, as patch indices in raster order.

    Attributes:
        context: ``(B, K)`` long: the context patches (the context block minus every target block), trimmed to
            the smallest context of the batch so that the context encoder takes one batch.
        targets: ``(B, T, M)`` long: the ``T`` target blocks of each image, ``M`` patches each.
        context_block: ``(B, N)`` boolean: the context rectangle before the targets were removed from it.
    """

    context: torch.Tensor
    targets: torch.Tensor
    context_block: torch.Tensor


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """A uniform integer in ``[low, high]``."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def _check_range(name: str, low: float, high: float, owner: str, upper: float | None = None) -> None:
    check_positive(f"{name} (min)", low, owner)
    check_positive(f"{name} (max)", high, owner)
    if low > high or (upper is not None and high > upper):
        bound = f" <= {upper}" if upper is not None else ""
        raise ValueError(f"{owner}: {name} must satisfy 0 < min <= max{bound}, got ({low}, {high}).")


def block_shape(
    grid_size: tuple[int, int],
    scale: tuple[float, float],
    aspect_ratio: tuple[float, float],
    generator: torch.Generator | None = None,
) -> tuple[int, int]:
    """The ``(rows, cols)`` of a block covering a fraction ``s ~ U(scale)`` of the grid with height / width
    ``r ~ U(aspect_ratio)``: ``round(sqrt(s N r))`` by ``round(sqrt(s N / r))``, at least one patch, at most the
    grid (I-JEPA's ``_sample_block_size``)."""
    height, width = grid_size
    area = _uniform(*scale, generator) * height * width
    ratio = _uniform(*aspect_ratio, generator)
    rows = min(max(round(math.sqrt(area * ratio)), 1), height)
    cols = min(max(round(math.sqrt(area / ratio)), 1), width)
    return rows, cols


def _place(grid_size: tuple[int, int], shape: tuple[int, int], generator: torch.Generator | None) -> torch.Tensor:
    """A ``shape`` rectangle at a uniformly drawn position on the grid, as an ``(h, w)`` boolean mask."""
    (height, width), (rows, cols) = grid_size, shape
    top, left = _randint(0, height - rows, generator), _randint(0, width - cols, generator)
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[top : top + rows, left : left + cols] = True
    return mask


def multi_block_mask(
    batch_size: int,
    grid_size: tuple[int, int],
    *,
    num_targets: int = 4,
    target_scale: tuple[float, float] = (0.15, 0.2),
    target_aspect_ratio: tuple[float, float] = (0.75, 1.5),
    context_scale: tuple[float, float] = (0.85, 1.0),
    context_aspect_ratio: tuple[float, float] = (1.0, 1.0),
    min_context_patches: int = 10,
    max_attempts: int = 20,
    generator: torch.Generator | None = None,
    device: Device = None,
) -> MultiBlockMask:
    """Draw I-JEPA's context and target blocks for a batch of images.

    As the official collator, one target block shape and one context block shape are drawn for the batch
    (:func:`block_shape`), so that every image has as many target patches; each image places its ``num_targets``
    target blocks (they may overlap each other) and its context block independently and uniformly. The context is
    the context block minus all target blocks, so it never sees a target patch. When it keeps fewer than
    ``min_context_patches`` patches, the context block is placed again, up to ``max_attempts`` times; failing that
    the placement keeping most patches is used (small grids), and when none keeps any, the targets are placed
    again. Contexts are trimmed to the smallest of the batch by dropping their last patches in raster order, as the
    official collator does.

    Differences to the official code: scale and aspect ratio are drawn independently (the official code derives
    both from one uniform number), and a block may span the whole grid height or width (the official code keeps
    it one patch short).

    Args:
        batch_size: Number of images ``B``.
        grid_size: Patch grid ``(h, w)``, ``N = h * w``.
        num_targets: Target blocks per image ``T`` (4).
        target_scale: Range of a target block's area, as fractions of the grid (0.15, 0.2).
        target_aspect_ratio: Range of a target block's height / width (0.75, 1.5).
        context_scale: Range of the context block's area, as fractions of the grid (0.85, 1.0).
        context_aspect_ratio: Range of the context block's height / width (1, 1: square).
        min_context_patches: Context patches to keep at least, where the grid allows (the official ``min_keep``).
        max_attempts: Placements of the context block (and of the targets) tried.
        generator: CPU random source; torch's default generator if ``None``.
        device: Device of the returned indices.

    Returns:
        The blocks, see :class:`MultiBlockMask`.

    Raises:
        ValueError: Out-of-range arguments, or a grid so small that the targets leave no context patch.
    """
    owner = "multi_block_mask"
    height, width = grid_size
    check_positive_int("batch_size", batch_size, owner)
    check_positive_int("grid_size", height, owner)
    check_positive_int("grid_size", width, owner)
    check_positive_int("num_targets", num_targets, owner)
    _check_range("target_scale", *target_scale, owner, upper=1.0)
    _check_range("target_aspect_ratio", *target_aspect_ratio, owner)
    _check_range("context_scale", *context_scale, owner, upper=1.0)
    _check_range("context_aspect_ratio", *context_aspect_ratio, owner)
    check_positive_int("min_context_patches", min_context_patches, owner)
    check_positive_int("max_attempts", max_attempts, owner)
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(f"{owner} draws its blocks on the CPU: pass a CPU generator, got one on {generator.device}.")
    grid = (height, width)
    target_shape = block_shape(grid, target_scale, target_aspect_ratio, generator)
    context_shape = block_shape(grid, context_scale, context_aspect_ratio, generator)
    targets, contexts, blocks = [], [], []
    for _ in range(batch_size):
        for _ in range(max_attempts):
            image_targets = [_place(grid, target_shape, generator) for _ in range(num_targets)]  # T x (h, w)
            covered = torch.stack(image_targets).any(dim=0)  # (h, w)
            best_context, best_block = None, None
            for _ in range(max_attempts):
                block = _place(grid, context_shape, generator)  # (h, w)
                context = block & ~covered
                if best_context is None or context.sum() > best_context.sum():
                    best_context, best_block = context, block
                if context.sum() >= min_context_patches:
                    break
            if best_context is not None and best_block is not None and bool(best_context.any()):
                break
        else:
            raise ValueError(
                f"{owner}: {num_targets} target blocks of {target_shape[0]}x{target_shape[1]} patches leave no "
                f"context patch on a {height}x{width} patch grid; use larger images, fewer or smaller targets."
            )
        targets.append(torch.stack([t.flatten().nonzero().flatten() for t in image_targets]))  # (T, M)
        contexts.append(best_context.flatten().nonzero().flatten())  # (K_b,)
        blocks.append(best_block.flatten())  # (N,)
    kept = min(len(c) for c in contexts)
    return MultiBlockMask(
        context=torch.stack([c[:kept] for c in contexts]).to(device),
        targets=torch.stack(targets).to(device),
        context_block=torch.stack(blocks).to(device),
    )
