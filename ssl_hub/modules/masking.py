"""Token masks for masked-image methods: random, block, inverse-block and prefix masks, and their random source.

Every function draws from an optional ``torch.Generator``, so a mask is reproducible under a seed, and masks exactly
:func:`num_masked` tokens of every image (ratio masks) so that a batch of masked sequences keeps one length.
Masks are boolean ``(B, N)`` tensors over the patch tokens in raster order, ``True`` where a token is masked.

A method draws its masks from a :class:`MaskingRNG`: a seed and a step counter saved with the method, so that a
saved and reloaded method, or a resumed run, draws the very same masks, and each rank of a distributed run
different ones.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ssl_hub import distributed
from ssl_hub._validation import check_positive, check_positive_int, check_probability

Device = torch.device | str | None


def num_masked(num_tokens: int, mask_ratio: float) -> int:
    """How many of ``num_tokens`` tokens a ratio mask hides: ``mask_ratio * num_tokens`` rounded, halves up."""
    check_probability("mask_ratio", mask_ratio, "num_masked")
    return math.floor(mask_ratio * num_tokens + 0.5)


def _grid(grid_size: int | tuple[int, int]) -> tuple[int, int]:
    height, width = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
    check_positive_int("grid_size", height, "block_mask")
    check_positive_int("grid_size", width, "block_mask")
    return height, width


def random_mask(
    batch_size: int,
    num_tokens: int,
    mask_ratio: float,
    *,
    generator: torch.Generator | None = None,
    device: Device = None,
) -> torch.Tensor:
    """Mask :func:`num_masked` tokens of each sequence uniformly at random (MAE, He et al. 2021, section 3).

    Args:
        batch_size: Number of sequences ``B``.
        num_tokens: Tokens per sequence ``N``.
        mask_ratio: Fraction of tokens to mask.
        generator: Random source (on ``device``); torch's default generator if ``None``.
        device: Device of the mask; the generator's device by default.

    Returns:
        ``(B, N)`` boolean mask, ``True`` where masked.
    """
    device = device if device is not None else (generator.device if generator is not None else None)
    count = num_masked(num_tokens, mask_ratio)
    noise = torch.rand(batch_size, num_tokens, generator=generator, device=device)  # (B, N)
    masked = noise.argsort(dim=1)[:, :count]  # (B, M): the tokens of the smallest noise
    mask = torch.zeros(batch_size, num_tokens, dtype=torch.bool, device=device)
    return mask.scatter_(1, masked, True)


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """A uniform integer in ``[low, high]``."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def _block_mask_image(
    height: int,
    width: int,
    count: int,
    min_block_patches: int,
    max_block_patches: int,
    log_aspect: tuple[float, float],
    max_attempts: int,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Rectangles of patches until ``count`` are masked, then bordering patches for any rest (one image)."""
    mask = torch.zeros(height, width, dtype=torch.bool)
    masked = 0
    while masked < count:
        budget = min(max_block_patches, count - masked)
        added = 0
        for _ in range(max_attempts):
            area = _uniform(min_block_patches, budget, generator)  # as BEiT: in [budget, min] if budget < min
            aspect = math.exp(_uniform(*log_aspect, generator))
            rows = round(math.sqrt(area * aspect))
            cols = round(math.sqrt(area / aspect))
            if not (0 < rows <= height and 0 < cols <= width):
                continue
            top = _randint(0, height - rows, generator)
            left = _randint(0, width - cols, generator)
            block = mask[top : top + rows, left : left + cols]
            new = int((~block).sum())
            if 0 < new <= budget:
                block.fill_(True)
                added = new
                break
        if added == 0:  # no block fits the remaining budget any more
            break
        masked += added
    for _ in range(count - masked):  # complete the exact count, growing the masked area patch by patch
        padded = nn.functional.pad(mask, (1, 1, 1, 1))  # (h + 2, w + 2)
        border = ~mask & (padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:])  # (h, w)
        candidates = (border if bool(border.any()) else ~mask).flatten().nonzero().squeeze(1)  # (F,)
        mask.view(-1)[candidates[_randint(0, len(candidates) - 1, generator)]] = True
    return mask.flatten()  # (h * w,)


def _block_masks(
    batch_size: int,
    grid_size: tuple[int, int],
    count: int,
    min_block_patches: int,
    max_block_patches: int | None,
    min_aspect_ratio: float,
    max_aspect_ratio: float | None,
    max_attempts: int,
    generator: torch.Generator | None,
    device: Device,
    owner: str,
) -> torch.Tensor:
    check_positive_int("min_block_patches", min_block_patches, owner)
    check_positive_int("max_attempts", max_attempts, owner)
    if max_block_patches is not None:
        check_positive_int("max_block_patches", max_block_patches, owner, minimum=min_block_patches)
    check_positive("min_aspect_ratio", min_aspect_ratio, owner)
    max_aspect_ratio = 1 / min_aspect_ratio if max_aspect_ratio is None else max_aspect_ratio
    if not min_aspect_ratio <= max_aspect_ratio:
        raise ValueError(
            f"{owner}: need 0 < min_aspect_ratio <= max_aspect_ratio, got {min_aspect_ratio} and {max_aspect_ratio}."
        )
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(
            f"{owner} draws its blocks on the CPU: pass a CPU generator (it returns the mask on `device`), got one "
            f"on {generator.device}."
        )
    height, width = grid_size
    masks = [
        _block_mask_image(
            height,
            width,
            count,
            min_block_patches,
            max_block_patches or count,
            (math.log(min_aspect_ratio), math.log(max_aspect_ratio)),
            max_attempts,
            generator,
        )
        for _ in range(batch_size)
    ]
    return torch.stack(masks).to(device)  # (B, h * w)


def block_mask(
    batch_size: int,
    grid_size: int | tuple[int, int],
    mask_ratio: float,
    *,
    min_block_patches: int = 4,
    max_block_patches: int | None = None,
    min_aspect_ratio: float = 0.3,
    max_aspect_ratio: float | None = None,
    max_attempts: int = 10,
    generator: torch.Generator | None = None,
    device: Device = None,
) -> torch.Tensor:
    """Mask rectangles of patches (BEiT's blockwise masking, Bao et al. 2022, algorithm 1; iBOT, DINOv2).

    Rectangles of ``min_block_patches`` to ``max_block_patches`` patches with an aspect ratio drawn log-uniformly
    from ``[min_aspect_ratio, max_aspect_ratio]`` are added until :func:`num_masked` patches are masked; when no
    rectangle fits the remaining budget (BEiT then stops short), patches bordering the masked area, drawn one at a
    time, complete the count, so every image has exactly the requested ratio. Drawn on the CPU, one image at a time.

    Args:
        batch_size: Number of images ``B``.
        grid_size: Patch grid ``(h, w)`` (or one side of a square grid).
        mask_ratio: Fraction of the ``h * w`` patches to mask.
        min_block_patches: Smallest rectangle, in patches (4 as iBOT and DINOv2; BEiT used 16).
        max_block_patches: Largest rectangle, in patches; ``None`` for the whole budget.
        min_aspect_ratio: Smallest height / width ratio of a rectangle.
        max_aspect_ratio: Largest ratio; ``None`` for ``1 / min_aspect_ratio``.
        max_attempts: Rectangles drawn before giving up on one that fits.
        generator: CPU random source; torch's default generator if ``None``.
        device: Device of the returned mask.

    Returns:
        ``(B, h * w)`` boolean mask in raster order, ``True`` where masked.
    """
    height, width = _grid(grid_size)
    count = num_masked(height * width, mask_ratio)
    return _block_masks(
        batch_size,
        (height, width),
        count,
        min_block_patches,
        max_block_patches,
        min_aspect_ratio,
        max_aspect_ratio,
        max_attempts,
        generator,
        device,
        "block_mask",
    )


def inverse_block_mask(
    batch_size: int,
    grid_size: int | tuple[int, int],
    mask_ratio: float,
    *,
    min_block_patches: int = 4,
    max_block_patches: int | None = None,
    min_aspect_ratio: float = 0.3,
    max_aspect_ratio: float | None = None,
    max_attempts: int = 10,
    generator: torch.Generator | None = None,
    device: Device = None,
) -> torch.Tensor:
    """Keep rectangles of patches and mask the rest (data2vec 2.0's inverse block masking, Baevski et al. 2023).

    The kept patches are placed as :func:`block_mask` places masked ones, so :func:`num_masked` patches of each
    image are masked, exactly. Takes the arguments of :func:`block_mask`, with the rectangles being the kept parts.

    Returns:
        ``(B, h * w)`` boolean mask in raster order, ``True`` where masked.
    """
    height, width = _grid(grid_size)
    kept = height * width - num_masked(height * width, mask_ratio)
    keep = _block_masks(
        batch_size,
        (height, width),
        kept,
        min_block_patches,
        max_block_patches,
        min_aspect_ratio,
        max_aspect_ratio,
        max_attempts,
        generator,
        device,
        "inverse_block_mask",
    )
    return ~keep


def mask_to_indices(mask: torch.Tensor, count: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the kept and of the masked tokens of each sequence, each in raster order.

    Args:
        mask: ``(B, N)`` boolean mask with the same number of masked tokens in every row (ratio masks have).
        count: That number ``M``, if known; else it is read from ``mask`` (one device synchronisation) and checked.

    Returns:
        ``(keep, masked)``: ``(B, N - M)`` and ``(B, M)`` long tensors.
    """
    if mask.ndim != 2 or mask.dtype != torch.bool:
        raise ValueError(f"mask_to_indices takes a (B, N) boolean mask, got {tuple(mask.shape)} {mask.dtype}.")
    if count is None:
        counts = mask.sum(dim=1)  # (B,)
        if len(counts) and not bool((counts == counts[0]).all()):
            raise ValueError(
                "mask_to_indices needs the same number of masked tokens in every row, got "
                f"{sorted(set(counts.tolist()))}; ratio masks (random_mask, block_mask) have one."
            )
        count = int(counts[0]) if len(counts) else 0
    order = mask.to(torch.uint8).argsort(dim=1, stable=True)  # (B, N): kept tokens first, each group in order
    kept = mask.shape[1] - count
    return order[:, :kept], order[:, kept:]


def random_prefix_lengths(
    batch_size: int,
    num_tokens: int,
    *,
    min_length: int = 1,
    max_length: int | None = None,
    generator: torch.Generator | None = None,
    device: Device = None,
) -> torch.Tensor:
    """Prefix lengths ``S`` drawn uniformly from ``[min_length, max_length]`` for each sequence.

    AIM (El-Nouby et al. 2024, section 3) draws ``S`` from ``[1, N - 1]``: the first ``S`` patches attend to each
    other bidirectionally and are not predicted; see :func:`prefix_causal_attention_mask`.

    Args:
        batch_size: Number of sequences ``B``.
        num_tokens: Tokens per sequence ``N``.
        min_length: Shortest prefix.
        max_length: Longest prefix; ``None`` for ``N - 1``, leaving at least one token to predict.
        generator: Random source (on ``device``); torch's default generator if ``None``.
        device: Device of the result; the generator's device by default.

    Returns:
        ``(B,)`` long tensor.
    """
    max_length = num_tokens - 1 if max_length is None else max_length
    if not 0 <= min_length <= max_length <= num_tokens:
        raise ValueError(
            f"random_prefix_lengths needs 0 <= min_length <= max_length <= num_tokens, got min_length={min_length}, "
            f"max_length={max_length}, num_tokens={num_tokens}."
        )
    device = device if device is not None else (generator.device if generator is not None else None)
    return torch.randint(min_length, max_length + 1, (batch_size,), generator=generator, device=device)


def prefix_causal_attention_mask(
    prefix_lengths: torch.Tensor, num_tokens: int, num_prefix_tokens: int = 0
) -> torch.Tensor:
    """Prefix-causal self-attention (PrefixLM, as AIM pretrains): bidirectional in the prefix, causal after it.

    The sequence is ``num_prefix_tokens`` extra tokens (class / register tokens), then ``num_tokens`` patches in
    raster order. Query ``i`` attends to key ``j`` when ``j <= i`` or when ``j`` lies in the prefix: the extra tokens
    and the first ``prefix_lengths[b]`` patches. No token sees a non-prefix patch that comes after it.

    Args:
        prefix_lengths: ``(B,)`` patches in each sequence's prefix.
        num_tokens: Patches per sequence ``N``.
        num_prefix_tokens: Extra tokens ``P`` before the patches; always part of the prefix.

    Returns:
        ``(B, 1, P + N, P + N)`` boolean mask, ``True`` where attention is allowed (``scaled_dot_product_attention``'s
        convention, which timm's attention layers take as ``attn_mask``).
    """
    if prefix_lengths.ndim != 1:
        raise ValueError(f"prefix_lengths must be a (B,) tensor, got shape {tuple(prefix_lengths.shape)}.")
    length = num_prefix_tokens + num_tokens
    position = torch.arange(length, device=prefix_lengths.device)  # (L,)
    causal = position[None, :] <= position[:, None]  # (L, L): key j at or before query i
    in_prefix = position[None, :] < (num_prefix_tokens + prefix_lengths)[:, None]  # (B, L): key j in the prefix
    return (causal[None] | in_prefix[:, None, :]).unsqueeze(1)  # (B, 1, L, L)


class MaskingRNG(nn.Module):
    """The random source of a method's masks: a seed and a step counter, saved in the method's state.

    Each :meth:`next_generator` call returns a fresh ``torch.Generator`` seeded from (seed, step, rank) and advances
    the step. A method restored with :func:`ssl_hub.load_method`, or a Trainer run resumed from a checkpoint, thus
    draws the same masks as the original would have, and ranks of a distributed run draw different ones. The state
    is a module "extra state" (a CPU tensor in ``state_dict()``), so drawing never synchronises with the device.

    Args:
        seed: Seed of the mask sequence; ``None`` draws one from torch's default generator, so ``torch.manual_seed``
            before building the method fixes the masks as it fixes the initial weights.
    """

    def __init__(self, seed: int | None = None) -> None:
        super().__init__()
        self.seed = int(torch.randint(0, 2**62, ())) if seed is None else seed
        if self.seed < 0:
            raise ValueError(f"MaskingRNG: seed must be >= 0, got {seed}.")
        self.step = 0

    def next_generator(self, device: Device = None) -> torch.Generator:
        """A generator on ``device`` for this step's masks; advances the step."""
        entropy = [self.seed, self.step, distributed.rank()]
        seed = int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0])
        self.step += 1
        return torch.Generator(device=device or "cpu").manual_seed(seed)

    def get_extra_state(self) -> torch.Tensor:
        return torch.tensor([self.seed, self.step], dtype=torch.int64)

    def set_extra_state(self, state: torch.Tensor) -> None:
        self.seed, self.step = (int(value) for value in state.tolist())

    def extra_repr(self) -> str:
        return f"seed={self.seed}, step={self.step}"
