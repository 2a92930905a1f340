"""TiCo's augmentation: BYOL's asymmetric pair of views (Zhu et al., 2022, arXiv:2206.10698, section 5)."""

from __future__ import annotations

from ssl_hub.transforms.byol import BYOLTransform, BYOLView1Transform, BYOLView2Transform


class TiCoView1Transform(BYOLView1Transform):
    """TiCo's first view: BYOL's (LightlySSL's name); see :class:`~ssl_hub.transforms.BYOLView1Transform`."""


class TiCoView2Transform(BYOLView2Transform):
    """TiCo's second view: BYOL's (LightlySSL's name); see :class:`~ssl_hub.transforms.BYOLView2Transform`."""


class TiCoTransform(BYOLTransform):
    """The two TiCo views of one image: the first for the online encoder, the second for the momentum encoder.

    Args:
        input_size: Side of both views, used when a view transform is not given.
        view_1_transform: The first view's transform (default ``BYOLView1Transform(input_size)``).
        view_2_transform: The second view's transform (default ``BYOLView2Transform(input_size)``).
        view_kwargs: Arguments of both default view transforms (see :class:`~ssl_hub.transforms.BYOLTransform`).
    """
