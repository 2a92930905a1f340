"""kNN classification against a brute-force float64 reference."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ssl_hub.eval import evaluate_knn, knn_accuracy, knn_predict


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


# timm eval transform of 4 x 4 images: no resize, no crop, pixels / 255
PIXELS_AS_THEY_ARE = {"input_size": (3, 4, 4), "mean": (0.0,) * 3, "std": (1.0,) * 3, "crop_pct": 1.0}


class _Flatten(nn.Module):
    """A fixed backbone: the normalised pixels, (B, 3 * 4 * 4) features."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # a parameter, for the device

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1) + self.anchor


def test_evaluate_knn_on_two_image_sources_matches_brute_force_on_their_pixels() -> None:
    generator = torch.Generator().manual_seed(0)
    centers = torch.randint(100, 156, (3, 3, 4, 4), generator=generator)

    def images(count: int) -> list[tuple[torch.Tensor, int]]:  # noisy copies of the class centres, uint8 (C, H, W)
        labels = torch.randint(0, 3, (count,), generator=generator)
        noise = torch.randint(-100, 101, (count, 3, 4, 4), generator=generator)
        return [
            (image, int(label)) for image, label in zip((centers[labels] + noise).to(torch.uint8), labels, strict=True)
        ]

    train, test = images(30), images(12)
    accuracy = evaluate_knn(_Flatten(), train, test, PIXELS_AS_THEY_ARE, k=5, temperature=0.07, batch_size=7)

    pixels = [torch.stack([image.double().flatten() / 255 for image, _ in split]) for split in (train, test)]
    labels = [torch.tensor([label for _, label in split]) for split in (train, test)]
    predicted = brute_force_knn(pixels[1], pixels[0], labels[0], 3, 5, 0.07)
    expected = 100.0 * sum(p == label for p, label in zip(predicted, labels[1].tolist(), strict=True)) / len(test)
    assert 0 < expected < 100  # the noise makes some images ambiguous: a wrong neighbour count or bank would show
    assert accuracy == pytest.approx(expected)


def test_evaluate_knn_refuses_images_without_labels_among_labelled_ones() -> None:
    image = torch.zeros(3, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match="the evaluation data has 1 without one"):
        evaluate_knn(_Flatten(), [(image, 0), (image, -1)], [(image, 1)], PIXELS_AS_THEY_ARE, k=1)
