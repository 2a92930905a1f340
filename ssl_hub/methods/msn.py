"""MSN: Masked Siamese Networks for Label-Efficient Learning.

Assran, Caron, Misra, Bojanowski, Bordes, Vincent, Joulin, Rabbat, Ballas, ECCV 2022 (arXiv:2204.07141). A ViT sees
masked anchor views of an image (random views with a random subset of their patches dropped, and small focal views)
and an EMA target network the unmasked target view; both are projected and softly assigned to learnable
prototypes. The anchors are trained to predict the target's assignment, sharpened and balanced by Sinkhorn-Knopp,
while mean-entropy maximisation keeps all prototypes in use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ssl_hub._validation import check_non_negative, check_positive, check_positive_int, check_probability
from ssl_hub.heads.msn import MSNProjectionHead
from ssl_hub.losses.msn import MSNLoss
from ssl_hub.methods.base import MethodConfig, Paper, SSLMethod, SSLMethodOutput
from ssl_hub.methods.dino import switch_off_dropout
from ssl_hub.modules.collapse import normalized_entropy
from ssl_hub.modules.ema import ema_copy
from ssl_hub.modules.masked_vit import MaskedVisionTransformer
from ssl_hub.modules.masking import MaskingRNG, mask_to_indices, num_masked, random_mask
from ssl_hub.modules.multi_crop import (
    check_input_sizes,
    crop_size_multiple,
    dynamic_size_backbone,
    multi_crop_forward,
)
from ssl_hub.registry import register_method
from ssl_hub.transforms.msn import MSNTransform
from ssl_hub.transforms.multi_crop import local_crop_size

if TYPE_CHECKING:
    from transformers import TrainerCallback

    from ssl_hub.transforms.multi_view import MultiViewTransform

PAPER = Paper(
    title="Masked Siamese Networks for Label-Efficient Learning",
    authors="Mahmoud Assran, Mathilde Caron, Ishan Misra, Piotr Bojanowski, Florian Bordes, Pascal Vincent, "
    "Armand Joulin, Michael Rabbat, Nicolas Ballas",
    year=2022,
    url="https://arxiv.org/abs/2204.07141",
    bibtex="""@inproceedings{assran2022msn,
  title={Masked Siamese Networks for Label-Efficient Learning},
  author={Assran, Mahmoud and Caron, Mathilde and Misra, Ishan and Bojanowski, Piotr and Bordes, Florian and
    Vincent, Pascal and Joulin, Armand and Rabbat, Michael and Ballas, Nicolas},
  booktitle={European Conference on Computer Vision (ECCV)},
  year={2022}
}""",
)


@dataclass
class MSNConfig(MethodConfig):
    """MSN's hyperparameters (the ViT-S/16 recipe: paper section 4 and the official ``msn_vits16.yaml``).

    Args:
        mask_ratio: Fraction of the patches dropped from the random anchor views (0.15 for ViT-S/16; the paper uses
            0.3 for ViT-B/16 and 0.7 for ViT-L/7).
        projection_hidden_dim: Hidden width of the projection head (2048).
        projection_output_dim: Width of the embeddings compared with the prototypes (256).
        num_prototypes: Number of prototypes ``K`` (1024).
        temperature: Temperature of the prototype assignments (0.1).
        target_sharpen_temperature: Sharpening temperature of the targets (0.25).
        sinkhorn_iterations: Sinkhorn-Knopp iterations on the targets (3; 0 switches it off).
        regularization_weight: Weight of the mean-entropy maximisation term (1).
        gather_distributed: Balance the targets and take the mean assignment over the global batch.
        momentum_start: EMA momentum of the target network at the first step (0.996) ...
        momentum_end: ... rising linearly to this at the last step (1).
        weight_decay_start: Weight decay at the first step (0.04) ...
        weight_decay_end: ... following a cosine to this at the last step (0.4).
    """

    mask_ratio: float = 0.15
    projection_hidden_dim: int = 2048
    projection_output_dim: int = 256
    num_prototypes: int = 1024
    temperature: float = 0.1
    target_sharpen_temperature: float = 0.25
    sinkhorn_iterations: int = 3
    regularization_weight: float = 1.0
    gather_distributed: bool = True
    momentum_start: float = 0.996
    momentum_end: float = 1.0
    weight_decay_start: float = 0.04
    weight_decay_end: float = 0.4

    def validate(self) -> None:
        owner = type(self).__name__.removesuffix("Config")
        check_probability("mask_ratio", self.mask_ratio, owner)
        if self.mask_ratio == 1:
            raise ValueError(f"{owner}: mask_ratio must be below 1: the anchor views must keep some patches.")
        for name in ("projection_hidden_dim", "projection_output_dim", "num_prototypes"):
            check_positive_int(name, getattr(self, name), owner)
        check_positive("temperature", self.temperature, owner)
        check_positive("target_sharpen_temperature", self.target_sharpen_temperature, owner)
        check_positive_int("sinkhorn_iterations", self.sinkhorn_iterations, owner, minimum=0)
        check_non_negative("regularization_weight", self.regularization_weight, owner)
        for name in ("momentum_start", "momentum_end"):
            check_probability(name, getattr(self, name), owner)
        for name in ("weight_decay_start", "weight_decay_end"):
            check_non_negative(name, getattr(self, name), owner)


def check_msn_views(views: Sequence[torch.Tensor], owner: str) -> None:
    """Raise a clear error unless ``views`` holds a target view and at least one anchor view of the same images."""
    if isinstance(views, torch.Tensor) or len(views) < 2:
        got = "a single tensor" if isinstance(views, torch.Tensor) else f"{len(views)} view(s)"
        raise ValueError(
            f"{owner} takes a target view followed by anchor views of each image, got {got}: build the data with "
            "method.make_transform(), which returns the views the method expects."
        )
    if any(v.ndim != 4 or v.shape[:2] != views[0].shape[:2] for v in views):
        shapes = [tuple(v.shape) for v in views]
        raise ValueError(f"{owner} takes (B, C, H, W) views of the same B images, got shapes {shapes}.")


@register_method
class MSN(SSLMethod):
    """MSN around a timm ViT; see :class:`MSNConfig` for the hyperparameters.

    ``views`` are those of :class:`MSNTransform`: the target view first, then the anchor views. Anchor views of the
    target view's size are random views: each image keeps a random ``1 - mask_ratio`` of its patches (dropped
    tokens, as the official ``patch_drop``); smaller anchor views are focal views, which the official code does not
    mask further. Each size group goes through the network as one batch. The target network (``teacher_backbone``
    + ``teacher_head``, an EMA copy without dropout or stochastic depth) sees the target view. ViTs built for one
    size are rebuilt with ``dynamic_img_size=True`` so that they take the focal views.

    The step-dependent parts are :meth:`callbacks`: the target network's momentum (linear from 0.996 to 1, as the
    official schedule) and the weight decay (cosine from 0.04 to 0.4). Gradients are clipped at norm 3.

    The published backbone is the **target** encoder (``published_backbone = "teacher_backbone"``): MSN evaluates
    it (the official ``linear_eval.py`` / ``logistic_eval.py`` load ``target_encoder``). The student ``backbone``,
    the heads and the prototypes live in ``ssl/``.

    The Trainer's log shows ``prediction_entropy``, the anchors' assignments' entropy over ``ln K``
    (:func:`~ssl_hub.modules.normalized_entropy`), beside the loss's terms. Mean-entropy maximisation keeps the
    *mean* assignment spread over the prototypes; this shows whether each anchor's own assignment is confident (near
    0, what the sharpened targets ask for) or uniform (near 1, where the loss learns nothing).
    """

    name = "msn"
    display_name = "MSN"
    config_class = MSNConfig
    transform_class = MSNTransform
    paper = PAPER
    learning_rate_scaling = "linear"
    requires_vit = True
    published_backbone = "teacher_backbone"
    config: MSNConfig

    def __init__(self, backbone: str | nn.Module, config: MSNConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.backbone = dynamic_size_backbone(self.backbone)
        self.encoder = MaskedVisionTransformer(self.backbone, owner=self.display_name)
        self.projection_head = MSNProjectionHead(self.feature_dim, cfg.projection_hidden_dim, cfg.projection_output_dim)
        # nn.Linear's default initialisation is the official one: U(-1/sqrt(D), 1/sqrt(D)).
        self.prototypes = nn.Linear(cfg.projection_output_dim, cfg.num_prototypes, bias=False)
        self.teacher_backbone = ema_copy(self.backbone)
        switch_off_dropout(self.teacher_backbone)
        self.teacher_head = ema_copy(self.projection_head)
        self.criterion = self.build_criterion()
        self.mask_rng = MaskingRNG()

    def build_criterion(self) -> MSNLoss:
        """The loss: :class:`MSNLoss` (PMSN overrides this)."""
        cfg = self.config
        return MSNLoss(
            temperature=cfg.temperature,
            sinkhorn_iterations=cfg.sinkhorn_iterations,
            regularization_weight=cfg.regularization_weight,
            gather_distributed=cfg.gather_distributed,
        )

    def forward(self, views: Sequence[torch.Tensor]) -> SSLMethodOutput:
        check_msn_views(views, self.display_name)
        check_input_sizes(self.backbone, views, self.display_name)
        target_view, anchor_views = views[0], views[1:]
        with torch.no_grad():
            targets = self.teacher_head(self.teacher_backbone(target_view))  # (B, D)
        random_views = [v for v in anchor_views if v.shape == target_view.shape]
        focal_views = [v for v in anchor_views if v.shape != target_view.shape]
        anchors = []
        if random_views:
            anchors.append(self.projection_head(self.masked_features(torch.cat(random_views))))  # (R * B, D)
        if focal_views:
            anchors.extend(multi_crop_forward(lambda x: self.projection_head(self.backbone(x)), focal_views))
        anchor_embeddings = torch.cat(anchors)  # (V * B, D), view by view
        terms = self.criterion.terms(
            anchor_embeddings,
            targets,
            self.prototypes.weight,
            target_sharpen_temperature=self.config.target_sharpen_temperature,
        )
        entropy = normalized_entropy(self.criterion.anchor_logits(anchor_embeddings, self.prototypes.weight))
        return SSLMethodOutput.from_terms(terms, prediction_entropy=entropy)

    def masked_features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, D)`` of ``images`` with ``mask_ratio`` of each image's patches dropped."""
        grid = self.encoder.grid_size(images.shape[-2:])
        num_patches = grid[0] * grid[1]
        count = num_masked(num_patches, self.config.mask_ratio)
        if count == 0:
            return self.encoder.pool(self.encoder(images))
        if count == num_patches:
            raise ValueError(
                f"{self.display_name}: mask_ratio {self.config.mask_ratio} drops all {num_patches} patches of "
                f"{tuple(images.shape[-2:])} px views; use larger views or a smaller mask_ratio."
            )
        generator = self.mask_rng.next_generator(images.device)
        mask = random_mask(len(images), num_patches, self.config.mask_ratio, generator=generator)  # (B, N)
        keep, _ = mask_to_indices(mask, count)  # (B, N - M)
        return self.encoder.pool(self.encoder(images, keep=keep))

    def make_transform(self, input_size: int = 224, **kwargs: Any) -> MultiViewTransform:
        """:class:`MSNTransform` with random views of ``input_size`` px and focal views scaled to them."""
        kwargs.setdefault("focal_size", local_crop_size(input_size, crop_size_multiple(self.backbone)))
        return super().make_transform(input_size, **kwargs)

    def parameter_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """As every method's, with the prototypes also spared from weight decay (official ``msn_train.py``)."""
        decayed, spared = super().parameter_groups(weight_decay)
        prototypes = [p for p in self.prototypes.parameters() if p.requires_grad]
        decayed["params"] = [p for p in decayed["params"] if all(p is not q for q in prototypes)]
        spared["params"] = [*spared["params"], *prototypes]
        return [decayed, spared]

    def callbacks(self) -> list[TrainerCallback]:
        from ssl_hub.training.callbacks import LinearEMAUpdateCallback, WeightDecayScheduleCallback

        cfg = self.config
        pairs = [(self.backbone, self.teacher_backbone), (self.projection_head, self.teacher_head)]
        return [
            LinearEMAUpdateCallback(pairs, cfg.momentum_start, cfg.momentum_end),
            WeightDecayScheduleCallback(cfg.weight_decay_start, cfg.weight_decay_end),
        ]

    @classmethod
    def default_training_arguments(cls, config: MethodConfig | None = None) -> dict[str, Any]:
        """The official ViT-S/16 recipe: AdamW, lr 1e-3 at batch 1024 (64 per GPU on 16 GPUs; linearly scaled to
        the default batch of 64), cosine decay after a 15 of 800 epochs warm-up, weight decay from 0.04, clipping at
        3."""
        return {
            "learning_rate": 1e-3 * 64 / 1024,
            "optim": "adamw_torch",
            "weight_decay": 0.04,
            "lr_scheduler_type": "cosine",
            "warmup_steps": 15 / 800,
            "max_grad_norm": 3.0,
        }
