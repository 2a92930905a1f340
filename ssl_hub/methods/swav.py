"""SwaV: Unsupervised Learning of Visual Features by Contrasting Cluster Assignments.

Caron, Misra, Mairal, Goyal, Bojanowski, Joulin, NeurIPS 2020 (arXiv:2006.09882). Embeddings of all crops of an
image are scored against trainable prototypes; Sinkhorn-Knopp turns the scores of each global crop into soft codes
that spread the batch evenly over the prototypes, and every other crop predicts those codes (swapped prediction).
Multi-crop adds cheap low-resolution crops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import TrainerCallback

from ssl_hub import distributed
from ssl_hub._validation import check_non_negative, check_positive, check_positive_int
from ssl_hub.heads.swav import SwaVProjectionHead, SwaVPrototypes
from ssl_hub.losses.swav import SwaVLoss
from ssl_hub.methods.base import MethodConfig, Paper, SSLMethod, SSLMethodOutput
from ssl_hub.modules.collapse import normalized_entropy
from ssl_hub.modules.memory_bank import MemoryBankModule
from ssl_hub.modules.multi_crop import (
    check_input_sizes,
    check_multi_crop_views,
    crop_size_multiple,
    dynamic_size_backbone,
    multi_crop_forward,
)
from ssl_hub.registry import register_method
from ssl_hub.training.callbacks import trainer_steps_per_epoch
from ssl_hub.transforms.multi_crop import local_crop_size
from ssl_hub.transforms.swav import SwaVTransform

if TYPE_CHECKING:
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from ssl_hub.transforms.multi_view import MultiViewTransform

PAPER = Paper(
    title="Unsupervised Learning of Visual Features by Contrasting Cluster Assignments",
    authors="Mathilde Caron, Ishan Misra, Julien Mairal, Priya Goyal, Piotr Bojanowski, Armand Joulin",
    year=2020,
    url="https://arxiv.org/abs/2006.09882",
    bibtex="""@inproceedings{caron2020swav,
  title={Unsupervised Learning of Visual Features by Contrasting Cluster Assignments},
  author={Caron, Mathilde and Misra, Ishan and Mairal, Julien and Goyal, Priya and Bojanowski, Piotr and
    Joulin, Armand},
  booktitle={Advances in Neural Information Processing Systems (NeurIPS)},
  year={2020}
}""",
)

# The two global crops give the codes (the official crops_for_assign = [0, 1]); each has its own queue.
N_GLOBAL_CROPS = 2


@dataclass
class SwaVConfig(MethodConfig):
    """SwaV's hyperparameters (paper sec. 4 and appendix, official ``main_swav.py``).

    Args:
        projection_hidden_dim: Hidden width of the projector.
        projection_output_dim: Width of the embeddings compared with the prototypes.
        n_prototypes: Number of prototypes.
        n_steps_frozen_prototypes: Optimizer steps at the start during which the prototypes do not train (313 in
            the official code: its scripts freeze one ImageNet epoch, 313 steps at batch 4096, 5005 at 256). Trained
            too early, the prototypes turn away from embeddings that still crowd together, the predictions go
            uniform and the loss sits at ``ln K`` (``prediction_entropy`` near 1).
        temperature: Softmax temperature of the predictions.
        sinkhorn_iterations: Sinkhorn-Knopp iterations.
        sinkhorn_epsilon: Entropy regularisation of the codes.
        sinkhorn_gather_distributed: Compute the codes over the global batch under multi-process training.
        queue_length: Embeddings of earlier batches kept per global crop to compute the codes with, for small batches
            (3840 at batch 256 in the paper; 0: no queue, the official default). One queue holds the embeddings of
            all processes, like the official per-process queues together.
        queue_start_epoch: Epoch from which the queue is filled (15 in the official code); it is used once full.
        prototype_bias: Give each prototype a trainable bias on its scores, as LightlySSL's ``SwaVPrototypes`` (the
            official code's have none).
        views_in_one_pass: Encode the crops of each size as one batch (batch-norm statistics span them, as the
            official code); ``False`` encodes each crop on its own, as LightlySSL's examples do.
    """

    projection_hidden_dim: int = 2048
    projection_output_dim: int = 128
    n_prototypes: int = 3000
    n_steps_frozen_prototypes: int = 313
    temperature: float = 0.1
    sinkhorn_iterations: int = 3
    sinkhorn_epsilon: float = 0.05
    sinkhorn_gather_distributed: bool = True
    queue_length: int = 0
    queue_start_epoch: float = 15.0
    prototype_bias: bool = False
    views_in_one_pass: bool = True

    def validate(self) -> None:
        for name in ("projection_hidden_dim", "projection_output_dim", "n_prototypes"):
            check_positive_int(name, getattr(self, name), "SwaV")
        for name in ("n_steps_frozen_prototypes", "sinkhorn_iterations", "queue_length"):
            check_positive_int(name, getattr(self, name), "SwaV", minimum=0)
        check_positive("temperature", self.temperature, "SwaV")
        check_positive("sinkhorn_epsilon", self.sinkhorn_epsilon, "SwaV")
        check_non_negative("queue_start_epoch", self.queue_start_epoch, "SwaV")


class SwaVQueueCallback(TrainerCallback):
    """Before each optimizer step, switch SwaV's queue on from ``queue_start_epoch`` (converted to steps).

    Args:
        method: The SwaV method whose queue to switch.
    """

    def __init__(self, method: SwaV) -> None:
        self.method = method

    def start_step(self, steps_per_epoch: int) -> int:
        return round(self.method.config.queue_start_epoch * steps_per_epoch)

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        epoch = trainer_steps_per_epoch(args, state, kwargs.get("train_dataloader"))
        self.method.use_queue = state.global_step >= self.start_step(epoch)


@register_method
class SwaV(SSLMethod):
    """SwaV around any timm backbone; see :class:`SwaVConfig` for the hyperparameters.

    ``views`` are 2 global crops of one size followed by any number of smaller crops (:class:`SwaVTransform`); each size
    group goes through the backbone as one batch (each crop alone with ``views_in_one_pass=False``). Embeddings are
    L2-normalised projections; the prototypes are normalised before every training forward pass (as the official code
    does before each iteration) and frozen for the first ``n_steps_frozen_prototypes`` optimizer steps. The codes of the
    global crops are computed by Sinkhorn-Knopp over the global batch, and, with a queue, over the queued embeddings of
    earlier batches too. Timm ViTs built for one size are rebuilt with ``dynamic_img_size=True`` so that they take the
    smaller crops. The Trainer's log shows ``prediction_entropy``, the predictions' entropy over ``ln K``
    (:func:`~ssl_hub.modules.normalized_entropy`): near 1 the predictions are uniform, the trivial solution at which
    the loss sits at ``ln K`` and the backbone learns nothing.

    The published backbone is the trained ``backbone``; the heads, prototypes and queues live in ``ssl/``.
    """

    name = "swav"
    display_name = "SwaV"
    config_class = SwaVConfig
    transform_class = SwaVTransform
    paper = PAPER
    config: SwaVConfig
    queue_count: torch.Tensor

    def __init__(self, backbone: str | nn.Module, config: SwaVConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.backbone = dynamic_size_backbone(self.backbone)
        self.projection_head = SwaVProjectionHead(
            self.feature_dim, cfg.projection_hidden_dim, cfg.projection_output_dim
        )
        self.prototypes = SwaVPrototypes(
            cfg.projection_output_dim, cfg.n_prototypes, cfg.n_steps_frozen_prototypes, bias=cfg.prototype_bias
        )
        self.criterion = SwaVLoss(
            temperature=cfg.temperature,
            sinkhorn_iterations=cfg.sinkhorn_iterations,
            sinkhorn_epsilon=cfg.sinkhorn_epsilon,
            sinkhorn_gather_distributed=cfg.sinkhorn_gather_distributed,
        )
        self.queues = (
            nn.ModuleList(
                MemoryBankModule(cfg.queue_length, cfg.projection_output_dim, gather_distributed=True)
                for _ in range(N_GLOBAL_CROPS)
            )
            if cfg.queue_length
            else None
        )
        self.register_buffer("queue_count", torch.zeros((), dtype=torch.long))  # embeddings written per queue
        self.use_queue = False  # switched on by SwaVQueueCallback from queue_start_epoch

    def forward(self, views: Sequence[torch.Tensor]) -> SSLMethodOutput:
        check_multi_crop_views(views, type(self).__name__)
        check_input_sizes(self.backbone, views, type(self).__name__)
        if self.training:
            self.prototypes.normalize()
        embeddings = multi_crop_forward(
            lambda x: F.normalize(self.projection_head(self.backbone(x)), dim=1), views, self.config.views_in_one_pass
        )  # (B, D) each, unit norm
        scores = [self.prototypes(z) for z in embeddings]  # (B, K) each
        queue_scores = self._queue_scores(embeddings[:N_GLOBAL_CROPS]) if self.training and self.use_queue else None
        loss = self.criterion(scores[:N_GLOBAL_CROPS], scores[N_GLOBAL_CROPS:], queue_scores)
        # 1 when the predictions are uniform over the prototypes: the trivial solution, where the loss sits at ln K
        entropy = normalized_entropy(torch.cat(scores) / self.config.temperature)
        return SSLMethodOutput(loss=loss, metrics={"prediction_entropy": entropy})

    @torch.no_grad()
    def _queue_scores(self, global_embeddings: Sequence[torch.Tensor]) -> list[torch.Tensor] | None:
        """Scores of the queued embeddings (read before this batch is queued) once the queues are full."""
        if self.queues is None:
            return None
        full = int(self.queue_count) >= self.config.queue_length
        queued = [queue(z.detach(), update=True)[1] for queue, z in zip(self.queues, global_embeddings, strict=True)]
        written = global_embeddings[0].shape[0] * distributed.world_size()
        self.queue_count.fill_(min(int(self.queue_count) + written, self.config.queue_length))
        return (
            [self.prototypes(bank.to(z.dtype)) for bank, z in zip(queued, global_embeddings, strict=True)]
            if full
            else None
        )

    def make_transform(self, input_size: int = 224, **kwargs: Any) -> MultiViewTransform:
        """:class:`SwaVTransform` with global crops of ``input_size`` px and low-resolution crops scaled to them."""
        kwargs.setdefault("crop_sizes", (input_size, local_crop_size(input_size, crop_size_multiple(self.backbone))))
        return super().make_transform(input_size, **kwargs)

    def callbacks(self) -> list[TrainerCallback]:
        from ssl_hub.training.callbacks import FreezeParametersCallback

        callbacks: list[TrainerCallback] = []
        if self.prototypes.n_steps_frozen_prototypes:
            prototypes = list(self.prototypes.parameters())
            callbacks.append(
                FreezeParametersCallback(prototypes, frozen_steps=self.prototypes.n_steps_frozen_prototypes)
            )
        if self.queues is not None:
            callbacks.append(SwaVQueueCallback(self))
        return callbacks
