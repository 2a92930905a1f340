"""Weighted kNN classification of frozen features (Wu et al., 2018, arXiv:1805.01978), batched for large banks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import timm.data
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Subset

from ssl_hub import distributed
from ssl_hub.data.views import MultiViewDataset


def eval_transform(data_config: dict[str, Any]) -> Callable[[Any], torch.Tensor]:
    """timm's evaluation transform for a data config: what timm and transformers users apply to this model."""
    keys = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
    return timm.data.create_transform(**{k: data_config[k] for k in keys if k in data_config}, is_training=False)


class _SingleView:
    """An image transform as a one-view transform (picklable, for DataLoader workers)."""

    def __init__(self, transform: Callable[[Any], torch.Tensor]) -> None:
        self.transform = transform

    def __call__(self, image: Any) -> list[torch.Tensor]:
        return [self.transform(image)]


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    dataset: Any,
    transform: Callable[[Any], torch.Tensor],
    batch_size: int = 256,
    num_workers: int = 0,
    across_ranks: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features of every image of ``dataset`` in eval mode.

    Args:
        backbone: Model mapping ``(B, C, H, W)`` images to ``(B, D)`` features.
        dataset: Any image source (``(image, label)`` items, image folders, HF datasets...).
        transform: Image -> ``(C, H, W)`` tensor, e.g. :func:`eval_transform`.
        batch_size: Images per forward pass.
        num_workers: DataLoader worker processes.
        across_ranks: Under torchrun / accelerate, extract this rank's share only: images ``rank``, ``rank + W``,
            ``rank + 2W``... of ``W`` ranks. Every rank must call it.

    Returns:
        ``(N, D)`` float32 features and ``(N,)`` labels (-1 where unlabelled), on the CPU.
    """
    views: Any = MultiViewDataset(dataset, _SingleView(transform))
    if across_ranks:
        views = Subset(views, range(distributed.rank(), len(views), distributed.world_size()))
    loader = DataLoader(views, batch_size=batch_size, num_workers=num_workers)
    device = next(backbone.parameters()).device
    was_training = backbone.training
    backbone.eval()
    features, labels = [], []
    try:
        for batch in loader:
            features.append(backbone(batch["views"][0].to(device)).float().cpu())
            labels.append(batch["label"])
    finally:
        backbone.train(was_training)
    return torch.cat(features), torch.cat(labels).long()


def gather_shares(share: torch.Tensor) -> torch.Tensor:
    """Every rank's share of :func:`extract_features` (``across_ranks``) -> the whole dataset's rows, in its order."""
    gathered = distributed.gather_uneven(share)
    world = distributed.world_size()
    order = torch.cat([torch.arange(rank, len(gathered), world) for rank in range(world)])  # rank r: r, r + W...
    whole = torch.empty_like(gathered)
    whole[order] = gathered
    return whole


@torch.no_grad()
def knn_predict(
    query: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
    across_ranks: bool = False,
) -> torch.Tensor:
    """Class of each query by a vote of its ``k`` most cosine-similar bank entries, weighted ``exp(sim / t)``.

    Args:
        query: ``(Q, D)`` features to classify.
        bank: ``(N, D)`` labelled features.
        bank_labels: ``(N,)`` labels in ``[0, num_classes)``.
        num_classes: Number of classes.
        k: Neighbours per query (all of the bank when it is smaller).
        temperature: Vote temperature.
        chunk_size: Queries per batch: memory is ``chunk_size x N`` similarities.
        across_ranks: Under torchrun / accelerate, ``bank`` is this rank's share of the bank and ``query`` the same on
            every rank: the ``k`` neighbours are the nearest over every rank's share. Every rank must call it.

    Returns:
        ``(Q,)`` predicted labels.
    """
    bank = F.normalize(bank.float(), dim=1)
    predictions = []
    for chunk in F.normalize(query.float(), dim=1).split(chunk_size):
        similarity, index = (chunk @ bank.T).topk(min(k, bank.shape[0]), dim=1)  # (C, k)
        neighbour_labels = bank_labels[index]
        if across_ranks:
            similarity, neighbour_labels = _nearest_across_ranks(similarity, neighbour_labels, k)
        votes = torch.zeros(chunk.shape[0], num_classes, device=chunk.device)
        votes.scatter_add_(1, neighbour_labels, (similarity / temperature).exp())
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions)


def _nearest_across_ranks(similarity: torch.Tensor, labels: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` most similar of every rank's nearest neighbours: ``(C, k_r)`` similarities and labels on each rank
    -> ``(C, k)``. A rank with fewer than ``k`` bank entries pads with similarity -inf, a vote of weight 0."""
    padding = k - similarity.shape[1]
    similarity = F.pad(similarity, (0, padding), value=float("-inf"))
    labels = F.pad(labels, (0, padding))
    rows = similarity.shape[0]
    every_similarity = distributed.gather_no_grad(similarity[None]).permute(1, 0, 2).reshape(rows, -1)  # (C, W k)
    every_label = distributed.gather_no_grad(labels[None]).permute(1, 0, 2).reshape(rows, -1)
    similarity, index = every_similarity.topk(k, dim=1)
    return similarity, every_label.gather(1, index)


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 200,
    temperature: float = 0.1,
    across_ranks: bool = False,
) -> float:
    """Top-1 accuracy in percent of :func:`knn_predict` with ``train`` as the bank.

    ``across_ranks``: ``train`` is this rank's share of the bank and ``test`` the same on every rank (see
    :func:`knn_predict`); every rank gets the accuracy.
    """
    highest_label = torch.cat([train_labels, test_labels]).max().reshape(1)
    if across_ranks:
        highest_label = distributed.gather_no_grad(highest_label).max()
    predicted = knn_predict(
        test_features, train_features, train_labels, int(highest_label) + 1, k, temperature, across_ranks=across_ranks
    )
    return 100.0 * (predicted == test_labels).float().mean().item()
