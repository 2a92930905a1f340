"""kNN classification against a brute-force float64 reference."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_hub.eval import knn_accuracy, knn_predict


def brute_force_knn(
    query: torch.Tensor, bank: torch.Tensor, labels: torch.Tensor, classes: int, k: int, temperature: float
) -> list[int]:
    predictions = []
    for q in query.double():
        similarities = [float(q @ b / (q.norm() * b.norm())) for b in bank.double()]
        nearest = sorted(range(len(bank)), key=lambda i: -similarities[i])[:k]
        votes = [0.0] * classes
        for i in nearest:
            votes[int(labels[i])] += math.exp(similarities[i] / temperature)
        predictions.append(max(range(classes), key=lambda c: votes[c]))
    return predictions


@pytest.mark.parametrize(("k", "temperature", "chunk_size"), [(1, 0.1, 7), (5, 0.07, 3), (200, 0.5, 1024)])
def test_knn_predict_matches_brute_force(k: int, temperature: float, chunk_size: int) -> None:
    generator = torch.Generator().manual_seed(k)
    bank = torch.randn(40, 6, generator=generator)
    labels = torch.randint(0, 4, (40,), generator=generator)
    query = torch.randn(17, 6, generator=generator)
    predicted = knn_predict(query, bank, labels, num_classes=4, k=k, temperature=temperature, chunk_size=chunk_size)
    assert predicted.tolist() == brute_force_knn(query, bank, labels, 4, k, temperature)


def test_separable_clusters_are_classified_perfectly() -> None:
    generator = torch.Generator().manual_seed(0)
    centers = torch.eye(3) * 10
    train_labels = torch.arange(3).repeat(20)
    test_labels = torch.arange(3).repeat(5)
    train = centers[train_labels] + torch.randn(60, 3, generator=generator)
    test = centers[test_labels] + torch.randn(15, 3, generator=generator)
    assert knn_accuracy(train, train_labels, test, test_labels, k=10) == 100.0
