"""NNCLR's support set: a memory bank that answers with each embedding's nearest neighbour (arXiv:2104.14548)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ssl_hub.modules.memory_bank import MemoryBankModule


class NNMemoryBankModule(MemoryBankModule):
    """A :class:`MemoryBankModule` whose call returns, for each embedding, its nearest neighbour in the bank.

    The neighbour is ``NN(z, Q) = argmin_{q in Q} ||z / ||z|| - q / ||q|| ||``, the stored row of highest cosine
    similarity (Dwibedi et al., 2021), returned as stored and without gradient. Like the parent, the bank starts
    with random unit vectors, is read before it is (optionally) written, and under multi-process training is written
    with the batch of all ranks, so every rank finds the same neighbours.

    Args:
        size: Number of embeddings kept (NNCLR's support set: 98304).
        dim: Embedding width; ``None`` allocates the bank at the first write.
        gather_distributed: Write the embeddings of all ranks (keeps the banks identical across ranks).
    """

    def __init__(self, size: int = 65536, dim: int | None = None, gather_distributed: bool = True) -> None:
        super().__init__(size, dim, gather_distributed=gather_distributed)

    # LightlySSL's call signature: the neighbours instead of the parent's (output, bank) pair.
    def forward(self, output: torch.Tensor, update: bool = False) -> torch.Tensor:  # type: ignore[override]
        """The nearest neighbour of each row of ``output``.

        Args:
            output: ``(B, dim)`` embeddings of the current batch.
            update: Write ``output`` into the bank after the search.

        Returns:
            ``(B, dim)`` rows of the bank as it was before ``output`` was written.
        """
        output, bank = super().forward(output, update=update)  # bank: (size, dim)
        with torch.no_grad():
            query = F.normalize(output.detach().to(bank.dtype), dim=1)  # (B, dim)
            similarity = query @ F.normalize(bank, dim=1).T  # (B, size)
            return bank[similarity.argmax(dim=1)]  # (B, dim)
