"""DenseCL's loss (Wang et al., CVPR 2021, arXiv:2011.09157, eq. 2-3): global plus dense InfoNCE, each with a queue."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ssl_hub._validation import check_one_of, check_positive, check_positive_int, check_probability
from ssl_hub.losses.ntxent import NTXentLoss
from ssl_hub.losses.utils import at_least_float32
from ssl_hub.modules.dense_features import select_most_similar
from ssl_hub.modules.memory_bank import MemoryBankModule

DENSE_QUEUE_KEYS = ("pooled", "matched")


def _bank_shape(name: str, value: int | Sequence[int]) -> tuple[int, int | None]:
    """``size`` or ``(size, dim)`` as ``(size, dim or None)``, refusing a size below one by name."""
    size, dim = (value, None) if isinstance(value, int) else tuple(value)
    check_positive_int(name, size, "DenseCLLoss")
    return size, dim


class DenseCLLoss(nn.Module):
    """``(1 - loss_lambda) * L_q + loss_lambda * L_r``: DenseCL's global and dense contrastive losses.

    ``L_q`` is MoCo's InfoNCE (eq. 1): query ``q``, positive key ``k+`` (the other view, momentum encoder), negatives
    the global queue; the queue then receives the keys. ``L_r`` (eq. 2) does the same at every location ``s`` of the
    query's dense embedding ``r^s``: its positive ``t^s_+`` is the key's dense embedding at the key location whose
    backbone feature is most similar (cosine) to the query's at ``s`` (section 3.3); its negatives are the dense
    queue, which by default holds one vector per key image, the key's dense embeddings averaged over the locations
    (the official code's ``avgpool2``), or the positive of every query location (``dense_queue_keys="matched"``).
    All embeddings are L2-normalised; ``L_q`` is averaged over images, ``L_r`` over images and locations. Both queues
    are read before either is written (first in, first out, gathered over ranks).

    Args:
        temperature: Softmax temperature ``tau`` of both terms (0.2 in the official configs).
        loss_lambda: Weight ``lambda`` of the dense term, in [0, 1] (0.5 in the paper).
        memory_bank_size: Global queue length, or ``(length, dim)`` to allocate it eagerly (65536 in the paper).
        dense_memory_bank_size: Dense queue length, or ``(length, dim)`` (65536 in the paper).
        dense_queue_keys: What the dense queue receives each step: ``"pooled"``, each key image's dense embeddings
            averaged over its locations (``B`` vectors, the official code), or ``"matched"``, the positive key of
            every query location (``B * N`` vectors, as LightlySSL's example). They differ only where the map has
            more than one location.
        gather_distributed: Write the keys of all ranks into the queues, keeping them identical across ranks.
    """

    def __init__(
        self,
        temperature: float = 0.2,
        loss_lambda: float = 0.5,
        memory_bank_size: int | Sequence[int] = 65536,
        dense_memory_bank_size: int | Sequence[int] = 65536,
        dense_queue_keys: str = "pooled",
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        check_positive("temperature", temperature, "DenseCLLoss")
        check_probability("loss_lambda", loss_lambda, "DenseCLLoss")
        check_one_of("dense_queue_keys", dense_queue_keys, DENSE_QUEUE_KEYS, "DenseCLLoss")
        global_size, global_dim = _bank_shape("memory_bank_size", memory_bank_size)
        dense_size, dense_dim = _bank_shape("dense_memory_bank_size", dense_memory_bank_size)
        self.temperature = temperature
        self.loss_lambda = loss_lambda
        self.dense_queue_keys = dense_queue_keys
        global_bank = global_size if global_dim is None else (global_size, global_dim)
        self.global_loss = NTXentLoss(temperature, memory_bank_size=global_bank, gather_distributed=gather_distributed)
        self.dense_memory_bank = MemoryBankModule(dense_size, dense_dim, gather_distributed=gather_distributed)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        query_dense: torch.Tensor,
        key_dense: torch.Tensor,
        query_features: torch.Tensor,
        key_features: torch.Tensor,
    ) -> torch.Tensor:
        """The loss of one batch; updates both queues.

        Args:
            query: ``(B, D)`` global embeddings of the query view.
            key: ``(B, D)`` global embeddings of the key view (momentum encoder).
            query_dense: ``(B, N, D)`` dense embeddings of the query view, one per location, not normalised.
            key_dense: ``(B, M, D)`` dense embeddings of the key view, not normalised (their mean is enqueued).
            query_features: ``(B, N, C)`` backbone features at the query locations, for the correspondence.
            key_features: ``(B, M, C)`` backbone features at the key locations.
        """
        if query.ndim != 2 or query.shape != key.shape:
            raise ValueError(f"DenseCLLoss expects (B, D) query and key, got {query.shape} and {key.shape}.")
        if (
            query_dense.ndim != 3
            or key_dense.ndim != 3
            or query_dense.shape[0] != key_dense.shape[0]
            or query_dense.shape[2] != key_dense.shape[2]
        ):
            raise ValueError(
                f"DenseCLLoss expects (B, N, D) and (B, M, D) dense embeddings, got {query_dense.shape} and "
                f"{key_dense.shape}."
            )
        if query_features.shape[:2] != query_dense.shape[:2] or key_features.shape[:2] != key_dense.shape[:2]:
            raise ValueError(
                "DenseCLLoss expects backbone features at the same locations as the dense embeddings, got "
                f"{query_features.shape} for {query_dense.shape} and {key_features.shape} for {key_dense.shape}."
            )
        global_loss = self.global_loss(query, key)
        dense_loss = self._dense_loss(query_dense, key_dense, query_features, key_features)
        return (1.0 - self.loss_lambda) * global_loss + self.loss_lambda * dense_loss

    def _dense_loss(
        self,
        query_dense: torch.Tensor,
        key_dense: torch.Tensor,
        query_features: torch.Tensor,
        key_features: torch.Tensor,
    ) -> torch.Tensor:
        key_dense = at_least_float32(key_dense)
        queries = F.normalize(at_least_float32(query_dense), dim=2)  # (B, N, D)
        keys = F.normalize(key_dense, dim=2)  # (B, M, D)
        # The correspondence is an argmax: no gradient flows through the features that choose it.
        query_features, key_features = (
            at_least_float32(query_features.detach()),
            at_least_float32(key_features.detach()),
        )
        positives = select_most_similar(query_features, key_features, keys)  # (B, N, D), t+ of each location
        if self.dense_queue_keys == "pooled":
            new_keys = F.normalize(key_dense.mean(dim=1), dim=1)  # (B, D)
        else:
            new_keys = positives.flatten(0, 1)  # (B*N, D)
        _, negatives = self.dense_memory_bank(new_keys, update=True)  # (K, D), read before the write
        positive_logits = (queries * positives).sum(dim=2, keepdim=True)  # (B, N, 1)
        negative_logits = queries @ negatives.to(queries.dtype).T  # (B, N, K)
        logits = torch.cat([positive_logits, negative_logits], dim=2).flatten(0, 1) / self.temperature  # (B*N, 1+K)
        targets = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, targets)
