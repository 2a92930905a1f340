"""LightlySSL references for the accuracy benchmark: each ssl_hub method rebuilt from LightlySSL's blocks.

``LIGHTLY_METHODS`` maps an ssl_hub registry name to a factory ``backbone name -> SSLMethod``. The returned method is
trained by ``ssl_hub.pretrain`` exactly like ours (same Trainer, data, budget, seed, and our method's
``default_training_arguments``), but its ``forward`` computes the loss only with LightlySSL's heads, losses, masked
ViTs and ``lightly.models.utils`` helpers, assembled as LightlySSL's own examples (``examples/pytorch/<method>.py``)
assemble them; its transform is LightlySSL's; its step-dependent updates (EMA momentum, epoch-based schedules) are
driven from the Trainer state with ``lightly.models.utils.update_momentum`` and
``lightly.utils.scheduler.cosine_schedule``. The classes are not registered in ssl_hub's registry.

Benchmark-only: needs ``pip install lightly`` (written against lightly 1.6.0); never imported by ssl_hub. Covers all
24 registered ssl_hub methods; MoCo in its v2 form only (LightlySSL has no MoCo v3 recipe or loss), DINOv2 with DINO
centering only (LightlySSL has no Sinkhorn-Knopp teacher normalisation).
"""

# Deliberate differences from our implementations (ssl_hub/methods/*.py) and from LightlySSL's examples
# =====================================================================================================
# What both sides share on purpose, so that the comparison is about the implementation:
# - Hyperparameters are our config defaults: each reference reuses our method's config class, so head widths, queue
#   sizes, temperatures and momentum schedules are ours, not the examples' CIFAR/VOC-scale values (examples use e.g.
#   512-wide heads, 4096-long queues, NTXentLoss's default temperature 0.5 and a cosine momentum 0.996 -> 1 for every
#   EMA method). The optimizer recipe is our method's ``default_training_arguments()``.
# - Multi-crop view sizes are ours (the same local crop side for the backbone's stride, via ssl_hub helpers), and a
#   timm ViT is made to accept every crop size the way ours is (``dynamic_size_backbone``): plumbing, not the method.
# What differs on purpose (LightlySSL's way, as its examples do it):
# - Forward passes: every view goes through the backbone on its own (batch-norm statistics of one view), as in the
#   examples. Ours: SimCLR and DCL pass both views as one batch by default (``views_in_one_pass=False`` does as the
#   examples, and is DCLW's default); DINO / SwaV / SMoG batch crops by size by default (``views_in_one_pass=False``
#   does as the examples). MSN, iBOT and DINOv2 batch views by size as their examples do (and as ours).
# - EMA teachers: ``copy.deepcopy`` + ``deactivate_requires_grad``; ``update_momentum`` runs at the *start* of each
#   optimizer step (``on_step_begin``) with ``cosine_schedule(global_step, max_steps, start, end)``, as in the
#   examples / LightlySSL's benchmarks. Ours updates at the end of each step with that step's momentum: each forward
#   sees the same teacher state, but the schedule is shifted by one step and the reference's teacher misses the
#   update after the last step (which matters for DINO, whose published backbone is the teacher).
# - Transforms: LightlySSL's classes with their defaults and only the size set (LightlySSL blurs with PIL's
#   GaussianBlur, sigma 0.1-2, no kernel size; ours uses torchvision with a kernel of 10 % of the side). The CIFAR
#   examples switch blur off at 32 px (``gaussian_blur=0.0``); not here, as ours keeps it. Normalisation is ImageNet's
#   on both sides.
# Per method:
# - simclr / dcl / dclw: SimCLRProjectionHead + NTXentLoss / DCLLoss / DCLWLoss; views encoded separately.
# - byol / simsiam / barlowtwins / vicreg: as the examples, with our widths (BYOL 4096-256-4096, momentum
#   0.99 -> 1; SimSiam 2048-2048-512; Barlow Twins 8192 x 3; VICReg 3 layers of 8192).
# - moco: v2 only (``version=3`` raises). MoCoProjectionHead + NTXentLoss with a 65536 memory bank, temperature 0.2,
#   constant momentum 0.999; no shuffling BN, as the example (ours shuffles the key encoder's batch norm, in one
#   process in groups of 32 shuffled images; LightlySSL's tool for that, SplitBatchNorm, lives in its own ResNets).
# - nnclr: NTXentLoss as in the example (negatives include same-side pairs); ours InfoNCE across the two sides.
#   NNMemoryBankModule has no cross-rank gathering. (Memory banks start as random unit vectors on both sides.)
# - tico: TiCoLoss's covariance matrix is a plain attribute (not in state_dict / checkpoints); momentum 0.99 -> 1.
# - mmcr: as examples/pytorch/mmcr.py: MMCRProjectionHead, momentum copies, every view through both encoders on its
#   own, MMCRLoss on the (B, k, D) stacks; LightlySSL's MMCRLoss does not L2-normalise the embeddings (the official
#   code does, and ours) and takes the per-image nuclear norms over online and momentum views (official: online);
#   MMCRTransform makes every view BYOL's first view (official and ours: alternately the first and the second).
# - vicregl: as examples/pytorch/vicregl.py: VICRegLTransform with no local views (ours: 6), its crop scales (global
#   20-100 %, official and ours 40-100 %) and grids of the backbone's map size (the example's fixed 7 x 7 fits 224 px);
#   BarlowTwinsProjectionHead on the pooled map and VicRegLLocalProjectionHead (LayerNorm; official and ours: batch
#   norm for ResNets) at each location of timm's ``forward_features`` (a CNN's map); VICRegLLoss, which keeps only
#   ``num_matches`` of the matches by embedding distance too (official and ours: all).
# - lejepa: as examples/pytorch/lejepa.py: DINOTransform (global crops of 30-100 %, 6 local crops of 5-30 %, blur 0.5
#   on every crop, solarization on the second global crop only; official and ours: on every crop), LeJEPAProjectionHead,
#   the two global crops in one backbone pass and the local crops in another (ours too, `local_crops_own_pass`),
#   LeJEPALoss (SIGReg's directions from torch's global generator, a new draw at every step; ours from a seeded
#   generator). The example's backbone ends in a 512-wide linear layer (``num_classes=512``); here, as ours, the head
#   reads the backbone's features.
# - densecl: the example's ``forward_momentum`` runs the *query* encoder (``self.backbone``, the online heads) - a
#   bug; here the key encoder is the momentum copy, as DenseCL specifies. Global and dense heads are
#   DenseCLProjectionHead (the dense one applied to (B, H*W, C) tokens, a 1x1 convolution); global features are
#   AdaptiveAvgPool2d over timm's ``forward_features`` (so CNN backbones only: a (B, C, H, W) map is required); two
#   NTXentLoss with memory banks (0.2, 65536 each); the dense queue receives the matched key of every query location,
#   B*H*W vectors per step (ours: one pooled vector per image, as the official code; ``dense_queue_keys="matched"``
#   as LightlySSL); constant momentum 0.999; no shuffling BN, as MoCo's reference (ours shuffles).
# - dino: the teacher head is a *separately initialised* DINOProjectionHead (as in the example and LightlySSL's
#   benchmarks), ours a copy of the student's; the teacher backbone is a copy. Teacher temperature: DINOLoss's own
#   per-epoch warm-up (``epoch=``; linspace over ``warmup_teacher_temp_epochs``, reaching ``teacher_temp`` at its last
#   epoch), ours linear per step; flat at 0.04 with the defaults, where they agree. Last layer frozen with
#   ``cancel_last_layer_gradients(epoch)`` before the optimizer step; weight decay cosine 0.04 -> 0.4 with LightlySSL's
#   ``cosine_schedule`` (as its ViT-B/16 benchmark). The teacher keeps the backbone's drop-path (none in the default
#   backbones); ours switches it off. Published backbone: the teacher, as ours.
# - swav: prototypes frozen for ``n_steps_frozen_prototypes`` optimizer steps through ``SwaVPrototypes(x, step)``
#   (LightlySSL's own benchmark passes the epoch there); its prototype layer has a bias (``nn.Linear``'s default; the
#   official code's and ours have none); optional queue (off by default) as in
#   ``examples/pytorch/swav_queue.py``: MemoryBankModule queues that start random and are used from
#   ``queue_start_epoch`` on, not once filled as ours.
# - smog: LightlySSL's only SMoG recipe (examples/pytorch/smog.py) is a two-crop one: SMoGTransform with one crop per
#   category, both at the global size and scale 0.2-1 -> 2 views, where ours trains 4 + 4 multi-crop (8 views). The
#   two views swap roles every other optimizer step; the momentum encoder's projection of view 1 gives the
#   assignments, the online projections of view 0 update the group features (gradients flow through that update, as
#   in the example), nn.CrossEntropyLoss on SMoGPrototypes' logits. Group features start as ``torch.rand`` (uniform,
#   not normalised). Every ``group_reset_interval`` steps, instead of the momentum update: group features := k-means
#   of the memory bank (which starts random) and momentum encoder := online encoder. The example clusters with
#   ``sklearn.cluster.KMeans`` (k-means++, not a dependency here); this file runs plain Euclidean Lloyd k-means in
#   torch (random initial centres, ``kmeans_iterations`` iterations) and normalises the centres as the example does.
# - mae: MaskedVisionTransformerTIMM re-initialises the wrapped timm ViT (MAE's Xavier init, fixed 2D sine-cosine
#   position embedding); ours starts alike (timm's ``weight_init="jax"``: Xavier linears; the same frozen sine-cosine
#   embedding), but draws the class token at std 1e-6 (theirs 0.02) and the patch projection from a LeCun normal
#   (theirs Xavier on the flattened kernel). MaskedVisionTransformerDecoderTIMM
#   (our depth 8, example 1) between LightlySSL's ``decoder_embed`` / ``prediction_head`` linears; random_token_mask;
#   MSE over the masked patches; per-patch normalised targets with ``normalize_mean_var`` when ``norm_pix_loss`` (the
#   example regresses raw pixels). Position embeddings and the decoder are rebuilt for the training image size in
#   ``fit_input_size`` (LightlySSL builds them at the model's construction size). ViTs with exactly one class token.
# - simmim: MaskedVisionTransformerTIMM (the example wraps a torchvision ViT) with a linear decoder and L1 loss on the
#   masked patches; masks are single patches from random_token_mask at our mask ratio 0.6 (example 0.75): LightlySSL
#   has no mask units, so ``mask_patch_size`` is not used. MAETransform (min scale 0.2) as in the example; ours uses
#   SimMIM's crop (min scale 0.67).
# - aim: the trunk is LightlySSL's MaskedCausalVisionTransformer with the timm ViT's size (patch, width, depth, heads,
#   MLP ratio, qkv bias) but, as LightlySSL's AIM requires, no class token, average pooling and a fixed sine-cosine
#   position embedding: a different ViT variant from the timm model ours trains and publishes. Prefix lengths come
#   from random_prefix_mask, uniform in [0, N - 2] (``min_prefix_length`` cannot be expressed); the loss is, as in
#   LightlySSL's example and benchmark, the MSE at *every* position (prefix included) against the patch at the same
#   position, not the next one (ours: next-patch prediction on the non-prefix positions). Head size is ours
#   (12 blocks of 2048; example 1 block). The trunk's plain ``forward`` (used by the evaluation) is overridden, as
#   timm 1.0.31's ``VisionTransformer.forward`` passes ``attn_mask=`` that LightlySSL's ``forward_features`` rejects.
# - msn / pmsn: the example wraps a torchvision ViT; here MaskedVisionTransformerTIMM, which re-initialises the timm ViT
#   (MAE's Xavier init, fixed 2D sine-cosine position embedding, interpolated for the focal views); ours keeps timm's
#   init and a learned one. MSNProjectionHead, prototypes an ``nn.Linear``, MSNLoss / PMSNLoss; MSNTransform (LightlySSL
#   has no PMSN transform) with our focal size. The target view goes through the EMA encoder and head; the other
#   random views and the focal views, each group as one batch, through the student with random_token_mask dropping
#   ``mask_ratio`` of the tokens - the focal views too, as the example (ours and the official code leave them whole).
#   Two fixes to the example: it passes ``prototypes.data`` to the loss, so the prototypes never train (here they do,
#   as ours), and it counts the sequence without the class token (``(width // patch_size) ** 2``), so the last patch
#   is never kept. The prototypes take weight decay (ours spares them; the example decays every parameter).
#   Momentum cosine 0.996 -> 1 (example: constant 0.996; ours linear), weight decay cosine 0.04 -> 0.4 with
#   ``cosine_schedule`` (example: AdamW's constant). Published backbone: the target encoder, as ours.
# - ijepa: LightlySSL's example is torchvision-only (IJEPABackbone indexes its class-token-prefixed sequence with the
#   collator's patch indices: off by one); here its timm blocks: MaskedVisionTransformerTIMM context and target
#   encoders (MAE init, fixed sine-cosine position embedding, as I-JEPA's), IJEPAPredictorTIMM with our width, depth,
#   heads and MLP ratio. The ViT's class token passes the context encoder but not the predictor (which has no prefix
#   tokens; ours feeds it). Masks from IJEPAMaskCollator, called in ``forward`` (the Trainer's collator is ours), with
#   our scales and aspect ratios, 1 context and ``num_targets`` target blocks. Unlike ours it draws block scale and
#   aspect ratio from one number, keeps blocks one patch short of the grid (at 32 px / 8: context block at most 3 x 3,
#   1-5 context patches once the targets are cut out and the batch trimmed) and lets the context overlap targets when
#   placing it fails. Its ``min_keep`` also binds target blocks, and it redraws forever when a block's size cannot
#   reach it: min_keep = min(``min_context_patches``, smallest target block - 1) (10 at 224 px / 16, 0 at 32 px / 8).
#   FlatIJEPAMaskCollator keeps one-patch blocks 1-D (the collator's ``squeeze`` makes them 0-d and ``len`` fails).
#   Targets: the teacher's layer-normalised patch tokens; nn.SmoothL1Loss (``loss_type="l2"``: nn.MSELoss). Momentum
#   linear 0.996 -> 1 (``linear_warmup_schedule`` over the run, as the example's generator; ours linear too), weight
#   decay cosine 0.04 -> 0.4 (example: AdamW's constant). IJEPATransform: crop scale 0.2-1 and horizontal flips (ours
#   0.3-1, no flip, as the official configs). Published backbone: the target encoder, as ours.
# - ibot: as LightlySSL's example and ViT-B/16 benchmark: MaskedVisionTransformerTIMM re-initialises the ViT's linears
#   (MAE init) but keeps timm's learned position embedding (``pos_embed_initialization="skip"``, ``antialias=False``);
#   the global crops pass as one batch, the local crops as another; one DINOProjectionHead for class and masked patch
#   tokens (a second one with ``separate_head``), teacher heads initialised anew (ours: copies). Masks from
#   random_block_mask, which is DINOv2's scheme (exactly ``mask_probability`` of the 2B global crops masked, ratios
#   from even strata of [0.1, 0.5]); ours draws iBOT's (each crop masked with probability 0.5, at a uniform ratio).
#   Its smallest block is capped at ``int(N * mask_ratio_min)`` patches (``random_block_mask_image`` raises for an
#   image that masks fewer; a 4 x 4 grid masks 1). DINOLoss and IBOTPatchLoss with our temperatures, warmed up by
#   ``linear_warmup_schedule`` over the steps of ``warmup_teacher_temp_epochs`` epochs (as ours); last layers frozen
#   with ``cancel_last_layer_gradients`` before the optimizer step (the example's head keeps ``freeze_last_layer=-1``,
#   so its call does nothing); momentum cosine 0.996 -> 1; weight decay cosine 0.04 -> 0.4. No drop path on the
#   student (the example adds 0.1; ours leaves it to ``backbone_kwargs``). IBOTTransform. Published backbone: the
#   teacher, as ours.
# - dinov2: LightlyIBOT with DINOv2ProjectionHead (its last layer's magnitude always trains, so ``norm_last_layer`` is
#   not used; it has no ``cancel_last_layer_gradients``: the frozen epochs drop those gradients by hand, as LightlySSL's
#   iBOT benchmark - the DINOv2 example's learning-rate zeroing looks for a ``last_layer`` key no parameter group
#   has), KoLeoLoss on the student's class tokens of each global crop, and DINOTransform with the example's crops
#   (32-100 %, 8 local crops of 5-32 %). LightlySSL's DINOLoss and IBOTPatchLoss only center by the mean
#   (``Center``): both losses center as ours with ``centering="centering"``, not with Sinkhorn-Knopp as our default.
#   Momentum cosine 0.992 -> 1; no layer-wise learning-rate decay (LightlySSL's benchmark has it, the example and ours
#   not).

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, cast

import torch
from lightly.data import IJEPAMaskCollator
from lightly.loss import (
    BarlowTwinsLoss,
    DCLLoss,
    DCLWLoss,
    DINOLoss,
    IBOTPatchLoss,
    KoLeoLoss,
    LeJEPALoss,
    MMCRLoss,
    MSNLoss,
    NegativeCosineSimilarity,
    NTXentLoss,
    PMSNLoss,
    SwaVLoss,
    TiCoLoss,
    VICRegLLoss,
    VICRegLoss,
)
from lightly.models import utils as lightly_utils
from lightly.models.modules import (
    AIMPredictionHead,
    BarlowTwinsProjectionHead,
    BYOLPredictionHead,
    BYOLProjectionHead,
    DenseCLProjectionHead,
    DINOProjectionHead,
    DINOv2ProjectionHead,
    IJEPAPredictorTIMM,
    LeJEPAProjectionHead,
    MaskedCausalVisionTransformer,
    MaskedVisionTransformerDecoderTIMM,
    MaskedVisionTransformerTIMM,
    MMCRProjectionHead,
    MoCoProjectionHead,
    NNCLRPredictionHead,
    NNCLRProjectionHead,
    NNMemoryBankModule,
    SimCLRProjectionHead,
    SimSiamPredictionHead,
    SimSiamProjectionHead,
    SMoGPredictionHead,
    SMoGProjectionHead,
    SMoGPrototypes,
    SwaVProjectionHead,
    SwaVPrototypes,
)
from lightly.models.modules.heads import (
    MSNProjectionHead,
    TiCoProjectionHead,
    VicRegLLocalProjectionHead,
    VICRegProjectionHead,
)
from lightly.models.modules.masked_vision_transformer_timm import init_weights
from lightly.models.modules.memory_bank import MemoryBankModule
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms import (
    BYOLTransform,
    BYOLView1Transform,
    BYOLView2Transform,
    DenseCLTransform,
    DINOTransform,
    IBOTTransform,
    MAETransform,
    MMCRTransform,
    MoCoV2Transform,
    MSNTransform,
    SimCLRTransform,
    SimSiamTransform,
    SMoGTransform,
    SwaVTransform,
    TiCoTransform,
    TiCoView1Transform,
    TiCoView2Transform,
    VICRegLTransform,
    VICRegTransform,
)
from lightly.transforms.aim_transform import AIMTransform
from lightly.transforms.ijepa_transform import IJEPATransform
from lightly.transforms.multi_view_transform import MultiViewTransform
from lightly.utils.debug import std_of_l2_normalized
from lightly.utils.scheduler import cosine_schedule, linear_warmup_schedule
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn
from torch.nn import functional as F
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ssl_hub.methods import (
    AIM,
    BYOL,
    DCL,
    DCLW,
    DINO,
    IBOT,
    IJEPA,
    MAE,
    MMCR,
    MSN,
    NNCLR,
    PMSN,
    AIMConfig,
    BarlowTwins,
    BarlowTwinsConfig,
    BYOLConfig,
    DCLConfig,
    DCLWConfig,
    DenseCL,
    DenseCLConfig,
    DINOConfig,
    DINOv2,
    DINOv2Config,
    IBOTConfig,
    IJEPAConfig,
    LeJEPA,
    LeJEPAConfig,
    MAEConfig,
    MethodConfig,
    MMCRConfig,
    MoCo,
    MoCoConfig,
    MSNConfig,
    NNCLRConfig,
    PMSNConfig,
    SimCLR,
    SimCLRConfig,
    SimMIM,
    SimMIMConfig,
    SimSiam,
    SimSiamConfig,
    SMoG,
    SMoGConfig,
    SSLMethod,
    SSLMethodOutput,
    SwaV,
    SwaVConfig,
    TiCo,
    TiCoConfig,
    VICReg,
    VICRegConfig,
    VICRegL,
    VICRegLConfig,
)
from ssl_hub.methods.msn import check_msn_views
from ssl_hub.modules.multi_crop import crop_size_multiple, dynamic_size_backbone
from ssl_hub.training.callbacks import (
    FixedLearningRateCallback,
    WeightDecayScheduleCallback,
    with_fixed_learning_rate,
)
from ssl_hub.transforms.multi_crop import local_crop_size

# Views -> list of view tensors (a LightlySSL transform).
ViewTransform = Callable[[Any], list[Tensor]]


# ---------------------------------------------------------------------------------------------------------------------
# Trainer callbacks: LightlySSL-style step-dependent updates, computed from the Trainer state.


class LightlyMomentumCallback(TrainerCallback):
    """At the start of each optimizer step, ``update_momentum(student, teacher, m)`` with
    ``m = schedule(global_step, max_steps, start, end)``, as LightlySSL's examples do at the top of each step.

    Args:
        pairs: ``(student, teacher)`` modules.
        start: Momentum of the first step.
        end: Momentum of the last step (equal to ``start`` for a constant momentum).
        schedule: ``cosine_schedule``, or ``linear_warmup_schedule`` for a linear rise over the whole run.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[nn.Module, nn.Module]],
        start: float,
        end: float,
        schedule: Callable[[int, int, float, float], float] = cosine_schedule,
    ) -> None:
        self.pairs = list(pairs)
        self.start = start
        self.end = end
        self.schedule = schedule

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        momentum = self.schedule(state.global_step, state.max_steps, self.start, self.end)
        for student, teacher in self.pairs:
            update_momentum(student, teacher, m=momentum)


class TrainingProgressCallback(TrainerCallback):
    """Tells a method the optimizer step and epoch it is in, for LightlySSL's ``step=`` / ``epoch=`` arguments (what
    PyTorch Lightning's ``global_step`` / ``current_epoch`` give LightlySSL's own code)."""

    def __init__(self, method: LightlyReference) -> None:
        self.method = method

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.method.current_step = state.global_step
        self.method.current_epoch = int(state.epoch or 0)


class CosineWeightDecayCallback(WeightDecayScheduleCallback):
    """Our weight-decay schedule callback (decayed parameter groups, set at the start of each optimizer step) with
    LightlySSL's ``cosine_schedule(global_step, max_steps, start, end)``, as LightlySSL's ViT-B/16 benchmarks set it.
    """

    def weight_decay(self, step: int, max_steps: int) -> float:
        return cosine_schedule(step, max_steps, self.weight_decay_start, self.weight_decay_end)


class DINOStepCallback(CosineWeightDecayCallback):
    """DINO's step-dependent parts as LightlySSL's ViT-B/16 benchmark has them: the cosine weight decay, and before
    each optimizer step the student head's last layer drops its gradients during the first ``freeze_last_layer``
    epochs (``DINOProjectionHead.cancel_last_layer_gradients``)."""

    def __init__(self, method: LightlyDINO) -> None:
        super().__init__(method.config.weight_decay_start, method.config.weight_decay_end)
        self.method = method

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.method.projection_head.cancel_last_layer_gradients(current_epoch=int(state.epoch or 0))


class IBOTStepCallback(CosineWeightDecayCallback):
    """iBOT's / DINOv2's step-dependent parts as LightlySSL's iBOT / DINOv2 benchmarks have them: the cosine weight
    decay; the teacher temperatures rise with ``linear_warmup_schedule`` over the steps of the first
    ``warmup_teacher_temp_epochs`` epochs; before each optimizer step the student heads' last layers drop their
    gradients during the first ``freeze_last_layer`` epochs."""

    def __init__(self, method: LightlyIBOT) -> None:
        super().__init__(method.config.weight_decay_start, method.config.weight_decay_end)
        self.method = method

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        super().on_step_begin(args, state, control, **kwargs)
        cfg, step = self.method.config, state.global_step
        warmup_steps = int(cfg.warmup_teacher_temp_epochs / state.num_train_epochs * state.max_steps)
        self.method.teacher_temp = linear_warmup_schedule(step, warmup_steps, cfg.warmup_teacher_temp, cfg.teacher_temp)
        self.method.teacher_patch_temp = linear_warmup_schedule(
            step, warmup_steps, cfg.warmup_teacher_patch_temp, cfg.teacher_patch_temp
        )

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.method.cancel_last_layer_gradients(int(state.epoch or 0))


class SMoGStepCallback(TrainerCallback):
    """At the start of each optimizer step, as LightlySSL's SMoG example: every ``group_reset_interval`` steps reset
    the group features and the momentum encoder, otherwise update the momentum encoder."""

    def __init__(self, method: LightlySMoG) -> None:
        self.method = method

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        cfg = self.method.config
        step = state.global_step
        if cfg.group_reset_interval and step > 0 and step % cfg.group_reset_interval == 0:
            self.method.reset_group_features()
            self.method.reset_momentum_weights()
            return
        momentum = cosine_schedule(step, state.max_steps, cfg.momentum_start, cfg.momentum_end)
        update_momentum(self.method.backbone, self.method.backbone_momentum, m=momentum)
        update_momentum(self.method.projection_head, self.method.projection_head_momentum, m=momentum)


# ---------------------------------------------------------------------------------------------------------------------
# Shared plumbing.


class LightlyReference(SSLMethod):
    """An ssl_hub method rebuilt from LightlySSL's blocks; trained by ``ssl_hub.pretrain`` like ours.

    Subclasses set ``ours`` (the ssl_hub method they reproduce); the config class, paper and training recipe are
    ours. ``current_step`` / ``current_epoch`` are kept up to date by :class:`TrainingProgressCallback`.
    """

    ours: ClassVar[type[SSLMethod]]

    def __init__(self, backbone: str | nn.Module, config: Any = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        self.current_step = 0
        self.current_epoch = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.learning_rate_scaling = cls.ours.learning_rate_scaling  # the recipe's rate follows the batch as ours

    @classmethod
    def default_training_arguments(cls, config: MethodConfig | None = None) -> dict[str, Any]:
        return cls.ours.default_training_arguments(config)

    def backbone_training_arguments(self) -> dict[str, Any]:
        return self.ours.backbone_training_arguments(cast(Any, self))  # ours reads only config and backbone

    def make_transform(self, input_size: int = 224, **kwargs: Any) -> Any:
        """LightlySSL's transform for the method: image -> list of view tensors."""
        return self.transform_class(input_size=input_size, **kwargs)

    def callbacks(self) -> list[TrainerCallback]:
        return [TrainingProgressCallback(self)]

    def encode(self, images: Tensor) -> Tensor:
        """Backbone features ``(B, D)``, flattened as LightlySSL's examples do."""
        return self.backbone(images).flatten(start_dim=1)


def momentum_copy(module: nn.Module) -> nn.Module:
    """The momentum (teacher) copy of ``module``, as LightlySSL's examples make it."""
    teacher = copy.deepcopy(module)
    deactivate_requires_grad(teacher)
    return teacher


def check_multi_crop(views: Sequence[Tensor], owner: str) -> None:
    """At least two views, the first two (the global crops) of one shape."""
    if isinstance(views, Tensor) or len(views) < 2 or views[0].shape != views[1].shape:
        raise ValueError(f"{owner} takes 2 global crops of one size followed by local crops: use make_transform().")


def timm_vit(backbone: nn.Module, owner: str, class_token: bool = True) -> VisionTransformer:
    """``backbone`` as a timm VisionTransformer, with exactly one class token when ``class_token``."""
    if not isinstance(backbone, VisionTransformer):
        raise ValueError(f"{owner} needs a timm VisionTransformer backbone (e.g. vit_tiny_patch16_224).")
    if class_token and backbone.num_prefix_tokens != 1:
        raise ValueError(
            f"{owner}: LightlySSL's masking helpers assume one class token; this ViT has "
            f"{backbone.num_prefix_tokens} prefix tokens."
        )
    return backbone


def patch_grid(vit: VisionTransformer, images: Tensor) -> tuple[int, int]:
    """The patch grid ``(h, w)`` of ``images`` ``(B, C, H, W)`` in ``vit``."""
    patch_height, patch_width = vit.patch_embed.patch_size
    return images.shape[-2] // patch_height, images.shape[-1] // patch_width


def fixed_sincos_pos_embed(vit: VisionTransformer) -> None:
    """Reset ``vit``'s position embedding to LightlySSL's fixed 2D sine-cosine one for its current patch grid."""
    lightly_utils.initialize_positional_embedding(
        pos_embedding=vit.pos_embed, strategy="sincos", num_prefix_tokens=vit.num_prefix_tokens
    )


# ---------------------------------------------------------------------------------------------------------------------
# Two-view methods without a teacher.


class LightlySimCLR(LightlyReference):
    name = "lightly-simclr"
    display_name = "SimCLR (LightlySSL)"
    ours = SimCLR
    config_class = SimCLRConfig
    transform_class = SimCLRTransform
    paper = SimCLR.paper
    config: SimCLRConfig

    def __init__(self, backbone: str | nn.Module, config: SimCLRConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.projection_head = SimCLRProjectionHead(
            self.feature_dim,
            cfg.projection_hidden_dim or self.feature_dim,
            cfg.projection_output_dim,
            num_layers=cfg.projection_num_layers,
        )
        bank_size = getattr(cfg, "memory_bank_size", 0)  # SimCLR only
        bank = (bank_size, cfg.projection_output_dim) if bank_size else 0
        self.criterion = self.build_criterion(bank)

    def build_criterion(self, memory_bank_size: int | tuple[int, int]) -> nn.Module:
        return NTXentLoss(
            temperature=self.config.temperature,
            memory_bank_size=memory_bank_size,
            gather_distributed=self.config.gather_distributed,
        )

    def forward(self, views: Sequence[Tensor]) -> SSLMethodOutput:
        self.check_views(views, count=2)
        z0, z1 = (self.projection_head(self.encode(v)) for v in views)  # (B, D) each
        return SSLMethodOutput(loss=self.criterion(z0, z1))


class LightlyDCL(LightlySimCLR):
    name = "lightly-dcl"
    display_name = "DCL (LightlySSL)"
    ours = DCL
    config_class = DCLConfig
    paper = DCL.paper
    config: DCLConfig

    def build_criterion(self, memory_bank_size: int | tuple[int, int]) -> nn.Module:
        return DCLLoss(temperature=self.config.temperature, gather_distributed=self.config.gather_distributed)


class LightlyDCLW(LightlySimCLR):
    name = "lightly-dclw"
    display_name = "DCLW (LightlySSL)"
    ours = DCLW
    config_class = DCLWConfig
    paper = DCLW.paper
    config: DCLWConfig

    def build_criterion(self, memory_bank_size: int | tuple[int, int]) -> nn.Module:
        cfg = self.config
        return DCLWLoss(temperature=cfg.temperature, sigma=cfg.sigma, gather_distributed=cfg.gather_distributed)


class LightlySimSiam(LightlyReference):
    name = "lightly-simsiam"
    display_name = "SimSiam (LightlySSL)"
    ours = SimSiam
    config_class = SimSiamConfig
    transform_class = SimSiamTransform
    paper = SimSiam.paper
    config: SimSiamConfig

    def __init__(self, backbone: str | nn.Module, config: SimSiamConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.projection_head = SimSiamProjectionHead(
            self.feature_dim, cfg.projection_hidden_dim, cfg.projection_output_dim
        )
        self.prediction_head = SimSiamPredictionHead(
            cfg.projection_output_dim, cfg.prediction_hidden_dim, cfg.projection_output_dim
        )
        self.criterion = NegativeCosineSimilarity()

    def forward(self, views: Sequence[Tensor]) -> SSLMethodOutput:
        self.check_views(views, count=2)
        z0, z1 = (self.projection_head(self.encode(v)) for v in views)  # (B, D) each
        p0, p1 = self.prediction_head(z0), self.prediction_head(z1)
        loss = 0.5 * (self.criterion(z0.detach(), p1) + self.criterion(z1.detach(), p0))
        return SSLMethodOutput(loss=loss, metrics={"l2_normalized_std": std_of_l2_normalized(z0.detach())})

    def parameter_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        groups = super().parameter_groups(weight_decay)  # the recipe's fixed predictor rate, as ours
        if not self.config.fixed_prediction_learning_rate:
            return groups
        return with_fixed_learning_rate(groups, self.prediction_head.parameters())

    def callbacks(self) -> list[TrainerCallback]:
        fixed = [FixedLearningRateCallback()] if self.config.fixed_prediction_learning_rate else []
        return [*super().callbacks(), *fixed]


class LightlyBarlowTwins(LightlyReference):
    name = "lightly-barlowtwins"
    display_name = "Barlow Twins (LightlySSL)"
    ours = BarlowTwins
    config_class = BarlowTwinsConfig
    transform_class = BYOLTransform
    paper = BarlowTwins.paper
    config: BarlowTwinsConfig

    def __init__(self, backbone: str | nn.Module, config: BarlowTwinsConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.projection_head = BarlowTwinsProjectionHead(
            self.feature_dim, cfg.projection_hidden_dim, cfg.projection_output_dim
        )
        self.criterion = BarlowTwinsLoss(lambda_param=cfg.lambda_param, gather_distributed=cfg.gather_distributed)

    def make_transform(self, input_size: int = 224, **kwargs: Any) -> ViewTransform:
        """BYOL's asymmetric views, as LightlySSL's Barlow Twins example."""
        return byol_views(input_size, **kwargs)

    def forward(self, views: Sequence[Tensor]) -> SSLMethodOutput:
        self.check_views(views, count=2)
        z0, z1 = (self.projection_head(self.encode(v)) for v in views)  # (B, D) each
        return SSLMethodOutput(loss=self.criterion(z0, z1))


class LightlyVICReg(LightlyReference):
    name = "lightly-vicreg"
    display_name = "VICReg (LightlySSL)"
    ours = VICReg
    config_class = VICRegConfig
    transform_class = VICRegTransform
    paper = VICReg.paper
    config: VICRegConfig

    def __init__(self, backbone: str | nn.Module, config: VICRegConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.projection_head = VICRegProjectionHead(
            input_dim=self.feature_dim,
            hidden_dim=cfg.projection_hidden_dim,
            output_dim=cfg.projection_output_dim,
            num_layers=cfg.projection_num_layers,
        )
        self.criterion = VICRegLoss(
            lambda_param=cfg.lambda_param,
            mu_param=cfg.mu_param,
            nu_param=cfg.nu_param,
            gather_distributed=cfg.gather_distributed,
            eps=cfg.eps,
        )

    def forward(self, views: Sequence[Tensor]) -> SSLMethodOutput:
        self.check_views(views, count=2)
        z0, z1 = (self.projection_head(self.encode(v)) for v in views)  # (B, D) each
        return SSLMethodOutput(loss=self.criterion(z0, z1))


class LightlyNNCLR(LightlyReference):
    name = "lightly-nnclr"
    display_name = "NNCLR (LightlySSL)"
    ours = NNCLR
    config_class = NNCLRConfig
    transform_class = SimCLRTransform
    paper = NNCLR.paper
    config: NNCLRConfig

    def __init__(self, backbone: str | nn.Module, config: NNCLRConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.projection_head = NNCLRProjectionHead(
            self.feature_dim, cfg.projection_hidden_dim, cfg.projection_output_dim
        )
        self.prediction_head = NNCLRPredictionHead(
            cfg.projection_output_dim, cfg.prediction_hidden_dim, cfg.projection_output_dim
        )
        self.memory_bank = NNMemoryBankModule(size=(cfg.memory_bank_size, cfg.projection_output_dim))
        self.criterion = NTXentLoss(temperature=cfg.temperature, gather_distributed=cfg.gather_distributed)

    def forward(self, views: Sequence[Tensor]) -> SSLMethodOutput:
        self.check_views(views, count=2)
        z0, z1 = (self.projection_head(self.encode(v)) for v in views)  # (B, D) each
        p0, p1 = self.prediction_head(z0), self.prediction_head(z1)
        nn0 = self.memory_bank(z0.detach(), update=False)  # (B, D) nearest neighbours
        nn1 = self.memory_bank(z1.detach(), update=self.training)
        loss = 0.5 * (self.criterion(nn0, p1) + self.criterion(nn1, p0))
        return SSLMethodOutput(loss=loss)


# ---------------------------------------------------------------------------------------------------------------------
# Two-view methods with a momentum encoder.


def byol_views(input_size: int, **kwargs: Any) -> ViewTransform:
    """LightlySSL's BYOLTransform (which takes no size itself) with both views at ``input_size``."""
    return BYOLTransform(
        view_1_transform=BYOLView1Transform(input_size=input_size, **kwargs),
        view_2_transform=BYOLView2Transform(input_size=input_size, **kwargs),
    )


class LightlyBYOL(LightlyReference):
    name = "lightly-byol"
    display_name = "BYOL (LightlySSL)"
    ours = BYOL
    config_class = BYOLConfig
    transform_class = BYOLTransform
    paper = BYOL.paper
    config: BYOLConfig

    def __init__(self, backbone: str | nn.Module, config: BYOLConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.projection_head = BYOLProjectionHead(
            self.feature_dim, cfg.projection_hidden_dim, cfg.projection_output_dim
        )
        self.prediction_head = BYOLPredictionHead(
            cfg.projection_output_dim, cfg.prediction_hidden_dim, cfg.projection_output_dim
        )
        self.backbone_momentum = momentum_copy(self.backbone)
        self.projection_head_momentum = momentum_copy(self.projection_head)
        self.criterion = NegativeCosineSimilarity()

    def make_transform(self, input_size: int = 224, **kwargs: Any) -> ViewTransform:
        return byol_views(input_size, **kwargs)

    def forward(self, views: Sequence[Tensor]) -> SSLMethodOutput:
        self.check_views(views, count=2)
        z0, z1 = (self.projection_head(self.encode(v)) for v in views)  # online projections, (B, D) each
        p0, p1 = self.prediction_head(z0), self.prediction_head(z1)
        with torch.no_grad():
            t0, t1 = (self.projection_head_momentum(self.backbone_momentum(v).flatten(start_dim=1)) for v in views)
        loss = 0.5 * (self.criterion(p0, t1) + self.criterion(p1, t0))
        return SSLMethodOutput(loss=loss, metrics={"l2_normalized_std": std_of_l2_normalized(z0.detach())})

    def callbacks(self) -> list[TrainerCallback]:
        pairs = [(self.backbone, self.backbone_momentum), (self.projection_head, self.projection_head_momentum)]
        return [
            *super().callbacks(),
            LightlyMomentumCallback(pairs, self.config.momentum_start, self.config.momentum_end),
        ]


class LightlyMoCo(LightlyReference):
    """MoCo v2 only: LightlySSL has no MoCo v3 recipe (predictor + in-batch InfoNCE)."""

    name = "lightly-moco"
    display_name = "MoCo v2 (LightlySSL)"
    ours = MoCo
    config_class = MoCoConfig
    transform_class = MoCoV2Transform
    paper = MoCo.paper
    config: MoCoConfig

    def __init__(self, backbone: str | nn.Module, config: MoCoConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        if cfg.version != 2:
            raise ValueError(
                "LightlyMoCo: LightlySSL has a MoCo v2 recipe only (examples/pytorch/moco.py); use version=2."
            )
        output_dim = int(cfg.projection_output_dim or 0)
        self.projection_head = MoCoProjectionHead(
            self.feature_dim,
            cfg.projection_hidden_dim or self.feature_dim,
            output_dim,
            num_layers=int(cfg.projection_num_layers or 2),
            batch_norm=bool(cfg.projection_batch_norm),
        )
        self.backbone_momentum = momentum_copy(self.backbone)
        self.projection_head_momentum = momentum_copy(self.projection_head)
        self.criterion = NTXentLoss(
            temperature=cfg.temperature,
            memory_bank_size=(int(cfg.memory_bank_size or 0), output_dim),
            gather_distributed=cfg.gather_distributed,
        )

    def forward(self, views: Sequence[Tensor]) -> SSLMethodOutput:
        self.check_views(views, count=2)
        query = self.projection_head(self.encode(views[0]))  # (B, D)
        with torch.no_grad():
            key = self.projection_head_momentum(self.backbone_momentum(views[1]).flatten(start_dim=1))  # (B, D)
        return SSLMethodOutput(loss=self.criterion(query, key))

    def callbacks(self) -> list[TrainerCallback]:
        cfg = self.config
        pairs = [(self.backbone, self.backbone_momentum), (self.projection_head, self.projection_head_momentum)]
        start = float(cfg.momentum_start or 0.0)
        return [*super().callbacks(), LightlyMomentumCallback(pairs, start, float(cfg.momentum_end or start))]


class LightlyTiCo(LightlyReference):
    name = "lightly-tico"
    display_name = "TiCo (LightlySSL)"
    ours = TiCo
    config_class = TiCoConfig
    transform_class = TiCoTransform
    paper = TiCo.paper
    config: TiCoConfig

    def __init__(self, backbone: str | nn.Module, config: TiCoConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.projection_head = TiCoProjectionHead(
            self.feature_dim, cfg.projection_hidden_dim, cfg.projection_output_dim
        )
        self.backbone_momentum = momentum_copy(self.backbone)
        self.projection_head_momentum = momentum_copy(self.projection_head)
        self.criterion = TiCoLoss(beta=cfg.beta, rho=cfg.rho, gather_distributed=cfg.gather_distributed)

    def make_transform(self, input_size: int = 224, **kwargs: Any) -> ViewTransform:
        return TiCoTransform(
            view_1_transform=TiCoView1Transform(input_size=input_size, **kwargs),
            view_2_transform=TiCoView2Transform(input_size=input_size, **kwargs),
        )

    def forward(self, views: Sequence[Tensor]) -> SSLMethodOutput:
        self.check_views(views, count=2)
        z0 = self.projection_head(self.encode(views[0]))  # (B, D)
        with torch.no_grad():
            z1 = self.projection_head_momentum(self.backbone_momentum(views[1]).flatten(start_dim=1))  # (B, D)
        return SSLMethodOutput(loss=self.criterion(z0, z1))

    def callbacks(self) -> list[TrainerCallback]:
        pairs = [(self.backbone, self.backbone_momentum), (self.projection_head, self.projection_head_momentum)]
        return [
            *super().callbacks(),
            LightlyMomentumCallback(pairs, self.config.momentum_start, self.config.momentum_end),
        ]


class LightlyMMCR(LightlyReference):
    name = "lightly-mmcr"
    display_name = "MMCR (LightlySSL)"
    ours = MMCR
    config_class = MMCRConfig
    transform_class = MMCRTransform
    paper = MMCR.paper
    config: MMCRConfig

    def __init__(self, backbone: str | nn.Module, config: MMCRConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        if not cfg.momentum_encoder:
            raise ValueError("LightlySSL's MMCR example has a momentum encoder: momentum_encoder=False is ours only.")
        self.projection_head = MMCRProjectionHead(
            self.feature_dim, cfg.projection_hidden_dim, cfg.projection_output_dim
        )
        self.backbone_momentum = momentum_copy(self.backbone)
        self.projection_head_momentum = momentum_copy(self.projection_head)
        self.criterion = MMCRLoss(lmda=cfg.lmda)

    def make_transform(self, input_size: int = 224, **kwargs: Any) -> ViewTransform:
        return MMCRTransform(k=self.config.n_views, input_size=input_size, **kwargs)

    def forward(self, views: Sequence[Tensor]) -> SSLMethodOutput:
        self.check_views(views, count=self.config.n_views)
        online = torch.stack([self.projection_head(self.encode(v)) for v in views], dim=1)  # (B, k, D)
        with torch.no_grad():
            momentum = [self.projection_head_momentum(self.backbone_momentum(v).flatten(start_dim=1)) for v in views]
        return SSLMethodOutput(loss=self.criterion(online, torch.stack(momentum, dim=1)))  # (B, k, D) each

    def callbacks(self) -> list[TrainerCallback]:
        pairs = [(self.backbone, self.backbone_momentum), (self.projection_head, self.projection_head_momentum)]
        return [
            *super().callbacks(),
            LightlyMomentumCallback(pairs, self.config.momentum_start, self.config.momentum_end),
        ]


class LightlyLeJEPA(LightlyReference):
    """LeJEPA as LightlySSL's example: DINOTransform with its crop scales and blur, LeJEPAProjectionHead, the global
    crops in one pass and the local crops in another, LeJEPALoss on the ``(V, B, D)`` stacks."""

    name = "lightly-lejepa"
    display_name = "LeJEPA (LightlySSL)"
    ours = LeJEPA
    config_class = LeJEPAConfig
    paper = LeJEPA.paper
    config: LeJEPAConfig

    def __init__(self, backbone: str | nn.Module, config: LeJEPAConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.backbone = dynamic_size_backbone(self.backbone)
        self.projection_head = LeJEPAProjectionHead(
            self.feature_dim, cfg.projection_hidden_dim, cfg.projection_output_dim, cfg.projection_num_layers
        )
        self.criterion = LeJEPALoss(
            lambda_param=cfg.lambda_param,
            sigreg_knots=cfg.sigreg_knots,
            sigreg_t_max=cfg.sigreg_t_max,
            sigreg_num_vectors=cfg.sigreg_num_vectors,
        )

    def make_transform(self, input_size: int = 224, **kwargs: Any) -> ViewTransform:
        """The example's DINOTransform: global crops of 30-100 %, 6 local crops of 5-30 %, blur 0.5 on every crop."""
        kwargs = {
            "global_crop_scale": (0.3, 1.0),
            "local_crop_scale": (0.05, 0.3),
            "gaussian_blur": (0.5, 0.5, 0.5),
            "n_local_views": 6,
            "local_crop_size": local_crop_size(input_size, crop_size_multiple(self.backbone)),
            **kwargs,
        }
        return DINOTransform(global_crop_size=input_size, **kwargs)

    def forward(self, views: Sequence[Tensor]) -> SSLMethodOutput:
        check_multi_crop(views, type(self).__name__)
        batch = views[0].shape[0]
        global_proj = self.projection_head(self.encode(torch.cat(list(views[:2]))))  # (2B, D)
        local_proj = self.projection_head(self.encode(torch.cat(list(views[2:]))))  # (V_l B, D)
        loss = self.criterion(
            global_proj=global_proj.unflatten(0, (2, batch)), local_proj=local_proj.unflatten(0, (-1, batch))
        )
        return SSLMethodOutput(loss=loss)


class LightlyDenseCL(LightlyReference):
    """DenseCL as LightlySSL's example, on a CNN's ``(B, C, H, W)`` feature map (timm's ``forward_features``)."""

    name = "lightly-densecl"
    display_name = "DenseCL (LightlySSL)"
    ours = DenseCL
    config_class = DenseCLConfig
    transform_class = DenseCLTransform
    paper = DenseCL.paper
    config: DenseCLConfig

    def __init__(self, backbone: str | nn.Module, config: DenseCLConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        dense_dim = int(getattr(self.backbone, "num_features", self.feature_dim))  # channels of forward_features
        self.projection_head = DenseCLProjectionHead(
            self.feature_dim, cfg.projection_hidden_dim or self.feature_dim, cfg.projection_output_dim
        )
        self.dense_projection_head = DenseCLProjectionHead(
            dense_dim, cfg.projection_hidden_dim or dense_dim, cfg.projection_output_dim
        )
        self.backbone_momentum = momentum_copy(self.backbone)
        self.projection_head_momentum = momentum_copy(self.projection_head)
        self.dense_projection_head_momentum = momentum_copy(self.dense_projection_head)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.criterion = NTXentLoss(
            temperature=cfg.temperature,
            memory_bank_size=(cfg.memory_bank_size, cfg.projection_output_dim),
            gather_distributed=cfg.gather_distributed,
        )
        self.dense_criterion = NTXentLoss(
            temperature=cfg.temperature,
            memory_bank_size=(cfg.dense_memory_bank_size, cfg.projection_output_dim),
            gather_distributed=cfg.gather_distributed,
        )

    def dense_encode(
        self, images: Tensor, backbone: nn.Module, head: nn.Module, dense_head: nn.Module
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Backbone features ``(B, H*W, C)``, global embeddings ``(B, D)``, dense embeddings ``(B, H*W, D)``."""
        features = backbone.forward_features(images)  # (B, C, H, W)
        if features.ndim != 4:
            raise ValueError(
                f"LightlyDenseCL needs a CNN backbone with a (B, C, H, W) feature map (LightlySSL's example pools a "
                f"ResNet's map); {type(backbone).__name__}.forward_features returns shape {tuple(features.shape)}."
            )
        global_embedding = head(self.pool(features).flatten(start_dim=1))
        features = features.flatten(start_dim=2).permute(0, 2, 1)
        return features, global_embedding, dense_head(features)

    def forward(self, views: Sequence[Tensor]) -> SSLMethodOutput:
        self.check_views(views, count=2)
        query_features, query_global, query_local = self.dense_encode(
            views[0], self.backbone, self.projection_head, self.dense_projection_head
        )
        with torch.no_grad():
            key_features, key_global, key_local = self.dense_encode(
                views[1], self.backbone_momentum, self.projection_head_momentum, self.dense_projection_head_momentum
            )
        key_local = lightly_utils.select_most_similar(query_features, key_features, key_local)  # (B, H*W, D)
        loss_global = self.criterion(query_global, key_global)
        loss_local = self.dense_criterion(query_local.flatten(end_dim=1), key_local.flatten(end_dim=1))
        loss = (1 - self.config.loss_lambda) * loss_global + self.config.loss_lambda * loss_local
        return SSLMethodOutput(loss=loss)

    def callbacks(self) -> list[TrainerCallback]:
        pairs = [
            (self.backbone, self.backbone_momentum),
            (self.projection_head, self.projection_head_momentum),
            (self.dense_projection_head, self.dense_projection_head_momentum),
        ]
        momentum = self.config.momentum
        return [*super().callbacks(), LightlyMomentumCallback(pairs, momentum, momentum)]


class LightlyVICRegL(LightlyReference):
    """VICRegL as LightlySSL's example, on a CNN's ``(B, C, H, W)`` feature map (timm's ``forward_features``)."""

    name = "lightly-vicregl"
    display_name = "VICRegL (LightlySSL)"
    ours = VICRegL
    config_class = VICRegLConfig
    transform_class = VICRegLTransform
    paper = VICRegL.paper
    config: VICRegLConfig

    def __init__(self, backbone: str | nn.Module, config: VICRegLConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        dense_dim = int(getattr(self.backbone, "num_features", self.feature_dim))  # channels of forward_features
        self.projection_head = BarlowTwinsProjectionHead(
            self.feature_dim, cfg.projection_hidden_dim, cfg.projection_output_dim
        )
        self.local_projection_head = VicRegLLocalProjectionHead(
            dense_dim, cfg.local_projection_hidden_dim, cfg.local_projection_output_dim
        )
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.criterion = VICRegLLoss(
            lambda_param=cfg.lambda_param,
            mu_param=cfg.mu_param,
            nu_param=cfg.nu_param,
            alpha=cfg.alpha,
            gather_distributed=cfg.gather_distributed,
            eps=cfg.eps,
            num_matches=(cfg.global_view_matches, cfg.other_view_matches),
        )

    def make_transform(self, input_size: int = 224, **kwargs: Any) -> ViewTransform:
        """The example's ``VICRegLTransform(n_local_views=0)``, its grids as fine as the backbone's map."""
        stride = crop_size_multiple(self.backbone)
        kwargs.setdefault("global_crop_size", input_size)
        kwargs.setdefault("global_grid_size", math.ceil(kwargs["global_crop_size"] / stride))
        kwargs.setdefault("n_local_views", 0)
        return VICRegLTransform(**kwargs)

    def forward(self, views: Sequence[Tensor]) -> SSLMethodOutput:
        images, grids = views[: len(views) // 2], views[len(views) // 2 :]  # the transform's views, then grids
        check_multi_crop(images, type(self).__name__)
        features = []
        for image in images:
            maps = self.backbone.forward_features(image)  # (B, C, H, W)
            embedding = self.projection_head(self.pool(maps).flatten(start_dim=1))  # (B, D)
            features.append((embedding, self.local_projection_head(maps.permute(0, 2, 3, 1))))  # (B, H, W, D')
        loss = self.criterion(
            global_view_features=features[:2],
            global_view_grids=grids[:2],
            local_view_features=features[2:] or None,
            local_view_grids=grids[2:] or None,
        )
        return SSLMethodOutput(loss=loss.squeeze(0))


# ---------------------------------------------------------------------------------------------------------------------
# Multi-crop methods.


class LightlyDINO(LightlyReference):
    name = "lightly-dino"
    display_name = "DINO (LightlySSL)"
    ours = DINO
    config_class = DINOConfig
    transform_class = DINOTransform
    paper = DINO.paper
    published_backbone = "teacher_backbone"
    config: DINOConfig

    def __init__(self, backbone: str | nn.Module, config: DINOConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.backbone = dynamic_size_backbone(self.backbone)
        head_args = (self.feature_dim, cfg.projection_hidden_dim, cfg.bottleneck_dim, cfg.output_dim)
        self.projection_head = DINOProjectionHead(
            *head_args,
            batch_norm=cfg.projection_batch_norm,
            freeze_last_layer=cfg.freeze_last_layer,
            norm_last_layer=cfg.norm_last_layer,
        )
        self.teacher_backbone = momentum_copy(self.backbone)
        # LightlySSL builds the teacher head anew rather than copying the student's.
        self.teacher_head = DINOProjectionHead(
            *head_args, batch_norm=cfg.projection_batch_norm, norm_last_layer=cfg.norm_last_layer
        )
        deactivate_requires_grad(self.teacher_head)
        self.criterion = DINOLoss(
            output_dim=cfg.output_dim,
            warmup_teacher_temp=cfg.warmup_teacher_temp,
            teacher_temp=cfg.teacher_temp,
            warmup_teacher_temp_epochs=cfg.warmup_teacher_temp_epochs,
            student_temp=cfg.student_temp,
            center_momentum=cfg.center_momentum,
        )

    def make_transform(self, input_size: int = 224, **kwargs: Any) -> ViewTransform:
        kwargs.setdefault("local_crop_size", local_crop_size(input_size, crop_size_multiple(self.backbone)))
        return DINOTransform(global_crop_size=input_size, **kwargs)

    def forward(self, views: Sequence[Tensor]) -> SSLMethodOutput:
        check_multi_crop(views, type(self).__name__)
        with torch.no_grad():
            teacher_out = [self.teacher_head(self.teacher_backbone(v).flatten(start_dim=1)) for v in views[:2]]
        student_out = [self.projection_head(self.encode(v)) for v in views]  # (B, K) each
        loss = self.criterion(teacher_out, student_out, epoch=self.current_epoch)
        return SSLMethodOutput(loss=loss)

    def callbacks(self) -> list[TrainerCallback]:
        cfg = self.config
        pairs = [(self.backbone, self.teacher_backbone), (self.projection_head, self.teacher_head)]
        return [
            *super().callbacks(),
            LightlyMomentumCallback(pairs, cfg.momentum_start, cfg.momentum_end),
            DINOStepCallback(self),
        ]


class LightlySwaV(LightlyReference):
    name = "lightly-swav"
    display_name = "SwaV (LightlySSL)"
    ours = SwaV
    config_class = SwaVConfig
    transform_class = SwaVTransform
    paper = SwaV.paper
    config: SwaVConfig

    def __init__(self, backbone: str | nn.Module, config: SwaVConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.backbone = dynamic_size_backbone(self.backbone)
        self.projection_head = SwaVProjectionHead(
            self.feature_dim, cfg.projection_hidden_dim, cfg.projection_output_dim
        )
        self.prototypes = SwaVPrototypes(
            cfg.projection_output_dim,
            n_prototypes=cfg.n_prototypes,
            n_steps_frozen_prototypes=cfg.n_steps_frozen_prototypes,
        )
        self.criterion = SwaVLoss(
            temperature=cfg.temperature,
            sinkhorn_iterations=cfg.sinkhorn_iterations,
            sinkhorn_epsilon=cfg.sinkhorn_epsilon,
            sinkhorn_gather_distributed=cfg.sinkhorn_gather_distributed,
        )
        self.queues = (
            nn.ModuleList(MemoryBankModule(size=(cfg.queue_length, cfg.projection_output_dim)) for _ in range(2))
            if cfg.queue_length
            else None
        )

    def make_transform(self, input_size: int = 224, **kwargs: Any) -> ViewTransform:
        kwargs.setdefault("crop_sizes", (input_size, local_crop_size(input_size, crop_size_multiple(self.backbone))))
        return SwaVTransform(**kwargs)

    def forward(self, views: Sequence[Tensor]) -> SSLMethodOutput:
        check_multi_crop(views, type(self).__name__)
        self.prototypes.normalize()
        features = [F.normalize(self.projection_head(self.encode(v)), dim=1, p=2) for v in views]  # (B, D) each
        scores = [self.prototypes(f, self.current_step) for f in features]  # (B, K) each
        queue_scores = self.queue_scores(features[:2]) if self.queues is not None and self.training else None
        loss = self.criterion(scores[:2], scores[2:], queue_scores)  # shape (1,): SwaVLoss starts from new_zeros(1)
        return SSLMethodOutput(loss=loss.squeeze(0))

    @torch.no_grad()
    def queue_scores(self, high_resolution_features: Sequence[Tensor]) -> list[Tensor] | None:
        """As ``examples/pytorch/swav_queue.py``: enqueue the global crops, score the queues from the start epoch."""
        if self.queues is None:
            return None
        queued = []
        for queue, features in zip(self.queues, high_resolution_features, strict=True):
            _, bank = queue(features, update=True)  # (D, L)
            queued.append(bank.permute(1, 0))
        if self.current_epoch < self.config.queue_start_epoch:
            return None
        return [self.prototypes(features, self.current_step) for features in queued]


class LightlySMoG(LightlyReference):
    """SMoG as LightlySSL's (two-crop) example."""

    name = "lightly-smog"
    display_name = "SMoG (LightlySSL)"
    ours = SMoG
    config_class = SMoGConfig
    transform_class = SMoGTransform
    paper = SMoG.paper
    config: SMoGConfig

    def __init__(self, backbone: str | nn.Module, config: SMoGConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.projection_head = SMoGProjectionHead(
            self.feature_dim, cfg.projection_hidden_dim, cfg.projection_output_dim
        )
        self.prediction_head = SMoGPredictionHead(
            cfg.projection_output_dim, cfg.prediction_hidden_dim, cfg.projection_output_dim
        )
        self.backbone_momentum = momentum_copy(self.backbone)
        self.projection_head_momentum = momentum_copy(self.projection_head)
        self.smog = SMoGPrototypes(group_features=torch.rand(cfg.n_groups, cfg.projection_output_dim), beta=cfg.beta)
        self.memory_bank = (
            MemoryBankModule(size=(cfg.memory_bank_size, cfg.projection_output_dim))
            if cfg.group_reset_interval
            else None
        )
        self.criterion = nn.CrossEntropyLoss()

    def make_transform(self, input_size: int = 224, **kwargs: Any) -> ViewTransform:
        """The example's two crops, one per category, both at ``input_size`` and scale 0.2-1."""
        kwargs = {
            "crop_sizes": (input_size, input_size),
            "crop_counts": (1, 1),
            "crop_min_scales": (0.2, 0.2),
            "crop_max_scales": (1.0, 1.0),
            **kwargs,
        }
        return SMoGTransform(**kwargs)

    def forward(self, views: Sequence[Tensor]) -> SSLMethodOutput:
        self.check_views(views, count=2)
        x0, x1 = views
        if self.current_step % 2:  # the example swaps the views every second iteration
            x0, x1 = x1, x0
        x0_encoded = self.projection_head(self.encode(x0))  # (B, D)
        x0_predicted = self.prediction_head(x0_encoded)
        with torch.no_grad():
            x1_encoded = self.projection_head_momentum(self.backbone_momentum(x1).flatten(start_dim=1))
        assignments = self.smog.assign_groups(x1_encoded)  # (B,)
        group_features = self.smog.get_updated_group_features(x0_encoded)  # (G, D)
        logits = self.smog(x0_predicted, group_features, temperature=self.config.temperature)  # (B, G)
        if self.training:
            self.smog.set_group_features(group_features)
        loss = self.criterion(logits, assignments)
        if self.memory_bank is not None and self.training:
            self.memory_bank(x0_encoded, update=True)
        return SSLMethodOutput(loss=loss)

    @torch.no_grad()
    def reset_group_features(self) -> None:
        """Group features := normalised k-means centres of the memory bank (the example's ``reset_group_features``)."""
        if self.memory_bank is None:
            return
        features = self.memory_bank.bank.float()  # (L, D)
        centers = lloyd_kmeans(features, self.config.n_groups, self.config.kmeans_iterations)
        self.smog.set_group_features(F.normalize(centers, dim=1))

    @torch.no_grad()
    def reset_momentum_weights(self) -> None:
        """Momentum encoder := online encoder (the example deep-copies; same weights and buffers)."""
        self.backbone_momentum.load_state_dict(self.backbone.state_dict())
        self.projection_head_momentum.load_state_dict(self.projection_head.state_dict())

    def callbacks(self) -> list[TrainerCallback]:
        return [*super().callbacks(), SMoGStepCallback(self)]


@torch.no_grad()
def lloyd_kmeans(features: Tensor, n_clusters: int, iterations: int, chunk: int = 4096) -> Tensor:
    """Euclidean k-means centres ``(n_clusters, D)`` of ``features`` ``(N, D)``: random rows, then Lloyd iterations
    (stand-in for the example's ``sklearn.cluster.KMeans``; an empty cluster keeps its centre)."""
    start = torch.randperm(features.shape[0], device=features.device)[:n_clusters]
    centers = features[start].clone()
    for _ in range(iterations):
        assignments = torch.cat([torch.cdist(part, centers).argmin(dim=1) for part in features.split(chunk)])
        sums = torch.zeros_like(centers).index_add_(0, assignments, features)
        counts = torch.bincount(assignments, minlength=n_clusters).unsqueeze(1)
        centers = torch.where(counts > 0, sums / counts.clamp(min=1), centers)
    return centers


# ---------------------------------------------------------------------------------------------------------------------
# Masked-image methods (timm ViTs).


class LightlyMAE(LightlyReference):
    name = "lightly-mae"
    display_name = "MAE (LightlySSL)"
    ours = MAE
    config_class = MAEConfig
    transform_class = MAETransform
    paper = MAE.paper
    requires_vit = True
    config: MAEConfig

    def __init__(self, backbone: str | nn.Module, config: MAEConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        vit = timm_vit(self.backbone, type(self).__name__)
        self.patch_size = vit.patch_embed.patch_size[0]
        self.encoder = MaskedVisionTransformerTIMM(vit=vit)  # re-initialises vit (MAE init, fixed sin-cos)
        self.decoder_embed = nn.Linear(vit.embed_dim, cfg.decoder_dim)
        self.decoder = self.build_decoder()
        self.prediction_head = nn.Linear(cfg.decoder_dim, self.patch_size**2 * vit.patch_embed.proj.in_channels)
        # decoder_embed and prediction_head sit outside the decoder: initialised as LightlySSL's example does.
        self.decoder_embed.apply(init_weights)
        self.prediction_head.apply(init_weights)
        self.criterion = nn.MSELoss()

    def build_decoder(self) -> MaskedVisionTransformerDecoderTIMM:
        cfg, vit = self.config, self.encoder.vit
        return MaskedVisionTransformerDecoderTIMM(
            num_patches=vit.patch_embed.num_patches,
            embed_dim=cfg.decoder_dim,
            depth=cfg.decoder_depth,
            num_heads=cfg.decoder_num_heads,
            num_prefix_tokens=vit.num_prefix_tokens,
            mlp_ratio=cfg.decoder_mlp_ratio,
            proj_drop_rate=0.0,
            attn_drop_rate=0.0,
        )

    def fit_input_size(self, image_size: int) -> None:
        """Resize the ViT (timm), then give encoder and decoder LightlySSL's fixed sine-cosine position embeddings of
        the new patch grid, as LightlySSL would have built them at this size."""
        super().fit_input_size(image_size)
        fixed_sincos_pos_embed(self.encoder.vit)
        if self.decoder.num_patches != self.encoder.vit.patch_embed.num_patches:
            self.decoder = self.build_decoder().to(self.decoder_embed.weight.device)

    def forward(self, views: Sequence[Tensor]) -> SSLMethodOutput:
        self.check_views(views, count=1)
        images = views[0]  # (B, C, H, W)
        batch_size, sequence_length = images.shape[0], self.encoder.sequence_length
        idx_keep, idx_mask = lightly_utils.random_token_mask(
            size=(batch_size, sequence_length), mask_ratio=self.config.mask_ratio, device=images.device
        )
        x_encoded = self.encoder.encode(images=images, idx_keep=idx_keep)  # (B, K, D_enc)
        x_decode = self.decoder_embed(x_encoded)
        x_masked = x_decode.new_zeros(batch_size, sequence_length, x_decode.shape[-1])
        x_masked = lightly_utils.set_at_index(x_masked, idx_keep, x_decode.type_as(x_masked))
        x_decoded = self.decoder(x_masked, idx_mask=idx_mask)  # (B, L, D_dec)
        predictions = self.prediction_head(lightly_utils.get_at_index(x_decoded, idx_mask))  # (B, M, p*p*C)
        patches = lightly_utils.patchify(images, self.patch_size)  # (B, N, p*p*C)
        if self.config.norm_pix_loss:
            patches = lightly_utils.normalize_mean_var(patches, dim=-1)
        target = lightly_utils.get_at_index(patches, idx_mask - 1)  # idx_mask counts the class token
        return SSLMethodOutput(loss=self.criterion(predictions, target))


class LightlySimMIM(LightlyReference):
    name = "lightly-simmim"
    display_name = "SimMIM (LightlySSL)"
    ours = SimMIM
    config_class = SimMIMConfig
    transform_class = MAETransform  # LightlySSL's SimMIM example uses MAE's transform
    paper = SimMIM.paper
    requires_vit = True
    config: SimMIMConfig

    def __init__(self, backbone: str | nn.Module, config: SimMIMConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        vit = timm_vit(self.backbone, type(self).__name__)
        self.patch_size = vit.patch_embed.patch_size[0]
        self.encoder = MaskedVisionTransformerTIMM(vit=vit)
        self.decoder = nn.Linear(vit.embed_dim, self.patch_size**2 * vit.patch_embed.proj.in_channels)
        self.criterion = nn.L1Loss()

    def fit_input_size(self, image_size: int) -> None:
        super().fit_input_size(image_size)
        fixed_sincos_pos_embed(self.encoder.vit)

    def forward(self, views: Sequence[Tensor]) -> SSLMethodOutput:
        self.check_views(views, count=1)
        images = views[0]  # (B, C, H, W)
        _, idx_mask = lightly_utils.random_token_mask(
            size=(images.shape[0], self.encoder.sequence_length),
            mask_ratio=self.config.mask_ratio,
            device=images.device,
        )
        x_encoded = self.encoder.encode(images=images, idx_mask=idx_mask)  # (B, L, D), masked tokens replaced
        predictions = self.decoder(lightly_utils.get_at_index(x_encoded, idx_mask))  # (B, M, p*p*C)
        patches = lightly_utils.patchify(images, self.patch_size)
        target = lightly_utils.get_at_index(patches, idx_mask - 1)  # idx_mask counts the class token
        return SSLMethodOutput(loss=self.criterion(predictions, target))


class CausalVisionTransformer(MaskedCausalVisionTransformer):
    """LightlySSL's MaskedCausalVisionTransformer with a plain ``forward`` (features, pooled): timm's
    ``VisionTransformer.forward`` (timm 1.0.31 here) calls ``forward_features(x, attn_mask=..., is_causal=...)``, which
    LightlySSL's override (``forward_features(x, mask, is_causal)``) does not accept."""

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.forward_head(self.forward_features(x, mask=mask))


class LightlyAIM(LightlyReference):
    name = "lightly-aim"
    display_name = "AIM (LightlySSL)"
    ours = AIM
    config_class = AIMConfig
    transform_class = AIMTransform
    paper = AIM.paper
    requires_vit = True
    config: AIMConfig

    def __init__(self, backbone: str | nn.Module, config: AIMConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        source = timm_vit(self.backbone, type(self).__name__, class_token=False)
        block = source.blocks[0]
        vit = CausalVisionTransformer(
            img_size=source.patch_embed.img_size,
            patch_size=source.patch_embed.patch_size,
            in_chans=source.patch_embed.proj.in_channels,
            num_classes=0,
            embed_dim=source.embed_dim,
            depth=len(source.blocks),
            num_heads=block.attn.num_heads,
            mlp_ratio=block.mlp.fc1.out_features / source.embed_dim,
            qkv_bias=block.attn.qkv.bias is not None,
            qk_norm=False,
            class_token=False,
            no_embed_class=True,
            global_pool="avg",
        )
        vit.pretrained_cfg = dict(source.pretrained_cfg)  # input size record: lets fit_input_size resize it
        lightly_utils.initialize_2d_sine_cosine_positional_embedding(
            pos_embedding=vit.pos_embed, has_class_token=vit.has_class_token
        )
        self.backbone = vit
        self.patch_size = vit.patch_embed.patch_size[0]
        self.projection_head = AIMPredictionHead(
            input_dim=vit.embed_dim,
            output_dim=self.patch_size**2 * vit.patch_embed.proj.in_channels,
            hidden_dim=cfg.head_hidden_dim,
            num_blocks=cfg.head_num_blocks,
            mlp_ratio=cfg.head_mlp_ratio,
        )
        self.criterion = nn.MSELoss()

    def fit_input_size(self, image_size: int) -> None:
        super().fit_input_size(image_size)
        fixed_sincos_pos_embed(self.backbone)

    def forward(self, views: Sequence[Tensor]) -> SSLMethodOutput:
        self.check_views(views, count=1)
        images = views[0]  # (B, C, H, W)
        num_patches = self.backbone.patch_embed.num_patches
        max_prefix = num_patches - 1 if self.config.max_prefix_length is None else self.config.max_prefix_length
        mask = lightly_utils.random_prefix_mask(
            size=(images.shape[0], num_patches), max_prefix_length=max_prefix, device=images.device
        )  # (B, N), True after the prefix
        features = self.backbone.forward_features(images, mask=mask)  # (B, N, D)
        features = self.backbone._pos_embed(features)  # position embedding before the head, as LightlySSL's AIM
        predictions = self.projection_head(features)  # (B, N, p*p*C)
        patches = lightly_utils.patchify(images, self.patch_size)
        if self.config.norm_pix_loss:
            patches = lightly_utils.normalize_mean_var(patches, dim=-1)
        return SSLMethodOutput(loss=self.criterion(predictions, patches))


# ---------------------------------------------------------------------------------------------------------------------
# Masked ViTs with an EMA teacher.


class LightlyMSN(LightlyReference):
    """MSN as LightlySSL's example, on a timm ViT: the target view through the EMA encoder, the anchor views (the
    other random views and the focal views) with random tokens dropped through the student."""

    name = "lightly-msn"
    display_name = "MSN (LightlySSL)"
    ours = MSN
    config_class = MSNConfig
    transform_class = MSNTransform
    paper = MSN.paper
    requires_vit = True
    published_backbone = "teacher_backbone"
    config: MSNConfig

    def __init__(self, backbone: str | nn.Module, config: MSNConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.backbone = timm_vit(dynamic_size_backbone(self.backbone), type(self).__name__)
        self.encoder = MaskedVisionTransformerTIMM(vit=self.backbone)  # re-initialises it (MAE init, fixed sin-cos)
        self.projection_head = MSNProjectionHead(self.feature_dim, cfg.projection_hidden_dim, cfg.projection_output_dim)
        self.prototypes = nn.Linear(cfg.projection_output_dim, cfg.num_prototypes, bias=False)
        self.teacher_encoder = momentum_copy(self.encoder)
        self.teacher_backbone = self.teacher_encoder.vit
        self.teacher_head = momentum_copy(self.projection_head)
        self.criterion = self.build_criterion()

    def build_criterion(self) -> MSNLoss:
        cfg = self.config
        return MSNLoss(
            temperature=cfg.temperature,
            sinkhorn_iterations=cfg.sinkhorn_iterations,
            regularization_weight=cfg.regularization_weight,
            gather_distributed=cfg.gather_distributed,
        )

    def make_transform(self, input_size: int = 224, **kwargs: Any) -> ViewTransform:
        kwargs.setdefault("focal_size", local_crop_size(input_size, crop_size_multiple(self.backbone)))
        return MSNTransform(random_size=input_size, **kwargs)

    def forward(self, views: Sequence[Tensor]) -> SSLMethodOutput:
        check_msn_views(views, type(self).__name__)
        target_view, anchor_views = views[0], views[1:]
        with torch.no_grad():
            targets = self.teacher_head(self.teacher_encoder(target_view))  # (B, D)
        random_views = [v for v in anchor_views if v.shape == target_view.shape]
        focal_views = [v for v in anchor_views if v.shape != target_view.shape]
        groups = [torch.cat(group) for group in (random_views, focal_views) if group]
        anchors = torch.cat([self.forward_masked(images) for images in groups])  # (V * B, D), view by view
        loss = self.criterion(
            anchors,
            targets,
            self.prototypes.weight,  # the example passes ``.data``: no gradient would reach the prototypes
            target_sharpen_temperature=self.config.target_sharpen_temperature,
        )
        return SSLMethodOutput(loss=loss)

    def forward_masked(self, images: Tensor) -> Tensor:
        """Projections ``(N, D)`` of ``images`` with ``mask_ratio`` of their patches dropped (random_token_mask over
        the whole token sequence, which always keeps the class token)."""
        rows, cols = patch_grid(self.encoder.vit, images)
        idx_keep, _ = lightly_utils.random_token_mask(
            size=(len(images), self.encoder.vit.num_prefix_tokens + rows * cols),
            mask_ratio=self.config.mask_ratio,
            device=images.device,
        )
        return self.projection_head(self.encoder(images, idx_keep=idx_keep))

    def callbacks(self) -> list[TrainerCallback]:
        cfg = self.config
        pairs = [(self.encoder, self.teacher_encoder), (self.projection_head, self.teacher_head)]
        return [
            *super().callbacks(),
            LightlyMomentumCallback(pairs, cfg.momentum_start, cfg.momentum_end),
            CosineWeightDecayCallback(cfg.weight_decay_start, cfg.weight_decay_end),
        ]


class LightlyPMSN(LightlyMSN):
    """PMSN as LightlySSL's example: LightlyMSN with PMSNLoss."""

    name = "lightly-pmsn"
    display_name = "PMSN (LightlySSL)"
    ours = PMSN
    config_class = PMSNConfig
    paper = PMSN.paper
    config: PMSNConfig

    def build_criterion(self) -> PMSNLoss:
        cfg = self.config
        return PMSNLoss(
            temperature=cfg.temperature,
            sinkhorn_iterations=cfg.sinkhorn_iterations,
            regularization_weight=cfg.regularization_weight,
            power_law_exponent=cfg.power_law_exponent,
            gather_distributed=cfg.gather_distributed,
        )


def smallest_ijepa_block(
    grid_size: Sequence[int], scale: tuple[float, float], aspect_ratio: tuple[float, float]
) -> int:
    """The fewest patches of a block IJEPAMaskCollator can draw on ``grid_size`` (its ``_sample_block_size``: scale
    and aspect ratio from one uniform number, the block at most one patch short of the grid in each direction)."""
    height, width = grid_size
    sizes = []
    for draw in torch.linspace(0, 1, 1001).tolist():
        keep = int(height * width * (scale[0] + draw * (scale[1] - scale[0])))
        ratio = aspect_ratio[0] + draw * (aspect_ratio[1] - aspect_ratio[0])
        sizes.append(min(round(math.sqrt(keep * ratio)), height - 1) * min(round(math.sqrt(keep / ratio)), width - 1))
    return min(sizes)


class FlatIJEPAMaskCollator(IJEPAMaskCollator):
    """IJEPAMaskCollator whose one-patch blocks stay 1-D: its ``_sample_block_mask`` squeezes the ``(K, 1)`` patch
    indices, which for ``K = 1`` gives a 0-d tensor that its ``__call__`` cannot take the ``len`` of."""

    def _sample_block_mask(
        self, b_size: tuple[int, int], acceptable_regions: list[Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        mask, complement = super()._sample_block_mask(b_size, acceptable_regions)
        return mask.reshape(-1), complement


class LightlyIJEPA(LightlyReference):
    """I-JEPA from LightlySSL's timm blocks (its example wraps a torchvision ViT): masks from IJEPAMaskCollator,
    context and target encoders MaskedVisionTransformerTIMM, predictor IJEPAPredictorTIMM."""

    name = "lightly-ijepa"
    display_name = "I-JEPA (LightlySSL)"
    ours = IJEPA
    config_class = IJEPAConfig
    transform_class = IJEPATransform
    paper = IJEPA.paper
    requires_vit = True
    published_backbone = "teacher_backbone"
    config: IJEPAConfig

    def __init__(self, backbone: str | nn.Module, config: IJEPAConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        vit = timm_vit(self.backbone, type(self).__name__)
        self.encoder = MaskedVisionTransformerTIMM(vit=vit)  # re-initialises vit (MAE init, fixed sin-cos)
        self.teacher_encoder = momentum_copy(self.encoder)
        self.teacher_backbone = self.teacher_encoder.vit
        self.predictor = self.build_predictor()
        self.mask_collator = self.build_mask_collator()
        self.criterion = nn.SmoothL1Loss() if self.config.loss_type == "smooth_l1" else nn.MSELoss()

    def build_predictor(self) -> IJEPAPredictorTIMM:
        cfg, vit = self.config, self.encoder.vit
        return IJEPAPredictorTIMM(
            num_patches=vit.patch_embed.num_patches,
            depth=cfg.predictor_depth,
            mlp_dim=vit.embed_dim,
            predictor_embed_dim=cfg.predictor_dim,
            num_heads=cfg.predictor_num_heads or vit.blocks[0].attn.num_heads,
            mlp_ratio=cfg.predictor_mlp_ratio,
        )

    def build_mask_collator(self) -> FlatIJEPAMaskCollator:
        """The collator at the ViT's input size, with our block sizes and as many context patches at least as every
        target block it can draw allows (it redraws a block, targets included, until it has more than ``min_keep``
        patches, and never ends when its size cannot)."""
        cfg, patch_embed = self.config, self.encoder.vit.patch_embed
        target_scale = (cfg.target_scale_min, cfg.target_scale_max)
        aspect_ratio = (cfg.target_aspect_ratio_min, cfg.target_aspect_ratio_max)
        smallest_target = smallest_ijepa_block(patch_embed.grid_size, target_scale, aspect_ratio)
        return FlatIJEPAMaskCollator(
            input_size=tuple(patch_embed.img_size),
            patch_size=patch_embed.patch_size[0],
            enc_mask_scale=(cfg.context_scale_min, cfg.context_scale_max),
            pred_mask_scale=target_scale,
            aspect_ratio=aspect_ratio,
            nenc=1,
            npred=cfg.num_targets,
            min_keep=min(cfg.min_context_patches, smallest_target - 1),
        )

    def fit_input_size(self, image_size: int) -> None:
        """Resize the ViTs (timm), then give them LightlySSL's fixed sine-cosine position embeddings of the new patch
        grid and rebuild the predictor and the mask collator for it, as LightlySSL would have built them there."""
        super().fit_input_size(image_size)
        for encoder in (self.encoder, self.teacher_encoder):
            fixed_sincos_pos_embed(encoder.vit)
        if self.predictor.decoder.num_patches != self.encoder.vit.patch_embed.num_patches:
            self.predictor = self.build_predictor().to(self.encoder.mask_token.device)
        self.mask_collator = self.build_mask_collator()

    def make_transform(self, input_size: int = 224, **kwargs: Any) -> ViewTransform:
        """LightlySSL's IJEPATransform (one tensor per image) as a one-view MultiViewTransform."""
        return MultiViewTransform([IJEPATransform(input_size=input_size, **kwargs)])

    def forward(self, views: Sequence[Tensor]) -> SSLMethodOutput:
        self.check_views(views, count=1)
        images = views[0]  # (B, C, H, W)
        batch_size = len(images)
        _, masks_enc, masks_pred = self.mask_collator(list(range(batch_size)))  # patch indices, (B, K) / T x (B, M)
        (context,) = (mask.to(images.device) for mask in masks_enc)
        targets = [mask.to(images.device) for mask in masks_pred]
        with torch.no_grad():
            h = self.teacher_encoder.encode(images)[:, 1:]  # (B, N, D): the patch tokens
            h = F.layer_norm(h, (h.shape[-1],))
            h = lightly_utils.apply_masks(h, targets)  # (T * B, M, D)
        keep = torch.cat([context.new_zeros(batch_size, 1), context + 1], dim=1)  # class token, context patches
        z = self.encoder.encode(images, idx_keep=keep)[:, 1:]  # (B, K, D): the context patch tokens
        z = self.predictor(z, [context], targets)  # (T * B, M, D)
        return SSLMethodOutput(loss=self.criterion(z, h))

    def callbacks(self) -> list[TrainerCallback]:
        cfg = self.config
        momentum = LightlyMomentumCallback(
            [(self.encoder, self.teacher_encoder)], cfg.momentum_start, cfg.momentum_end, linear_warmup_schedule
        )
        weight_decay = CosineWeightDecayCallback(cfg.weight_decay_start, cfg.weight_decay_end)
        return [*super().callbacks(), momentum, weight_decay]


class LightlyIBOT(LightlyReference):
    """iBOT as LightlySSL's example and ViT-B/16 benchmark: the student sees the two global crops with
    random_block_mask patches replaced by its mask token and the local crops unmasked, the EMA teacher the unmasked
    global crops; DINOLoss on the class tokens, IBOTPatchLoss on the masked patches."""

    name = "lightly-ibot"
    display_name = "iBOT (LightlySSL)"
    ours = IBOT
    config_class = IBOTConfig
    transform_class = IBOTTransform
    paper = IBOT.paper
    requires_vit = True
    published_backbone = "teacher_backbone"
    config: IBOTConfig

    def __init__(self, backbone: str | nn.Module, config: IBOTConfig | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        cfg = self.config
        self.backbone = timm_vit(dynamic_size_backbone(self.backbone), type(self).__name__)
        # Re-initialises the ViT's linears (MAE init) and keeps timm's learned position embedding, as LightlySSL.
        self.encoder = MaskedVisionTransformerTIMM(vit=self.backbone, antialias=False, pos_embed_initialization="skip")
        self.projection_head = self.build_head(cfg.output_dim, student=True)
        self.patch_head = self.build_head(cfg.patch_output_dim, student=True) if cfg.separate_head else None
        self.teacher_encoder = momentum_copy(self.encoder)
        self.teacher_backbone = self.teacher_encoder.vit
        # LightlySSL builds the teacher heads anew rather than copying the students'.
        self.teacher_head = self.build_head(cfg.output_dim, student=False)
        self.teacher_patch_head = self.build_head(cfg.patch_output_dim, student=False) if cfg.separate_head else None
        for head in (self.teacher_head, self.teacher_patch_head):
            if head is not None:
                deactivate_requires_grad(head)
        self.criterion = DINOLoss(
            output_dim=cfg.output_dim, student_temp=cfg.student_temp, center_momentum=cfg.center_momentum
        )
        self.patch_criterion = IBOTPatchLoss(
            output_dim=cfg.patch_output_dim if cfg.separate_head else cfg.output_dim,
            student_temp=cfg.student_temp,
            center_momentum=cfg.center_momentum,
        )
        # Set at each step by IBOTStepCallback.
        self.teacher_temp = cfg.warmup_teacher_temp
        self.teacher_patch_temp = cfg.warmup_teacher_patch_temp

    def build_head(self, output_dim: int, student: bool) -> nn.Module:
        """A DINO head; only the student's carries ``freeze_last_layer``."""
        cfg = self.config
        return DINOProjectionHead(
            self.feature_dim,
            cfg.projection_hidden_dim,
            cfg.bottleneck_dim,
            output_dim,
            batch_norm=cfg.projection_batch_norm,
            freeze_last_layer=cfg.freeze_last_layer if student else -1,
            norm_last_layer=cfg.norm_last_layer,
        )

    def student_heads(self) -> list[nn.Module]:
        return [self.projection_head] if self.patch_head is None else [self.projection_head, self.patch_head]

    def cancel_last_layer_gradients(self, epoch: int) -> None:
        """Drop the gradients of the student heads' last layers during the first ``freeze_last_layer`` epochs."""
        for head in self.student_heads():
            head.cancel_last_layer_gradients(current_epoch=epoch)

    def make_transform(self, input_size: int = 224, **kwargs: Any) -> ViewTransform:
        kwargs.setdefault("local_crop_size", local_crop_size(input_size, crop_size_multiple(self.backbone)))
        return self.transform_class(global_crop_size=input_size, **kwargs)

    def block_mask(self, images: Tensor) -> Tensor:
        """``random_block_mask`` of the global crops ``images``, ``(2B, h, w)`` boolean, with our ratios."""
        cfg = self.config
        height, width = patch_grid(self.encoder.vit, images)
        min_block = cfg.mask_min_block_patches or (min(height, width) // 3) ** 2  # the latter: LightlySSL's iBOT
        return lightly_utils.random_block_mask(
            size=(len(images), height, width),
            batch_mask_ratio=cfg.mask_probability,
            min_image_mask_ratio=cfg.mask_ratio_min,
            max_image_mask_ratio=cfg.mask_ratio_max,
            # random_block_mask_image raises for an image that masks fewer patches than this
            min_num_masks_per_block=min(min_block, int(height * width * cfg.mask_ratio_min)),
            min_block_aspect_ratio=cfg.mask_min_aspect_ratio,
            device=images.device,
        )

    def distillation_loss(self, views: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """The weighted class-token and masked-patch losses, and the student's class tokens ``(2B, D)`` of the
        masked global crops."""
        check_multi_crop(views, type(self).__name__)
        cfg = self.config
        global_views = torch.cat(list(views[:2]))  # (2B, C, H, W)
        block_mask = self.block_mask(global_views)  # (2B, h, w)
        mask = torch.cat([block_mask.new_zeros(len(global_views), 1), block_mask.flatten(start_dim=1)], dim=1)
        student_patch_head, teacher_patch_head = (
            (self.patch_head, self.teacher_patch_head)
            if self.patch_head is not None and self.teacher_patch_head is not None
            else (self.projection_head, self.teacher_head)
        )
        with torch.no_grad():
            teacher_tokens = self.teacher_encoder.encode(global_views)  # (2B, 1 + N, D)
            teacher_cls_out = self.teacher_head(teacher_tokens[:, 0])  # (2B, K)
            teacher_patch_out = teacher_patch_head(teacher_tokens[mask])  # (M, K_p)
        student_tokens = self.encoder.encode(global_views, mask=mask)  # (2B, 1 + N, D), masked patches replaced
        student_cls = student_tokens[:, 0]  # (2B, D)
        student_patch_out = student_patch_head(student_tokens[mask])  # (M, K_p)
        student_cls_out = [self.projection_head(student_cls)]
        if len(views) > 2:
            student_cls_out.append(self.projection_head(self.encoder.encode(torch.cat(list(views[2:])))[:, 0]))
        cls_loss = self.criterion(
            list(teacher_cls_out.chunk(2)),
            list(torch.cat(student_cls_out).chunk(len(views))),
            teacher_temp=self.teacher_temp,
        )
        patch_loss = self.patch_criterion(
            teacher_patch_out, student_patch_out, mask=block_mask, teacher_temp=self.teacher_patch_temp
        )
        return cfg.cls_loss_weight * cls_loss + cfg.patch_loss_weight * patch_loss, student_cls

    def forward(self, views: Sequence[Tensor]) -> SSLMethodOutput:
        loss, _ = self.distillation_loss(views)
        return SSLMethodOutput(loss=loss)

    def callbacks(self) -> list[TrainerCallback]:
        cfg = self.config
        pairs = [(self.encoder, self.teacher_encoder), (self.projection_head, self.teacher_head)]
        if self.patch_head is not None and self.teacher_patch_head is not None:
            pairs.append((self.patch_head, self.teacher_patch_head))
        return [
            *super().callbacks(),
            LightlyMomentumCallback(pairs, cfg.momentum_start, cfg.momentum_end),
            IBOTStepCallback(self),
        ]


class LightlyDINOv2(LightlyIBOT):
    """DINOv2 as LightlySSL's example and ViT-B/16 benchmark: LightlyIBOT with DINOv2ProjectionHead, DINOv2's crops
    and KoLeoLoss on the student's class tokens of each global crop."""

    name = "lightly-dinov2"
    display_name = "DINOv2 (LightlySSL)"
    ours = DINOv2
    config_class = DINOv2Config
    transform_class = DINOTransform
    paper = DINOv2.paper
    config: DINOv2Config

    def __init__(self, backbone: str | nn.Module, config: DINOv2Config | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, config, **kwargs)
        self.koleo = KoLeoLoss()

    def build_head(self, output_dim: int, student: bool) -> nn.Module:
        """A DINOv2 head (last layer's magnitude always trained, no freezing of its own)."""
        cfg = self.config
        return DINOv2ProjectionHead(
            self.feature_dim,
            cfg.projection_hidden_dim,
            cfg.bottleneck_dim,
            output_dim,
            batch_norm=cfg.projection_batch_norm,
        )

    def cancel_last_layer_gradients(self, epoch: int) -> None:
        """DINOv2ProjectionHead has no ``cancel_last_layer_gradients``: drop the gradients by hand, as LightlySSL's
        iBOT benchmark does (its DINOv2 benchmark zeroes the learning rate of those parameters instead)."""
        if epoch >= self.config.freeze_last_layer:
            return
        for head in self.student_heads():
            for parameter in head.last_layer.parameters():
                parameter.grad = None

    def make_transform(self, input_size: int = 224, **kwargs: Any) -> ViewTransform:
        """The example's DINOTransform: global crops of 32-100 %, 8 local crops of 5-32 %."""
        kwargs = {"global_crop_scale": (0.32, 1.0), "local_crop_scale": (0.05, 0.32), "n_local_views": 8, **kwargs}
        return super().make_transform(input_size, **kwargs)

    def forward(self, views: Sequence[Tensor]) -> SSLMethodOutput:
        loss, student_cls = self.distillation_loss(views)
        koleo = sum(self.koleo(tokens) for tokens in student_cls.chunk(2))
        return SSLMethodOutput(loss=loss + self.config.koleo_loss_weight * koleo)


# ---------------------------------------------------------------------------------------------------------------------

REFERENCES: tuple[type[LightlyReference], ...] = (
    LightlyAIM,
    LightlyBarlowTwins,
    LightlyBYOL,
    LightlyDCL,
    LightlyDCLW,
    LightlyDenseCL,
    LightlyDINO,
    LightlyDINOv2,
    LightlyIBOT,
    LightlyIJEPA,
    LightlyLeJEPA,
    LightlyMAE,
    LightlyMMCR,
    LightlyMoCo,
    LightlyMSN,
    LightlyNNCLR,
    LightlyPMSN,
    LightlySimCLR,
    LightlySimMIM,
    LightlySimSiam,
    LightlySMoG,
    LightlySwaV,
    LightlyTiCo,
    LightlyVICReg,
    LightlyVICRegL,
)

# ssl_hub registry name -> factory(timm backbone name) -> the LightlySSL reference of that method.
LIGHTLY_METHODS: dict[str, Callable[[str], SSLMethod]] = {cls.ours.name: cls for cls in REFERENCES}

# Registered ssl_hub methods LightlySSL cannot reproduce (none at present; MoCo is covered in its v2 form only).
NOT_COVERED: dict[str, str] = {}
