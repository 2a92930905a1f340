"""Multi-crop augmentations (DINO, SwaV, SMoG) and the multi-crop building blocks: crop sizes scaled to the input
size and to the backbone's stride, one forward pass per crop size, backbones made to take every size."""

from __future__ import annotations

import pytest
import timm
import torch
from conftest import random_images
from PIL import Image
from torchvision.transforms import v2

import ssl_hub
from ssl_hub.data import collate_views
from ssl_hub.modules import dynamic_size_backbone, multi_crop_forward
from ssl_hub.modules.multi_crop import check_input_sizes, crop_size_multiple
from ssl_hub.transforms import DINOTransform, SMoGTransform, SwaVTransform, local_crop_size


@pytest.fixture
def image() -> Image.Image:
    return Image.fromarray(random_images(1, 80)[0])


def crop(view: v2.Compose) -> v2.RandomResizedCrop:
    return next(t for t in view.transforms if isinstance(t, v2.RandomResizedCrop))


def probability(view: v2.Compose, kind: type) -> float:
    for t in view.transforms:
        if isinstance(t, v2.RandomApply) and isinstance(t.transforms[0], kind):
            return float(t.p)
        if isinstance(t, kind):
            return float(t.p)
    raise AssertionError(kind)


def test_local_crop_size_is_96_at_224_and_scales() -> None:
    assert local_crop_size(224) == 96
    assert local_crop_size(32) == 14
    assert local_crop_size(32, multiple=16) == 16  # at least one ViT patch
    assert local_crop_size(64, multiple=32) == 32
    assert local_crop_size(224, multiple=14) == 98  # ViT-/14: whole patches


def test_dino_transform_defaults_are_the_papers(image: Image.Image) -> None:
    transform = DINOTransform()
    views = transform.transforms
    assert len(views) == 8
    assert transform.input_size == 224
    assert [crop(v).size for v in views] == [(224, 224)] * 2 + [(96, 96)] * 6
    assert crop(views[0]).scale == (0.4, 1.0)
    assert crop(views[2]).scale == (0.05, 0.4)
    assert [probability(v, v2.GaussianBlur) for v in views[:3]] == [1.0, 0.1, 0.5]
    assert [probability(v, v2.RandomSolarize) for v in views[:3]] == [0.0, 0.2, 0.0]
    jitter = next(
        t.transforms[0]
        for t in views[0].transforms
        if isinstance(t, v2.RandomApply) and isinstance(t.transforms[0], v2.ColorJitter)
    )
    assert jitter.brightness == (0.6, 1.4)
    assert jitter.saturation == (0.8, 1.2)


def test_dino_transform_scales_to_the_input_size(image: Image.Image) -> None:
    transform = DINOTransform(input_size=32, n_local_views=4)
    out = transform(image)
    assert [tuple(v.shape) for v in out] == [(3, 32, 32)] * 2 + [(3, 14, 14)] * 4
    assert [tuple(v.shape) for v in DINOTransform(local_crop_size=20, input_size=40)(image)][-1] == (3, 20, 20)
    with pytest.raises(ValueError, match="gaussian_blur"):
        DINOTransform(gaussian_blur=(1.0, 0.5))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_local_views"):
        DINOTransform(n_local_views=-1)


def test_swav_transform_defaults_and_input_size(image: Image.Image) -> None:
    transform = SwaVTransform()
    assert [crop(v).size for v in transform.transforms] == [(224, 224)] * 2 + [(96, 96)] * 6
    assert crop(transform.transforms[0]).scale == (0.14, 1.0)
    assert crop(transform.transforms[2]).scale == (0.05, 0.14)
    out = SwaVTransform(input_size=32, crop_counts=(2, 3))(image)
    assert [tuple(v.shape[1:]) for v in out] == [(32, 32)] * 2 + [(14, 14)] * 3
    with pytest.raises(ValueError, match="crop_counts"):
        SwaVTransform(crop_sizes=(32, 16), crop_counts=(2,))


def test_smog_transform_has_per_category_blur_and_solarization(image: Image.Image) -> None:
    transform = SMoGTransform()
    views = transform.transforms
    assert [crop(v).size for v in views] == [(224, 224)] * 4 + [(96, 96)] * 4
    assert [probability(v, v2.GaussianBlur) for v in (views[0], views[4])] == [0.5, 0.1]
    assert [probability(v, v2.RandomSolarize) for v in (views[0], views[4])] == [0.0, 0.2]
    out = SMoGTransform(crop_sizes=(32, 16), crop_counts=(2, 2))(image)
    assert [tuple(v.shape[1:]) for v in out] == [(32, 32)] * 2 + [(16, 16)] * 2


@pytest.mark.parametrize(
    ("name", "backbone", "input_size", "local"),
    [
        ("dino", "test_vit", 32, 16),  # a ViT-/16 needs whole patches
        ("dino", "test_resnet", 64, 32),
        ("swav", "test_convnext", 32, 32),  # a ConvNeXt needs one cell at its last stage
        ("smog", "test_vit", 224, 96),
    ],
)
def test_method_transforms_round_local_crops_to_the_backbone_stride(
    name: str, backbone: str, input_size: int, local: int, image: Image.Image
) -> None:
    method = ssl_hub.create_method(name, backbone=backbone)
    sizes = {tuple(v.shape[1:]) for v in method.make_transform(input_size=input_size)(image)}
    assert sizes == {(input_size, input_size), (local, local)}


def test_views_of_different_sizes_are_batched_per_size_and_embedded_per_size() -> None:
    transform = DINOTransform(input_size=32, local_crop_size=16, n_local_views=3)
    items = [{"views": transform(Image.fromarray(a))} for a in random_images(4, 40)]
    views = collate_views(items)["views"]
    assert [tuple(v.shape) for v in views] == [(4, 3, 32, 32)] * 2 + [(4, 3, 16, 16)] * 3
    backbone = timm.create_model("test_resnet", num_classes=0).eval()
    batches: list[int] = []
    backbone.register_forward_hook(lambda module, args, out: batches.append(args[0].shape[0]))
    with torch.no_grad():
        outputs = multi_crop_forward(backbone, views)
        assert batches == [8, 12]  # one pass per size
        for view, out in zip(views, outputs, strict=True):
            torch.testing.assert_close(out, backbone(view), rtol=1e-5, atol=1e-6)


def test_views_apart_are_embedded_one_by_one_with_their_own_batch_norm_statistics() -> None:
    torch.manual_seed(0)
    views = [torch.randn(4, 3, 32, 32), 2.0 * torch.randn(4, 3, 32, 32) + 1.0, torch.randn(4, 3, 16, 16)]
    backbone = timm.create_model("test_resnet", num_classes=0)  # train mode: statistics of each pass's batch
    batches: list[int] = []
    backbone.register_forward_hook(lambda module, args, out: batches.append(args[0].shape[0]))
    with torch.no_grad():
        together = multi_crop_forward(backbone, views)
        apart = multi_crop_forward(backbone, views, one_pass_per_size=False)
        assert batches == [8, 4, 4, 4, 4]  # one pass per size, then one per view
        for view, out in zip(views, apart, strict=True):
            torch.testing.assert_close(out, backbone(view))
        assert not torch.allclose(together[0], apart[0], atol=1e-3)  # the first view saw the second's statistics


def test_views_split_at_an_index_never_share_a_pass_with_the_views_after_it() -> None:
    torch.manual_seed(0)
    views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32), 2.0 * torch.randn(4, 3, 32, 32) + 1.0]
    views.append(torch.randn(4, 3, 16, 16))
    backbone = timm.create_model("test_resnet", num_classes=0)  # train mode: statistics of each pass's batch
    batches: list[int] = []
    backbone.register_forward_hook(lambda module, args, out: batches.append(args[0].shape[0]))
    with torch.no_grad():
        split = multi_crop_forward(backbone, views, split_at=2)
        assert batches == [8, 4, 4]  # the first two views, the third, the fourth (a size of its own)
        torch.testing.assert_close(torch.cat(split[:2]), backbone(torch.cat(views[:2])))
        torch.testing.assert_close(split[2], backbone(views[2]))
        torch.testing.assert_close(split[3], backbone(views[3]))
        together = multi_crop_forward(backbone, views)
        assert not torch.allclose(together[0], split[0], atol=1e-3)  # one pass: the third view's statistics too


def loss_and_backbone_batches(
    base: ssl_hub.SSLMethod, views: list[torch.Tensor], one_pass: bool, training: bool
) -> tuple[float, list[int]]:
    """The loss of a copy of ``base`` built with ``views_in_one_pass=one_pass``, and the batch of each backbone pass."""
    method = ssl_hub.create_method(base.name, backbone="test_resnet", views_in_one_pass=one_pass)
    method.load_state_dict(base.state_dict())  # the same weights, running statistics, centers, groups
    batches: list[int] = []
    method.backbone.register_forward_hook(lambda module, args, out: batches.append(args[0].shape[0]))
    with torch.no_grad():
        return method.train(training)(views=views).loss.item(), batches


@pytest.mark.parametrize("name", ["swav", "dino", "smog"])
def test_views_in_one_pass_chooses_how_multi_crop_methods_batch_their_crops(name: str) -> None:
    torch.manual_seed(0)
    base = ssl_hub.create_method(name, backbone="test_resnet")
    assert base.config.views_in_one_pass  # the official code's batching by crop size is the default
    views = [torch.randn(4, 3, 32, 32), 2.0 * torch.randn(4, 3, 32, 32) + 1.0] + [torch.randn(4, 3, 16, 16)] * 2
    losses = {}
    for one_pass in (True, False):
        for training in (True, False):
            losses[one_pass, training], batches = loss_and_backbone_batches(base, views, one_pass, training)
            assert batches == ([8, 8] if one_pass else [4] * 4)  # the student's passes
    # In training each pass normalises with its own batch's statistics; in evaluation with the running ones.
    assert abs(losses[True, True] - losses[False, True]) > 1e-4
    assert losses[True, False] == pytest.approx(losses[False, False], rel=1e-5)


def test_dynamic_size_backbone_keeps_models_that_take_any_size() -> None:
    resnet = timm.create_model("test_resnet", num_classes=0)
    assert dynamic_size_backbone(resnet) is resnet
    assert crop_size_multiple(resnet) == 32
    assert crop_size_multiple(torch.nn.Linear(2, 2)) == 1


def test_fixed_size_backbones_explain_which_sizes_they_take() -> None:
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=0)  # fixed to 224 px unless made dynamic
    check_input_sizes(vit, [torch.zeros(1, 3, 224, 224)], "DINO")
    with pytest.raises(ValueError, match=r"only accepts \(224, 224\) px"):
        check_input_sizes(vit, [torch.zeros(1, 3, 224, 224), torch.zeros(1, 3, 96, 96)], "DINO")
    check_input_sizes(dynamic_size_backbone(vit), [torch.zeros(1, 3, 96, 96)], "DINO")
