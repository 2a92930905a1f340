"""Multi-view augmentations built from torchvision.transforms.v2."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_images
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

from ssl_hub.registry import get_method_class, list_methods
from ssl_hub.transforms import (
    IMAGENET_NORMALIZE,
    BYOLTransform,
    BYOLView1Transform,
    LeJEPATransform,
    MultiViewTransform,
    RandomResizedCropAndFlip,
    SimCLRTransform,
    SimCLRViewTransform,
    SimSiamTransform,
)
from ssl_hub.transforms.view import GaussianBlur


@pytest.fixture
def image() -> Image.Image:
    return Image.fromarray(random_images(1, 40)[0])


def test_simclr_transform_returns_two_normalised_views(image: Image.Image) -> None:
    transform = SimCLRTransform(input_size=24)
    views = transform(image)
    assert len(views) == 2
    assert all(v.shape == (3, 24, 24) and v.dtype == torch.float32 for v in views)
    assert not torch.equal(views[0], views[1])  # two independent random draws
    assert transform.input_size == 24
    assert transform.normalize == IMAGENET_NORMALIZE


def test_with_every_augmentation_off_a_view_is_a_resize_and_normalisation(image: Image.Image) -> None:
    view = SimCLRViewTransform(
        input_size=20,
        cj_prob=0.0,
        min_scale=1.0,
        random_gray_scale=0.0,
        gaussian_blur=0.0,
        hf_prob=0.0,
        normalize={"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)},
    )
    square = image.crop((0, 0, 40, 40))
    expected = v2.Compose(
        [
            v2.Resize((20, 20), interpolation=InterpolationMode.BICUBIC),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([0.5] * 3, [0.25] * 3),
        ]
    )(square)
    torch.manual_seed(0)  # a full-scale crop of a square image with ratio 1 is the whole image
    outputs = [view(square) for _ in range(5)]
    assert any(torch.allclose(o, expected, atol=1e-5) for o in outputs)


def test_grayscale_probability_one_gives_equal_channels(image: Image.Image) -> None:
    view = SimCLRViewTransform(input_size=16, random_gray_scale=1.0, cj_prob=0.0, normalize=None)
    out = view(image)
    assert torch.allclose(out[0], out[1])
    assert torch.allclose(out[1], out[2])


@pytest.mark.parametrize(
    ("argument", "value"),
    [("cj_prob", 1.5), ("gaussian_blur", -0.1), ("hf_prob", 2.0), ("min_scale", 0.0 - 1), ("input_size", 0)],
)
def test_out_of_range_arguments_are_refused_by_name(argument: str, value: float) -> None:
    with pytest.raises(ValueError, match=argument):
        SimCLRTransform(**{argument: value})


def test_multi_view_transform_keeps_view_order(image: Image.Image) -> None:
    transform = MultiViewTransform([lambda _: torch.zeros(1), lambda _: torch.ones(1)])
    assert [v.item() for v in transform(image)] == [0.0, 1.0]
    with pytest.raises(ValueError, match="at least one"):
        MultiViewTransform([])


def byol_view_probabilities(transform: BYOLTransform) -> list[dict[str, float]]:
    """Each view's probabilities of blur, solarization and the other random steps, by transform name."""
    return [
        {type(t.transforms[0]).__name__: t.p for t in view.transforms if isinstance(t, v2.RandomApply)}
        | {"solarize": next(t.p for t in view.transforms if isinstance(t, v2.RandomSolarize))}
        for view in transform.transforms
    ]


def test_byol_views_differ_in_blur_and_solarization(image: Image.Image) -> None:
    transform = BYOLTransform(input_size=16)
    assert [v.shape for v in transform(image)] == [(3, 16, 16), (3, 16, 16)]
    probabilities = byol_view_probabilities(transform)
    assert probabilities[0]["GaussianBlur"] == 1.0
    assert probabilities[0]["solarize"] == 0.0
    assert probabilities[1]["GaussianBlur"] == 0.1
    assert probabilities[1]["solarize"] == 0.2


def test_byol_view_arguments_reach_both_default_views(image: Image.Image) -> None:
    transform = BYOLTransform(input_size=16, gaussian_blur=0.0, cj_prob=0.5)
    first, second = byol_view_probabilities(transform)
    assert first["GaussianBlur"] == second["GaussianBlur"] == 0.0
    assert first["ColorJitter"] == second["ColorJitter"] == 0.5
    assert (first["solarize"], second["solarize"]) == (0.0, 0.2)  # what was not given keeps each view's default
    with pytest.raises(ValueError, match="gaussian_blur"):
        BYOLTransform(input_size=16, view_1_transform=BYOLView1Transform(input_size=16), gaussian_blur=0.0)


@pytest.mark.parametrize("input_size", [32, 224])
def test_blur_spreads_a_line_by_the_drawn_sigma_at_any_image_size(input_size: int) -> None:
    """PIL images are blurred by Pillow's GaussianBlur(radius=sigma), as in the official code; tensors by a kernel that
    holds the whole Gaussian. Either way, at 32 px as at 224 px, a blurred line spreads with standard deviation
    sigma (a 3 px kernel at 32 px gave 0.8)."""
    view = SimCLRViewTransform(input_size=input_size, gaussian_blur=1.0, sigmas=(2.0, 2.0), normalize=None)
    steps = list(view.transforms)
    (index,) = [
        i for i, t in enumerate(steps) if isinstance(t, v2.RandomApply) and isinstance(t.transforms[0], v2.GaussianBlur)
    ]
    assert index < next(i for i, t in enumerate(steps) if isinstance(t, v2.ToImage))  # blurs the PIL image
    blur = steps[index].transforms[0]
    assert isinstance(blur, GaussianBlur)
    offsets = torch.arange(63, dtype=torch.float64) - 31

    image = Image.new("RGB", (63, 63))  # a bright vertical line in column 31
    for y in range(63):
        image.putpixel((31, y), (255, 255, 255))
    blurred = blur(image)
    assert isinstance(blurred, Image.Image)
    profile = torch.tensor(np.asarray(blurred, dtype=np.float64)[31, :, 0])  # (63,): one row, one channel
    assert profile.sum().item() == pytest.approx(255.0, rel=0.01)
    assert torch.sqrt((profile / profile.sum() * offsets**2).sum()).item() == pytest.approx(2.0, rel=0.03)

    line = torch.zeros(1, 63, 63, dtype=torch.float64)
    line[0, :, 31] = 1.0
    profile = blur(line)[0, 31]  # (63,)
    assert profile.sum().item() == pytest.approx(1.0)
    assert torch.sqrt((profile * offsets**2).sum()).item() == pytest.approx(2.0, rel=0.01)


def test_a_blur_kernel_size_given_is_torchvisions_convolution_of_that_size() -> None:
    view = SimCLRViewTransform(input_size=32, gaussian_blur=1.0, kernel_size=5, normalize=None)
    (blur,) = [t.transforms[0] for t in view.transforms if isinstance(t, v2.RandomApply)
               and isinstance(t.transforms[0], v2.GaussianBlur)]  # fmt: skip
    assert type(blur) is v2.GaussianBlur
    assert list(blur.kernel_size) == [5, 5]


def crop_interpolations(transform: object) -> set[InterpolationMode]:
    """The interpolation of every random resized crop inside ``transform`` (nested Composes and view lists)."""
    if isinstance(transform, v2.RandomResizedCrop):
        return {transform.interpolation}
    if isinstance(transform, RandomResizedCropAndFlip):
        return {transform.crop.interpolation}
    children = getattr(transform, "transforms", [])
    return set().union(*(crop_interpolations(child) for child in children)) if children else set()


# every registered method's transform: each builds its views from random resized crops
METHOD_TRANSFORMS = sorted({get_method_class(name).transform_class for name in list_methods()}, key=str)


@pytest.mark.parametrize("transform_class", METHOD_TRANSFORMS, ids=lambda t: t.__name__)
def test_every_crop_of_every_view_takes_the_interpolation_given(transform_class: type) -> None:
    # SimSiam's and LeJEPA's official code resize bilinearly (torchvision's default); the others follow SimCLR's bicubic
    bilinear = transform_class in (SimSiamTransform, LeJEPATransform)
    default = InterpolationMode.BILINEAR if bilinear else InterpolationMode.BICUBIC
    assert crop_interpolations(transform_class(input_size=32)) == {default}
    for mode in (InterpolationMode.BILINEAR, InterpolationMode.BICUBIC):
        assert crop_interpolations(transform_class(input_size=32, interpolation=mode.value)) == {mode}
    with pytest.raises(ValueError, match="interpolation must be one of nearest, bilinear, bicubic, got 'cubic'"):
        transform_class(input_size=32, interpolation="cubic")


def resized(image: Image.Image, mode: InterpolationMode) -> torch.Tensor:
    return v2.Compose([v2.Resize((20, 20), interpolation=mode), v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])(
        image
    )


@pytest.mark.parametrize(
    ("mode", "other"),
    [(InterpolationMode.BILINEAR, InterpolationMode.BICUBIC), (InterpolationMode.BICUBIC, InterpolationMode.BILINEAR)],
)
def test_a_full_crop_is_resized_with_the_interpolation_given(
    image: Image.Image, mode: InterpolationMode, other: InterpolationMode
) -> None:
    off = {"cj_prob": 0.0, "min_scale": 1.0, "random_gray_scale": 0.0, "gaussian_blur": 0.0, "hf_prob": 0.0}
    view = SimCLRViewTransform(input_size=20, normalize=None, interpolation=mode.value, **off)
    torch.manual_seed(0)  # a full-scale crop of a square image with ratio 1 is the whole image
    outputs = [view(image) for _ in range(5)]
    assert any(torch.allclose(o, resized(image, mode), atol=1e-5) for o in outputs)
    assert not any(torch.allclose(o, resized(image, other), atol=1e-5) for o in outputs)
