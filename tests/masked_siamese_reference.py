"""The papers' formulas of MSN, PMSN, iBOT, DINOv2 (and KoLeo) written out with loops over Python floats (float64),
independent of ssl_hub, for the loss tests."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

Matrix = list[list[float]]


def rows(tensor: torch.Tensor) -> Matrix:
    return [[float(x) for x in row] for row in tensor]


def unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector]


def softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


def sinkhorn_knopp(q: Matrix, iterations: int) -> Matrix:
    """SwAV / MSN / DINOv2's Sinkhorn-Knopp on non-negative scores ``q`` (B x K): Q = q^T normalised to sum 1, then
    alternately each prototype's row to 1/K and each sample's column to 1/B; returns B Q per sample (B x K)."""
    n, k = len(q), len(q[0])
    m = [[q[b][p] for b in range(n)] for p in range(k)]  # K x B
    total = sum(sum(row) for row in m)
    m = [[x / total for x in row] for row in m]
    for _ in range(iterations):
        m = [[x / (sum(row) * k) for x in row] for row in m]
        columns = [sum(m[p][b] for p in range(k)) for b in range(n)]
        m = [[m[p][b] / (columns[b] * n) for b in range(n)] for p in range(k)]
    return [[m[p][b] * n for p in range(k)] for b in range(n)]


def msn_reference(
    anchors: torch.Tensor,
    targets: torch.Tensor,
    prototypes: torch.Tensor,
    temperature: float,
    sharpen: float,
    iterations: int,
    weight: float,
    regularizer: Callable[[list[float]], float],
) -> float:
    """MSN sec. 3: p(z) = softmax(z . q / tau) on unit vectors; targets p+ = sharpen(p(target), T) then Sinkhorn; loss =
    mean over anchors of H(p+_b, p(anchor)) + weight * regularizer(mean over anchors of p(anchor))."""
    protos = [unit(p) for p in rows(prototypes)]

    def assign(z: list[float]) -> list[float]:
        z = unit(z)
        return softmax([sum(a * b for a, b in zip(z, p, strict=True)) / temperature for p in protos])

    sharp = []
    for t in rows(targets):
        powered = [x ** (1 / sharpen) for x in assign(t)]
        sharp.append([x / sum(powered) for x in powered])
    target_probs = sinkhorn_knopp(sharp, iterations) if iterations else sharp
    batch = len(target_probs)
    anchor_probs = [assign(a) for a in rows(anchors)]
    cross_entropy = sum(
        -sum(t * math.log(p) for t, p in zip(target_probs[i % batch], probs, strict=True))
        for i, probs in enumerate(anchor_probs)
    ) / len(anchor_probs)
    mean = [sum(probs[k] for probs in anchor_probs) / len(anchor_probs) for k in range(len(protos))]
    return cross_entropy + weight * regularizer(mean)


def kl(p: list[float], q: list[float]) -> float:
    """KL(p || q) = sum_k p_k log(p_k / q_k)."""
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


def me_max(mean: list[float]) -> float:
    """MSN's mean-entropy maximisation: -H(p) + log K."""
    return sum(p * math.log(p) for p in mean) + math.log(len(mean))


def power_law(size: int, exponent: float) -> list[float]:
    weights = [k**-exponent for k in range(1, size + 1)]
    return [w / sum(weights) for w in weights]


def dino_pairs_reference(
    teacher_probs: Sequence[Matrix], student: Sequence[torch.Tensor], student_temp: float
) -> float:
    """DINO's cross-entropy: mean over teacher crops i and student crops j != i of the batch mean of
    -sum_k P_t(i)_k log softmax(s_j / tau_s)_k."""
    total, pairs = 0.0, 0
    for i, probs in enumerate(teacher_probs):
        for j, s in enumerate(rows(t) for t in student):
            if i == j:
                continue
            batch = 0.0
            for b, p_t in enumerate(probs):
                p_s = softmax([x / student_temp for x in s[b]])
                batch -= sum(a * math.log(c) for a, c in zip(p_t, p_s, strict=True))
            total += batch / len(probs)
            pairs += 1
    return total / pairs


def ibot_patch_reference(
    teacher_probs: Matrix, student: torch.Tensor, mask: torch.Tensor, student_temp: float
) -> float:
    """iBOT eq. 2 / DINOv2: 1/B sum_b 1/|M_b| sum_{masked i of image b} H(P_t(i), softmax(s_i / tau_s)), the masked
    patches taken image by image in raster order; images without masked patches add 0."""
    student_rows = rows(student)
    total, index = 0.0, 0
    for image in mask.flatten(1):
        count = int(image.sum())
        image_total = 0.0
        for _ in range(count):
            p_s = softmax([x / student_temp for x in student_rows[index]])
            image_total -= sum(a * math.log(c) for a, c in zip(teacher_probs[index], p_s, strict=True))
            index += 1
        total += image_total / count if count else 0.0
    return total / len(mask)


def koleo_reference(x: torch.Tensor) -> float:
    """Sablayrolles et al. 2019: -1/n sum_i log min_{j != i} ||x_i / |x_i| - x_j / |x_j|||."""
    points = [unit(v) for v in rows(x)]
    total = 0.0
    for i, p in enumerate(points):
        nearest = min(
            math.sqrt(sum((a - b) ** 2 for a, b in zip(p, q, strict=True))) for j, q in enumerate(points) if j != i
        )
        total -= math.log(nearest)
    return total / len(points)
