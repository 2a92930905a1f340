"""AIM: the loss against the paper's formula (float64 loops), the prefix-causal encoder, and the head."""

from __future__ import annotations

import pytest
import torch
from masked_image_reference import Capture, normalized, pixel_patch, sincos_reference, squared_error

import ssl_hub
from ssl_hub.heads import AIMPredictionHead, AIMPredictionHeadBlock
from ssl_hub.methods import AIM, AIMConfig
from ssl_hub.modules import MaskingRNG, prefix_causal_attention_mask, random_prefix_lengths
from ssl_hub.transforms import AIMTransform

SMALL_HEAD = {"head_hidden_dim": 32, "head_num_blocks": 2}


def aim_reference(predictions: torch.Tensor, images: torch.Tensor, prefix: list[int], patch: int) -> float:
    """AIM, section 3: the output at position k - 1 regresses the normalised pixels of patch k, for every patch k
    after the prefix; the squared error is averaged over the pixels of a patch and over all predicted patches."""
    columns = images.shape[-1] // patch
    num_patches = (images.shape[-2] // patch) * columns
    errors = []
    for b, length in enumerate(prefix):
        for k in range(length, num_patches):
            target = normalized(pixel_patch(images[b], k // columns, k % columns, patch))
            errors.append(squared_error(predictions[b, k - 1], target))
    return sum(errors) / len(errors)


def test_defaults_are_the_papers() -> None:
    config = AIMConfig()
    assert (config.head_num_blocks, config.head_hidden_dim, config.head_mlp_ratio) == (12, 2048, 4.0)
    assert (config.min_prefix_length, config.max_prefix_length, config.norm_pix_loss) == (1, None, True)
    assert AIMTransform().transforms[0].transforms[0].scale == (0.4, 1.0)


def test_method_loss_is_the_formula_on_the_patches_after_the_prefix() -> None:
    torch.manual_seed(0)
    method = ssl_hub.create_method("aim", backbone="test_vit", **SMALL_HEAD).double()
    images = torch.randn(3, 3, 48, 48, dtype=torch.float64)  # 3 x 3 patches of 16 px
    replay = MaskingRNG(method.mask_rng.seed)
    replay.step = method.mask_rng.step
    encoder, head = Capture(method.encoder), Capture(method.prediction_head)
    with torch.no_grad():
        loss = method(views=[images]).loss
    prefix = random_prefix_lengths(3, 9, generator=replay.next_generator())  # the prefixes the method drew
    assert torch.equal(encoder.kwargs["attn_mask"], prefix_causal_attention_mask(prefix, 9, num_prefix_tokens=1))
    # The head sees the trunk's patch tokens plus the paper's 2D sine-cosine position embedding of the grid.
    position = sincos_reference(3, 3, method.encoder.embed_dim)  # (9, D)
    torch.testing.assert_close(head.inputs[0], encoder.output.patch_tokens + position, atol=1e-6, rtol=0)
    assert head.output.shape == (3, 9, 16 * 16 * 3)
    assert loss.item() == pytest.approx(aim_reference(head.output, images, prefix.tolist(), 16), rel=1e-9)


def test_predictions_never_see_the_patch_they_predict() -> None:
    """Changing patch k changes no prediction of patch k or earlier: the model is autoregressive after the prefix."""
    torch.manual_seed(0)
    method = ssl_hub.create_method("aim", backbone="test_vit", min_prefix_length=2, max_prefix_length=2, **SMALL_HEAD)
    head = Capture(method.prediction_head)
    images = torch.randn(2, 3, 48, 48)
    changed = images.clone()
    changed[:, :, 16:32, 32:48] += 3.0  # patch 5 (row 1, column 2), after the prefix of 2 patches
    with torch.no_grad():
        method(views=[images])
        before = head.output.clone()
        method(views=[changed])
    after = head.output
    torch.testing.assert_close(after[:, :5], before[:, :5])  # outputs 0-4 predict patches 1-5
    assert not torch.allclose(after[:, 5:], before[:, 5:])


def test_prefix_range_is_checked_against_the_image() -> None:
    with pytest.raises(ValueError, match="max_prefix_length"):
        ssl_hub.create_method("aim", backbone="test_vit", min_prefix_length=3, max_prefix_length=2, **SMALL_HEAD)
    method = ssl_hub.create_method("aim", backbone="test_vit", max_prefix_length=4, **SMALL_HEAD)
    with pytest.raises(ValueError, match="no patch to predict"):
        method(views=[torch.randn(2, 3, 32, 32)])  # 4 patches: a prefix of 4 leaves none


def test_head_is_residual_mlp_blocks_without_bias() -> None:
    head = AIMPredictionHead(input_dim=8, output_dim=12, hidden_dim=16, num_blocks=3)
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 2 + 3 * 2
    assert all(linear.bias is None for linear in linears)
    assert head(torch.randn(5, 7, 8)).shape == (5, 7, 12)
    block = AIMPredictionHeadBlock(16, 16)
    assert block.mlp.fc1.out_features == 64  # expansion ratio 4
    torch.nn.init.zeros_(block.mlp.fc2.weight)
    x = torch.randn(4, 16)
    torch.testing.assert_close(block(x), x)  # x + MLP(LN(x)): the residual path


def test_class_is_registered_with_its_paper() -> None:
    assert ssl_hub.get_method_class("aim") is AIM
    assert AIM.requires_vit
    assert "2401.08541" in AIM.paper.url
