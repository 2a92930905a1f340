"""MMCR's augmentation: ``k`` views of each image, alternately BYOL's first and second view (Yerxa et al., 2023,
arXiv:2303.03307; the official ImageNet code's ``Barlow_Transform``)."""

from __future__ import annotations

from typing import Any

from ssl_hub._validation import check_positive_int
from ssl_hub.transforms.byol import BYOLView1Transform, BYOLView2Transform
from ssl_hub.transforms.multi_view import IMAGENET_NORMALIZE, MultiViewTransform


class MMCRTransform(MultiViewTransform):
    """``k`` views of one image: views 0, 2, 4, ... are BYOL's first view (always blurred), views 1, 3, 5, ... its
    second (blurred with probability 0.1, solarized with probability 0.2), as the official ImageNet code. LightlySSL's
    ``MMCRTransform`` (default ``k=8``) makes every view a first view; ``view_kwargs`` such as ``gaussian_blur=0.0``
    (CIFAR-sized recipes) apply to both.

    Args:
        k: Number of views (2 in the official ImageNet recipe).
        input_size: Side of each view in pixels.
        **view_kwargs: Arguments of both view transforms (those of :class:`~ssl_hub.transforms.BYOLView1Transform`),
            on top of each one's own defaults.
    """

    def __init__(self, k: int = 2, input_size: int = 224, **view_kwargs: Any) -> None:
        check_positive_int("k", k, type(self).__name__)
        views = (
            BYOLView1Transform(input_size=input_size, **view_kwargs),
            BYOLView2Transform(input_size=input_size, **view_kwargs),
        )
        normalize = view_kwargs.get("normalize", IMAGENET_NORMALIZE)
        super().__init__([views[i % 2] for i in range(k)], input_size=input_size, normalize=normalize)
