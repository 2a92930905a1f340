"""MoCo's shuffling batch norm (He et al., CVPR 2020, arXiv:1911.05722, sec. 3.3), in one process or several.

A key encoder whose batch norm normalises a query's positive key with the statistics of the query's own batch, while
the queue's negatives carry the statistics of earlier batches, lets the model "cheat": the batch statistics alone
identify the positive, the loss falls and the features learn less. MoCo shuffles the global batch across its GPUs
before the key encoder, so that a key is normalised with another subset of images than its query.
:func:`shuffled_batch_norm_forward` does that across ranks under multi-process training. In one process it shuffles
the batch and runs the key encoder on groups of at least ``group_size`` images, each group normalised with its own
statistics: the 8 GPUs x 32 images of MoCo's recipe, emulated as MoCo's official CIFAR-10 demo and LightlySSL's
``SplitBatchNorm`` do.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn

from ssl_hub import distributed

Encoder = Callable[[torch.Tensor], tuple[torch.Tensor, ...]]


def uses_batch_statistics(*modules: nn.Module) -> bool:
    """Whether any batch norm inside ``modules`` normalises with the statistics of its batch (train mode)."""
    return any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or not m.track_running_stats)
        for module in modules
        for m in module.modules()
    )


def shuffled_batch_norm_forward(encode: Encoder, images: torch.Tensor, group_size: int) -> tuple[torch.Tensor, ...]:
    """``encode(images)``, each output in the order of ``images``, with batch norm over other images than the query's.

    Multi-process: every rank encodes a random share of the global batch (MoCo's shuffling BN). One process: a random
    permutation of the ``(B, C, H, W)`` images is encoded in ``B // group_size`` groups (a single pass when that is
    below 2, where there is nothing to shuffle between). ``encode`` returns a tuple of ``(B, ...)`` tensors.
    """
    if distributed.is_distributed():
        shuffled, order = _shuffle_across_ranks(images)
        return tuple(_unshuffle_across_ranks(output, order) for output in encode(shuffled))
    groups = images.shape[0] // group_size
    if groups < 2:
        return encode(images)
    return forward_in_groups(encode, images, torch.randperm(images.shape[0], device=images.device), groups)


def forward_in_groups(
    encode: Encoder, images: torch.Tensor, order: torch.Tensor, groups: int
) -> tuple[torch.Tensor, ...]:
    """``encode`` applied to ``groups`` near-equal slices of ``images[order]``; outputs back in the order of ``images``.

    Args:
        encode: Maps ``(b, ...)`` images to a tuple of ``(b, ...)`` tensors.
        images: ``(B, ...)``.
        order: ``(B,)`` permutation: group ``g`` holds the images ``order[g * B // groups ...]`` (``tensor_split``).
        groups: Number of forward passes.
    """
    outputs = [encode(group) for group in images[order].tensor_split(groups)]
    position = torch.argsort(order)  # where each image went
    return tuple(torch.cat(parts)[position] for parts in zip(*outputs, strict=True))


@torch.no_grad()
def _shuffle_across_ranks(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's share of the global batch in a random order common to all ranks, and that order.

    Returns:
        ``(B, ...)`` images and the ``(W * B,)`` permutation (global position ``j`` holds image ``order[j]``).
    """
    gathered = distributed.gather_no_grad(images)  # (W * B, ...), ordered by rank
    order = torch.randperm(gathered.shape[0], device=images.device)
    dist.broadcast(order, src=0)
    return gathered[order.view(distributed.world_size(), -1)[distributed.rank()]], order


@torch.no_grad()
def _unshuffle_across_ranks(output: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """The ``(B, ...)`` outputs of this rank's own images, in its order, from the outputs of its shuffled share."""
    gathered = distributed.gather_no_grad(output)  # (W * B, ...) in shuffled order
    position = torch.argsort(order)  # where each image of the global batch went
    return gathered[position.view(distributed.world_size(), -1)[distributed.rank()]]
