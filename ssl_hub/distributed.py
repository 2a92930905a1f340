"""Cross-rank helpers for losses that need the global batch (torchrun / accelerate process groups).

Every function is a no-op in a single process, so losses call them unconditionally.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True inside an initialised process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of ranks (1 outside a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if is_distributed() else 0


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from all ranks along dim 0, keeping the gradient path to the local part.

    Backward sums the gradients every rank computed for this rank's slice, so with DDP's gradient averaging the
    update equals the gradient of the mean of the per-rank losses. Ranks must hold equally sized tensors.

    Args:
        tensor: ``(B, ...)`` on every rank.

    Returns:
        ``(world_size * B, ...)`` ordered by rank.
    """
    if not is_distributed():
        return tensor
    return cast(torch.Tensor, _Gather.apply(tensor))


class _Gather(torch.autograd.Function):
    """All-gather with a gradient: backward sums the ranks' gradients of the whole and keeps this rank's slice.

    The gradient is made contiguous before it is sent: on gloo a strided one (the gradient of a transposed product,
    as VICRegL's per-location covariance gives) came back wrong through ``torch.distributed.nn``'s all-gather
    (measured in ``tests/test_gathered_losses.py``).
    """

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rows = tensor.shape[0]
        parts = [torch.empty_like(tensor, memory_format=torch.contiguous_format) for _ in range(world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        summed = grad.clone(memory_format=torch.contiguous_format)  # (W * B, ...)
        dist.all_reduce(summed)
        return summed[rank() * ctx.rows : (rank() + 1) * ctx.rows]


@torch.no_grad()
def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Like :func:`gather` without a gradient path: for queues, memory banks and statistics.

    A CPU tensor travels through the accelerator when the backend cannot send it (NCCL) and comes back on the CPU.
    """
    if not is_distributed():
        return tensor
    sent = _sendable(tensor)
    parts = [torch.empty_like(sent) for _ in range(world_size())]
    dist.all_gather(parts, sent)
    return torch.cat(parts, dim=0).to(tensor.device)


@torch.no_grad()
def gather_uneven(tensor: torch.Tensor) -> torch.Tensor:
    """:func:`gather_no_grad` for ranks holding different numbers of rows (a dataset's shares, say).

    Args:
        tensor: ``(B_r, ...)`` on rank ``r``; the trailing dimensions agree on every rank.

    Returns:
        ``(sum of B_r, ...)`` ordered by rank.
    """
    if not is_distributed():
        return tensor
    sizes = gather_no_grad(torch.tensor([tensor.shape[0]], device=tensor.device)).tolist()
    padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = gather_no_grad(padded).split(max(sizes))
    return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])


@torch.no_grad()
def broadcast_module(module: torch.nn.Module, source: int = 0) -> None:
    """Give ``module`` rank ``source``'s parameters and buffers on every rank, as DDP does when it wraps a model."""
    if not is_distributed():
        return
    for tensor in module.state_dict().values():  # detached views of the module's own tensors
        sent = _sendable(tensor)
        dist.broadcast(sent, source)
        if sent is not tensor:
            tensor.copy_(sent)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks with a gradient path (returns a new tensor): backward sums the ranks' gradients."""
    if not is_distributed():
        return tensor
    return cast(torch.Tensor, _AllReduceSum.apply(tensor))


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        summed = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(summed)
        return summed

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        summed = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(summed)
        return summed


def _sendable(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` (contiguous) on a device the process group's backend sends from: the accelerator's for a CPU
    tensor under a backend without CPU support (NCCL), else where it is."""
    backend = str(dist.get_backend())
    if tensor.device.type == "cpu" and "gloo" not in backend and backend != "mpi":
        accelerator = torch.accelerator.current_accelerator()
        if accelerator is not None:
            index = torch.get_device_module(accelerator.type).current_device()
            return tensor.to(torch.device(accelerator.type, index))
    return tensor.contiguous()
