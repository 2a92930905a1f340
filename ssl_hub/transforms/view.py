"""The augmentation pipeline most SSL papers share (SimCLR's, extended by BYOL's solarization), as one builder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageFilter
from torchvision.transforms import InterpolationMode, v2

from ssl_hub._validation import check_non_negative, check_one_of, check_positive_int, check_probability
from ssl_hub.transforms.multi_view import blur_kernel_size, to_normalized_tensor


class RandomApply(v2.RandomApply):
    """torchvision's ``RandomApply`` with its probability in the repr (torchvision's lists only the transforms), so
    the augmentation recorded in a model card says how often each step applies."""

    def extra_repr(self) -> str:
        return f"p={self.p}, {super().extra_repr().strip()}"


class GaussianBlur(v2.GaussianBlur):
    """torchvision's ``GaussianBlur``, run by Pillow on PIL images: ``ImageFilter.GaussianBlur(radius=sigma)``, the
    blur of the official MoCo v2, DINO, SwAV, Barlow Twins and VICReg code and of LightlySSL. Pillow approximates the
    Gaussian of the drawn sigma with three box filters, in time linear in the pixels: at 224 px on one core 1.2 ms
    against 11 ms for torchvision's 23 px convolution of the uint8 tensor. Tensors are convolved by torchvision with
    ``kernel_size``."""

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, Image.Image):
            return inpt.filter(ImageFilter.GaussianBlur(radius=params["sigma"][0]))
        return super().transform(inpt, params)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, Pillow's on PIL images, a kernel of {self.kernel_size[0]} px on tensors"


CROP_INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


def crop_interpolation(name: str, owner: str) -> InterpolationMode:
    """The resampling mode called ``name`` (one of :data:`CROP_INTERPOLATIONS`), for a random resized crop."""
    check_one_of("interpolation", name, CROP_INTERPOLATIONS, owner)
    return InterpolationMode(name)


def view_augmentation(
    owner: str,
    *,
    input_size: int,
    cj_prob: float,
    cj_strength: float,
    cj_bright: float,
    cj_contrast: float,
    cj_sat: float,
    cj_hue: float,
    min_scale: float,
    random_gray_scale: float,
    gaussian_blur: float,
    kernel_size: int | None,
    sigmas: Sequence[float],
    solarization_prob: float,
    vf_prob: float,
    hf_prob: float,
    rr_prob: float,
    rr_degrees: float | Sequence[float] | None,
    normalize: dict[str, tuple[float, ...]] | None,
    max_scale: float = 1.0,
    interpolation: str = "bicubic",
) -> list[v2.Transform]:
    """Random resized crop, rotation, flips, then :func:`photometric_augmentation` (colour jitter, grayscale, blur,
    solarization, tensor + normalize).

    Argument names follow LightlySSL's view transforms; ``owner`` names the transform in error messages.
    ``cj_*`` factors are multiplied by ``cj_strength``; ``rr_degrees=None`` rotates by exactly 90 degrees;
    ``interpolation`` names the crop's resampling (:func:`crop_interpolation`); ``kernel_size=None`` blurs PIL images
    with Pillow (:class:`GaussianBlur`), a kernel size with torchvision's convolution of that size.
    """
    check_positive_int("input_size", input_size, owner)
    for name, value in [
        ("vf_prob", vf_prob),
        ("hf_prob", hf_prob),
        ("rr_prob", rr_prob),
        ("min_scale", min_scale),
        ("max_scale", max_scale),
    ]:
        check_probability(name, value, owner)
    if min_scale > max_scale:
        raise ValueError(f"{owner}: min_scale ({min_scale}) must not exceed max_scale ({max_scale}).")
    rotation = v2.RandomRotation(degrees=(90.0, 90.0) if rr_degrees is None else rr_degrees)
    return [
        v2.RandomResizedCrop(
            input_size,
            scale=(min_scale, max_scale),
            interpolation=crop_interpolation(interpolation, owner),
            antialias=True,
        ),
        RandomApply([rotation], p=rr_prob),
        v2.RandomHorizontalFlip(p=hf_prob),
        v2.RandomVerticalFlip(p=vf_prob),
        *photometric_augmentation(
            owner,
            input_size=input_size,
            cj_prob=cj_prob,
            cj_strength=cj_strength,
            cj_bright=cj_bright,
            cj_contrast=cj_contrast,
            cj_sat=cj_sat,
            cj_hue=cj_hue,
            random_gray_scale=random_gray_scale,
            gaussian_blur=gaussian_blur,
            kernel_size=kernel_size,
            sigmas=sigmas,
            solarization_prob=solarization_prob,
            normalize=normalize,
        ),
    ]


def photometric_augmentation(
    owner: str,
    *,
    input_size: int,
    cj_prob: float,
    cj_strength: float,
    cj_bright: float,
    cj_contrast: float,
    cj_sat: float,
    cj_hue: float,
    random_gray_scale: float,
    gaussian_blur: float,
    kernel_size: int | None,
    sigmas: Sequence[float],
    solarization_prob: float,
    normalize: dict[str, tuple[float, ...]] | None,
) -> list[v2.Transform]:
    """Colour jitter, grayscale, blur, solarization, then tensor + normalize: the steps of a view after its geometry.

    Arguments as :func:`view_augmentation`'s; ``input_size`` (the view's side) sizes the blur kernel of tensors.
    """
    for name, value in [
        ("cj_prob", cj_prob),
        ("random_gray_scale", random_gray_scale),
        ("gaussian_blur", gaussian_blur),
        ("solarization_prob", solarization_prob),
        ("cj_hue", min(cj_hue * cj_strength, 0.5)),
    ]:
        check_probability(name, value, owner)
    for name, value in [
        ("cj_strength", cj_strength),
        ("cj_bright", cj_bright),
        ("cj_contrast", cj_contrast),
        ("cj_sat", cj_sat),
        ("cj_hue", cj_hue),
    ]:
        check_non_negative(name, value, owner)
    color_jitter = v2.ColorJitter(
        brightness=cj_strength * cj_bright,
        contrast=cj_strength * cj_contrast,
        saturation=cj_strength * cj_sat,
        hue=min(0.5, cj_strength * cj_hue),
    )
    sigma = (float(sigmas[0]), float(sigmas[1]))
    blur = (
        GaussianBlur(blur_kernel_size(input_size, max(sigma)), sigma=sigma)
        if kernel_size is None
        else v2.GaussianBlur(kernel_size, sigma=sigma)  # the kernel asked for, on PIL images too
    )
    # Colour and blur run on PIL images (Pillow's kernels beat torchvision's tensor ones there: ~30 % for colour on
    # small crops, 9x for the blur at 224 px); solarization runs on the uint8 tensor, where torchvision computes it
    # anyway (the same pixels without a PIL <-> tensor round trip).
    to_image, *to_float = to_normalized_tensor(normalize)
    return [
        RandomApply([color_jitter], p=cj_prob),
        v2.RandomGrayscale(p=random_gray_scale),
        RandomApply([blur], p=gaussian_blur),
        to_image,
        v2.RandomSolarize(threshold=128, p=solarization_prob),
        *to_float,
    ]
