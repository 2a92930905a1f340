"""Weighted kNN classification of frozen features (Wu et al., 2018, arXiv:1805.01978), batched for large banks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import timm.data
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features of every image of ``dataset`` in eval mode.

    Args:
        backbone: Model mapping ``(B, C, H, W)`` images to ``(B, D)`` features.
        dataset: Any image source (``(image, label)`` items, image folders, HF datasets...).
        transform: Image -> ``(C, H, W)`` tensor, e.g. :func:`eval_transform`.
        batch_size: Images per forward pass.
        num_workers: DataLoader worker processes.

    Returns:
        ``(N, D)`` float32 features and ``(N,)`` labels (-1 where unlabelled), on the CPU.
    """
    views = MultiViewDataset(dataset, _SingleView(transform))
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


@torch.no_grad()
def knn_predict(
    query: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
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

    Returns:
        ``(Q,)`` predicted labels.
    """
    bank = F.normalize(bank.float(), dim=1)
    k = min(k, bank.shape[0])
    predictions = []
    for chunk in F.normalize(query.float(), dim=1).split(chunk_size):
        similarity, index = (chunk @ bank.T).topk(k, dim=1)  # (C, k)
        votes = torch.zeros(chunk.shape[0], num_classes, device=chunk.device)
        votes.scatter_add_(1, bank_labels[index], (similarity / temperature).exp())
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions)


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 200,
    temperature: float = 0.1,
) -> float:
    """Top-1 accuracy in percent of :func:`knn_predict` with ``train`` as the bank."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    predicted = knn_predict(test_features, train_features, train_labels, num_classes, k, temperature)
    return 100.0 * (predicted == test_labels).float().mean().item()


def evaluate_knn(
    backbone: nn.Module,
    train: Any,
    test: Any,
    data_config: dict[str, Any],
    k: int = 200,
    temperature: float = 0.1,
    batch_size: int = 256,
    num_workers: int = 0,
) -> float:
    """kNN top-1 (percent) of ``backbone`` on ``test`` with ``train`` as the labelled bank, the images preprocessed
    by ``num_workers`` DataLoader workers."""
    transform = eval_transform(data_config)
    train_features, train_labels = extract_features(backbone, train, transform, batch_size, num_workers)
    test_features, test_labels = extract_features(backbone, test, transform, batch_size, num_workers)
    if (train_labels < 0).any() or (test_labels < 0).any():
        raise ValueError("kNN evaluation needs labelled images in both splits.")
    return knn_accuracy(train_features, train_labels, test_features, test_labels, k, temperature)
