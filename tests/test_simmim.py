"""SimMIM: the loss against the paper's formula (float64 loops), its mask units, and what the method feeds the loss."""

from __future__ import annotations

import pytest
import torch
from masked_image_reference import Capture, absolute_error, pixel_patch

import ssl_hub
from ssl_hub.losses import SimMIMLoss
from ssl_hub.methods import SimMIM, SimMIMConfig
from ssl_hub.modules import MaskingRNG, random_mask
from ssl_hub.transforms import SimMIMTransform


def simmim_reference(predictions: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """SimMIM, eq. 1: ||y_M - x_M||_1 / Omega(x_M), over every pixel value of the masked patches."""
    total, count = 0.0, 0
    for b in range(predictions.shape[0]):
        for n in range(predictions.shape[1]):
            if mask[b, n]:
                total += absolute_error(predictions[b, n], [float(v) for v in target[b, n]])
                count += predictions.shape[2]
    return total / count


def test_loss_matches_the_papers_formula() -> None:
    generator = torch.Generator().manual_seed(0)
    predictions = torch.randn(3, 6, 12, generator=generator, dtype=torch.float64)
    target = torch.randn(3, 6, 12, generator=generator, dtype=torch.float64)
    mask = random_mask(3, 6, 0.5, generator=generator)
    loss = SimMIMLoss()(predictions, target, mask)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(simmim_reference(predictions, target, mask), rel=1e-10)
    with pytest.raises(ValueError, match="mask must be"):
        SimMIMLoss()(predictions, target, mask[:, :5])


def test_defaults_are_the_papers() -> None:
    config = SimMIMConfig()
    assert (config.mask_ratio, config.mask_patch_size) == (0.6, 32)
    method = ssl_hub.create_method("simmim", backbone="test_vit")
    assert method.mask_unit == (2, 2)  # 32 px units of 16 px patches
    assert isinstance(method.prediction_head, torch.nn.Linear)  # the paper's one-layer prediction head
    assert method.prediction_head.out_features == 16 * 16 * 3
    assert isinstance(method.make_transform(32), SimMIMTransform)
    assert SimMIMTransform().transforms[0].transforms[0].scale == (0.67, 1.0)


@pytest.mark.parametrize(("size", "units", "masked_units"), [(64, 4, 2), (128, 16, 10)])
def test_masks_are_whole_units_at_the_ratio(size: int, units: int, masked_units: int) -> None:
    method = ssl_hub.create_method("simmim", backbone="test_vit")
    grid = method.encoder.grid_size((size, size))
    mask = method.sample_mask(8, grid, torch.device("cpu")).view(8, *grid)
    assert (mask.sum(dim=(1, 2)) == masked_units * 4).all()  # round(0.6 * units) units of 2 x 2 patches
    for row in range(0, grid[0], 2):
        for col in range(0, grid[1], 2):
            unit = mask[:, row : row + 2, col : col + 2].flatten(1)
            assert (unit.all(dim=1) | ~unit.any(dim=1)).all()  # each unit masked whole or not at all
    assert units == (grid[0] // 2) * (grid[1] // 2)


def test_method_loss_is_the_formula_on_the_masked_patches() -> None:
    torch.manual_seed(0)
    method = ssl_hub.create_method("simmim", backbone="test_vit", mask_patch_size=16).double()
    images = torch.randn(2, 3, 64, 64, dtype=torch.float64)  # 4 x 4 patches, one patch per mask unit
    replay = MaskingRNG(method.mask_rng.seed)
    replay.step = method.mask_rng.step
    encoder, head = Capture(method.encoder), Capture(method.prediction_head)
    with torch.no_grad():
        loss = method(views=[images]).loss
    mask = random_mask(2, 16, 0.6, generator=replay.next_generator())  # the mask the method drew
    assert torch.equal(encoder.kwargs["mask"], mask)  # masked patches are replaced by the mask token
    assert "keep" not in encoder.kwargs  # and the encoder sees the whole sequence
    target = torch.stack([torch.tensor([pixel_patch(im, n // 4, n % 4, 16) for n in range(16)]) for im in images])
    assert head.output.shape == (2, 16, 16 * 16 * 3)
    assert loss.item() == pytest.approx(simmim_reference(head.output, target, mask), rel=1e-9)


def test_bad_sizes_fail_clearly() -> None:
    with pytest.raises(ValueError, match="multiple of the backbone's patch size"):
        ssl_hub.create_method("simmim", backbone="test_vit", mask_patch_size=24)
    method = ssl_hub.create_method("simmim", backbone="test_vit")
    with pytest.raises(ValueError, match="does not divide into mask units"):
        method(views=[torch.randn(2, 3, 48, 48)])
    with pytest.raises(ValueError, match="mask_ratio"):
        ssl_hub.create_method("simmim", backbone="test_vit", mask_ratio=0.0)
    with pytest.raises(ValueError, match=r"masks 0 of the 1 mask units.*the loss would cover nothing"):
        ssl_hub.create_method("simmim", backbone="test_vit", mask_ratio=0.2)(views=[torch.randn(2, 3, 32, 32)])
    with pytest.raises(ValueError, match=r"masks 1 of the 1 mask units.*the encoder would see no pixels"):
        method(views=[torch.randn(2, 3, 32, 32)])  # the paper's 32 px unit on 32 px images
    method = ssl_hub.create_method("simmim", backbone="test_vit", mask_patch_size=16)
    assert method(views=[torch.randn(2, 3, 32, 32)]).loss.isfinite()  # one-patch units: 2 of 4 masked


def test_mask_token_learns() -> None:
    method = ssl_hub.create_method("simmim", backbone="test_vit", mask_patch_size=16)
    method(views=[torch.randn(2, 3, 64, 64)]).loss.backward()
    assert method.encoder.mask_token is not None
    assert method.encoder.mask_token.grad is not None
    assert method.encoder.mask_token.grad.abs().sum() > 0  # the loss on the masked pixels reaches it
    assert "encoder.mask_token" in method.state_dict()  # saved in ssl/, not in the published backbone


def test_class_is_registered_with_its_paper() -> None:
    assert ssl_hub.get_method_class("simmim") is SimMIM
    assert SimMIM.requires_vit
    assert "2111.09886" in SimMIM.paper.url
