"""First-in-first-out memory bank of embeddings: MoCo's queue of negatives, NNCLR's support set."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ssl_hub import distributed
from ssl_hub._validation import check_positive_int


class MemoryBankModule(nn.Module):
    """A ring buffer of ``size`` embeddings that are written batch by batch and read as negatives / neighbours.

    The bank starts filled with random unit vectors, as in MoCo (He et al., 2020). Under multi-process training
    :meth:`enqueue` writes the batch gathered from all ranks, so every rank holds the same bank. The buffers are
    part of ``state_dict`` (Trainer checkpoints and ``ssl/`` capture them).

    Args:
        size: Number of embeddings kept.
        dim: Embedding width; ``None`` allocates the bank at the first :meth:`enqueue`.
        gather_distributed: Write the embeddings of all ranks (keeps the banks identical across ranks).
    """

    memory: torch.Tensor
    pointer: torch.Tensor

    def __init__(self, size: int = 65536, dim: int | None = None, gather_distributed: bool = True) -> None:
        super().__init__()
        check_positive_int("size", size, "MemoryBankModule")
        if dim is not None:
            check_positive_int("dim", dim, "MemoryBankModule")
        self.size = size
        self.gather_distributed = gather_distributed
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("memory", self._random_memory(dim) if dim is not None else torch.empty(0))

    def _random_memory(self, dim: int, device: torch.device | None = None) -> torch.Tensor:
        return F.normalize(torch.randn(self.size, dim, device=device), dim=1)

    @property
    def is_initialized(self) -> bool:
        return self.memory.numel() > 0

    def get(self) -> torch.Tensor:
        """The stored embeddings, ``(size, dim)``, detached (a copy, so a later write does not alter it)."""
        if not self.is_initialized:
            raise RuntimeError("MemoryBankModule is empty: call enqueue() once before reading it.")
        return self.memory.detach().clone()

    @torch.no_grad()
    def enqueue(self, embeddings: torch.Tensor) -> None:
        """Write ``(B, dim)`` embeddings over the oldest entries (wrapping around the end of the bank)."""
        if self.gather_distributed:
            embeddings = distributed.gather_no_grad(embeddings)
        embeddings = embeddings.detach()
        if not self.is_initialized:
            self.memory = self._random_memory(embeddings.shape[1], embeddings.device).to(embeddings.dtype)
        if embeddings.shape[1] != self.memory.shape[1]:
            raise ValueError(
                f"MemoryBankModule holds {self.memory.shape[1]}-dim embeddings, got {embeddings.shape[1]}-dim ones."
            )
        embeddings = embeddings[-self.size :]  # a batch larger than the bank keeps its newest rows
        indices = (self.pointer + torch.arange(embeddings.shape[0], device=self.memory.device)) % self.size
        finite = torch.isfinite(embeddings).all(dim=1, keepdim=True)  # a NaN batch must not poison the bank
        self.memory[indices] = torch.where(finite, embeddings.to(self.memory.dtype), self.memory[indices])
        self.pointer.copy_((self.pointer + embeddings.shape[0]) % self.size)

    def forward(self, output: torch.Tensor, update: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """LightlySSL-style call: return ``output`` and the bank as it was before ``output`` was (optionally) written.

        Args:
            output: ``(B, dim)`` embeddings of the current batch.
            update: Write ``output`` into the bank after reading it.

        Returns:
            ``output`` unchanged and the bank, ``(size, dim)``.
        """
        if not self.is_initialized:
            with torch.no_grad():
                self.memory = self._random_memory(output.shape[1], output.device).to(output.dtype)
        bank = self.get()
        if update:
            self.enqueue(output)
        return output, bank

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # A lazily sized bank takes its shape from the checkpoint.
        stored = state_dict.get(prefix + "memory")
        if stored is not None and not self.is_initialized:
            self.memory = torch.empty_like(stored, device=self.memory.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
