"""Shuffling batch norm in one process: groups normalised with their own statistics (checked against the batch-norm
formula in float64), outputs back in the input order, small batches encoded whole, and which encoders need it."""

from __future__ import annotations

import timm
import torch
from torch import nn

from ssl_hub.modules import shuffled_batch_norm_forward, uses_batch_statistics
from ssl_hub.modules.shuffle_bn import forward_in_groups


def batch_norm_encoder() -> nn.Module:
    return nn.BatchNorm1d(3, affine=False, dtype=torch.float64)


def normalised(rows: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Train-mode batch norm by its formula: ``(x - mean) / sqrt(biased var + eps)`` over the rows."""
    mean = rows.sum(0) / len(rows)
    variance = ((rows - mean) ** 2).sum(0) / len(rows)
    return (rows - mean) / torch.sqrt(variance + eps)


def test_each_group_is_normalised_with_its_own_statistics_and_outputs_keep_the_input_order() -> None:
    images = torch.randn(10, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    order = torch.tensor([3, 7, 0, 9, 1, 5, 2, 8, 4, 6])
    encoder = batch_norm_encoder()

    normalised_rows, doubled = forward_in_groups(lambda x: (encoder(x), 2 * x), images, order, groups=3)

    expected = torch.empty_like(images)
    for group in (order[:4], order[4:7], order[7:]):  # tensor_split's near-equal groups: 4, 3, 3
        expected[group] = normalised(images[group])
    torch.testing.assert_close(normalised_rows, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(doubled, 2 * images, rtol=0, atol=0)
    assert not torch.allclose(normalised_rows, normalised(images)), "grouping must change what batch norm sees"


def test_one_process_shuffles_with_torchs_generator_in_groups_of_at_least_group_size() -> None:
    images = torch.randn(9, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    encoder = batch_norm_encoder()
    torch.manual_seed(5)
    order = torch.randperm(9)
    torch.manual_seed(5)

    (shuffled,) = shuffled_batch_norm_forward(lambda x: (encoder(x),), images, group_size=4)

    expected = torch.empty_like(images)
    for group in (order[:5], order[5:]):  # 9 // 4 = 2 groups of 5 and 4
        expected[group] = normalised(images[group])
    torch.testing.assert_close(shuffled, expected, rtol=0, atol=1e-12)


def test_a_batch_smaller_than_two_groups_is_encoded_whole() -> None:
    images = torch.randn(7, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    encoder = batch_norm_encoder()
    (whole,) = shuffled_batch_norm_forward(lambda x: (encoder(x),), images, group_size=4)
    torch.testing.assert_close(whole, normalised(images), rtol=0, atol=1e-12)


def test_only_batch_norm_in_train_mode_or_without_running_statistics_needs_shuffling() -> None:
    resnet = timm.create_model("test_resnet", num_classes=0)
    vit = timm.create_model("test_vit", num_classes=0)
    assert uses_batch_statistics(vit, resnet)
    assert not uses_batch_statistics(vit)  # layer norm: each image on its own
    assert not uses_batch_statistics(resnet.eval())  # running statistics
    assert uses_batch_statistics(nn.BatchNorm2d(4, track_running_stats=False).eval())
