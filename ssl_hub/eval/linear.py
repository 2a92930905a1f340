"""Linear probe: a linear classifier on frozen, cached features (the standard SSL evaluation protocol)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    epochs: int = 100,
    batch_size: int = 256,
    learning_rate: float = 1e-2,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> float:
    """Top-1 accuracy (percent) of a linear classifier trained on frozen features.

    The features are standardised with the training split's statistics (a batch norm without affine parameters, as
    MAE's linear probe does), then a zero-initialised linear layer is trained with AdamW and a cosine learning-rate
    schedule on mini-batches. The features are computed once by the caller (see :func:`ssl_hub.eval.extract_features`).

    Args:
        train_features: ``(N, D)`` features of the training split.
        train_labels: ``(N,)`` labels in ``[0, K)``.
        test_features: ``(M, D)`` features to evaluate.
        test_labels: ``(M,)`` labels.
        epochs: Passes over the training features.
        batch_size: Features per optimizer step.
        learning_rate: Peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        seed: Seed of the batch order.
    """
    generator = torch.Generator().manual_seed(seed)
    mean = train_features.float().mean(dim=0)
    std = train_features.float().std(dim=0).clamp_min(1e-6)
    train = (train_features.float() - mean) / std  # (N, D)
    test = (test_features.float() - mean) / std  # (M, D)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    classifier = nn.Linear(train.shape[1], num_classes)
    nn.init.zeros_(classifier.weight)  # no random start to unlearn: short probes measure the features only
    nn.init.zeros_(classifier.bias)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=learning_rate, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(train) / batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    for _ in range(epochs):
        order = torch.randperm(len(train), generator=generator)
        for batch in order.split(batch_size):
            loss = F.cross_entropy(classifier(train[batch]), train_labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    with torch.no_grad():
        predicted = classifier(test).argmax(dim=1)
    return 100.0 * (predicted == test_labels).float().mean().item()
