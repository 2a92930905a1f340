"""I-JEPA's augmentation (Assran et al., 2023, arXiv:2301.08243, appendix A; official ``src/transforms.py`` and
``configs/in1k_vith14_ep300.yaml``): one random resized crop, nothing else."""

from __future__ import annotations

from torchvision.transforms import v2

from ssl_hub._validation import check_positive_int, check_probability
from ssl_hub.transforms.multi_view import IMAGENET_NORMALIZE, MultiViewTransform, to_normalized_tensor
from ssl_hub.transforms.view import crop_interpolation


class IJEPATransform(MultiViewTransform):
    """One view: random resized crop of 30-100 % of the image, tensor, normalise. LightlySSL's name.

    I-JEPA uses no hand-crafted view augmentation: the official configs crop with scale (0.3, 1.0) and switch
    flips, colour distortion and blur off (LightlySSL's ``IJEPATransform`` crops from 20 % and flips).

    Args:
        input_size: Side of the view in pixels.
        min_scale: Smallest crop area, as a fraction of the image.
        hf_prob: Probability of a horizontal flip (0, as the official configs).
        normalize: ``{"mean", "std"}`` to normalise with, or ``None``.
        interpolation: Resampling of the random resized crop: ``"bicubic"``, ``"bilinear"`` or ``"nearest"``.
    """

    def __init__(
        self,
        input_size: int = 224,
        min_scale: float = 0.3,
        hf_prob: float = 0.0,
        normalize: dict[str, tuple[float, ...]] | None = IMAGENET_NORMALIZE,
        interpolation: str = "bicubic",
    ) -> None:
        owner = type(self).__name__
        check_positive_int("input_size", input_size, owner)
        check_probability("min_scale", min_scale, owner)
        check_probability("hf_prob", hf_prob, owner)
        resampling = crop_interpolation(interpolation, owner)
        view = v2.Compose(
            [
                v2.RandomResizedCrop(input_size, scale=(min_scale, 1.0), interpolation=resampling, antialias=True),
                v2.RandomHorizontalFlip(p=hf_prob),
                *to_normalized_tensor(normalize),
            ]
        )
        super().__init__([view], input_size=input_size, normalize=normalize)
