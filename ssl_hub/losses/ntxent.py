"""NT-Xent / InfoNCE loss of SimCLR (Chen et al., 2020, arXiv:2002.05709), with MoCo's memory bank option."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ssl_hub import distributed
from ssl_hub._validation import check_positive
from ssl_hub.losses.utils import at_least_float32
from ssl_hub.modules.memory_bank import MemoryBankModule


class NTXentLoss(nn.Module):
    """Normalised temperature-scaled cross entropy over cosine similarities.

    Without a memory bank this is SimCLR's loss: each of the ``2B`` embeddings is an anchor whose positive is the
    other view of its image and whose negatives are the other ``2B - 2`` embeddings (``2WB - 2`` with
    ``gather_distributed`` over ``W`` ranks); the loss is averaged over all anchors. With a memory bank it is
    MoCo's InfoNCE: anchors ``out0``, positives ``out1``, negatives the bank, which is then updated with ``out1``.

    Args:
        temperature: Softmax temperature ``tau`` (> 0).
        memory_bank_size: ``0`` for no bank, a size, or ``(size, dim)`` to allocate the bank eagerly.
        gather_distributed: Use the embeddings of all ranks as negatives (no effect in a single process).
    """

    def __init__(
        self,
        temperature: float = 0.5,
        memory_bank_size: int | Sequence[int] = 0,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        check_positive("temperature", temperature, "NTXentLoss")
        self.temperature = temperature
        self.gather_distributed = gather_distributed
        size, dim = (memory_bank_size, None) if isinstance(memory_bank_size, int) else tuple(memory_bank_size)
        if size < 0:
            raise ValueError(f"NTXentLoss: memory_bank_size must be >= 0, got {memory_bank_size!r}.")
        self.memory_bank = MemoryBankModule(size, dim, gather_distributed=gather_distributed) if size else None

    def forward(self, out0: torch.Tensor, out1: torch.Tensor) -> torch.Tensor:
        """Loss of two ``(B, D)`` batches of embeddings, row ``i`` of each from the same image."""
        if out0.shape != out1.shape or out0.ndim != 2:
            raise ValueError(f"NTXentLoss expects two (B, D) tensors of one shape, got {out0.shape} and {out1.shape}.")
        out0 = F.normalize(at_least_float32(out0), dim=1)
        out1 = F.normalize(at_least_float32(out1), dim=1)
        if self.memory_bank is not None:
            return self._loss_with_memory_bank(out0, out1, self.memory_bank)
        return self._loss_in_batch(out0, out1)

    def _loss_with_memory_bank(
        self, out0: torch.Tensor, out1: torch.Tensor, memory_bank: MemoryBankModule
    ) -> torch.Tensor:
        _, negatives = memory_bank(out1, update=True)  # (K, D), read before out1 is written
        positive_logits = (out0 * out1).sum(dim=1, keepdim=True)  # (B, 1)
        negative_logits = out0 @ negatives.to(out0.dtype).T  # (B, K)
        logits = torch.cat([positive_logits, negative_logits], dim=1) / self.temperature
        targets = torch.zeros(out0.shape[0], dtype=torch.long, device=out0.device)
        return F.cross_entropy(logits, targets)

    def _loss_in_batch(self, out0: torch.Tensor, out1: torch.Tensor) -> torch.Tensor:
        batch_size = out0.shape[0]
        if self.gather_distributed:
            all0, all1 = distributed.gather(out0), distributed.gather(out1)  # (W * B, D)
            offset = distributed.rank() * batch_size
        else:
            all0, all1, offset = out0, out1, 0
        global_size = all0.shape[0]
        anchors = torch.cat([out0, out1], dim=0)  # (2B, D)
        candidates = torch.cat([all0, all1], dim=0)  # (2WB, D)
        logits = anchors @ candidates.T / self.temperature  # (2B, 2WB)
        local = torch.arange(batch_size, device=out0.device) + offset
        own_columns = torch.cat([local, local + global_size])  # where each anchor meets itself
        positive_columns = torch.cat([local + global_size, local])  # the other view of the same image
        rows = torch.arange(2 * batch_size, device=out0.device)
        logits = logits.index_put((rows, own_columns), logits.new_tensor(float("-inf")))
        return F.cross_entropy(logits, positive_columns)
