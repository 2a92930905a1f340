"""The base every SSL method builds on: an nn.Module that owns a timm backbone and returns a loss from forward."""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import torch
from timm.models import parse_model_name
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from transformers.utils import ModelOutput

from ssl_hub.losses.utils import sum_of_terms
from ssl_hub.modules.backbone import create_backbone, feature_dim, fit_input_size
from ssl_hub.modules.masked_vit import fix_sincos_position_embedding
from ssl_hub.modules.multi_crop import multi_crop_forward
from ssl_hub.transforms.multi_view import MultiViewTransform

if TYPE_CHECKING:
    from transformers import TrainerCallback

logger = logging.getLogger(__name__)

ConfigT = TypeVar("ConfigT", bound="MethodConfig")
MethodT = TypeVar("MethodT", bound="SSLMethod")

# The global batch every recipe's learning rate (default_training_arguments) is given for, and the default batch.
RECIPE_BATCH_SIZE = 64
LearningRateScaling = Literal["linear", "sqrt"] | None


def sgd_training_arguments(learning_rate_per_256_images: float) -> dict[str, Any]:
    """The SGD recipe of MoCo v2, DenseCL and SimSiam (``default_training_arguments`` values): momentum 0.9, weight
    decay 1e-4, cosine decay without warm-up, no clipping, the papers' rate per 256 images stated for a batch of
    ``RECIPE_BATCH_SIZE`` (to be scaled linearly)."""
    return {
        "optim": "sgd",
        "optim_args": "momentum=0.9",
        "learning_rate": learning_rate_per_256_images * RECIPE_BATCH_SIZE / 256,
        "weight_decay": 1e-4,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0,
        "max_grad_norm": 0.0,
    }


def lars_training_arguments(learning_rate_per_256_images: float) -> dict[str, Any]:
    """The LARS recipe of NNCLR and of MoCo v3 on ResNets (``default_training_arguments`` /
    ``backbone_training_arguments`` values): timm's ``larc``, LARS with LARC's trust-ratio clipping, at trust
    coefficient 0.02, as solo-learn's CIFAR recipes set it, the rate per 256 images stated for a batch of
    ``RECIPE_BATCH_SIZE`` (to be scaled linearly). timm's LARS adapts the parameters with weight decay only, so biases
    and normalisation parameters are neither decayed nor adapted."""
    return {
        "learning_rate": learning_rate_per_256_images * RECIPE_BATCH_SIZE / 256,
        "timm_optimizer": "larc",
        "timm_optimizer_kwargs": {"trust_coeff": 0.02},
    }


@dataclass(frozen=True)
class Paper:
    """The publication a method implements, cited in its model card."""

    title: str
    authors: str
    year: int
    url: str
    bibtex: str


def _docstring_args(docstring: str) -> dict[str, str]:
    """The entries of a Google-style docstring's ``Args:`` section, ``{name: description on one line}``."""
    entries: dict[str, list[str]] = {}
    lines = inspect.cleandoc(docstring).splitlines()
    if "Args:" not in lines:
        return {}
    words: list[str] = []  # the description being read
    for line in lines[lines.index("Args:") + 1 :]:
        if line.startswith(" " * 8) and entries:  # a description's continuation line
            words.append(line.strip())
        elif line.startswith(" " * 4) and ":" in line:
            name, _, text = line.strip().partition(":")
            words = entries[name.strip()] = [text.strip()]
        else:  # the section ends at a blank or dedented line
            break
    return {name: " ".join(words) for name, words in entries.items()}


def _plain_text(text: str) -> str:
    """The text without reStructuredText markup: inline literals keep their text, roles their target (only its last
    name after a ``~``, as Sphinx shows it)."""
    text = re.sub(r":\w+:`~(?:[\w.]*\.)?([^`]*)`", r"\1", text)
    text = re.sub(r":\w+:`([^`]*)`", r"\1", text)
    return re.sub(r"``([^`]*)``", r"\1", text)


@dataclass
class MethodConfig:
    """Hyperparameters of a method: keyword arguments, ``ssl-hub pretrain`` flags and saved JSON at once.

    Subclasses are dataclasses whose field defaults are the paper's; :meth:`validate` checks ranges and raises an
    error that names the argument.
    """

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the argument when a value is out of range."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_descriptions(cls) -> dict[str, str]:
        """Each field's description from the ``Args:`` section of the docstring of this class or, failing that, of
        the nearest base that documents it, as plain text on one line: the help of its ``ssl-hub pretrain`` flag."""
        descriptions: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            descriptions.update(_docstring_args(klass.__doc__ or ""))
        return {
            field.name: _plain_text(descriptions[field.name])
            for field in dataclasses.fields(cls)
            if field.name in descriptions
        }

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def build(cls: type[ConfigT], config: ConfigT | None, kwargs: dict[str, Any], owner: str) -> ConfigT:
        """The config from an instance, or from keyword arguments with a clear error for unknown names."""
        if config is not None:
            if kwargs:
                raise TypeError(f"{owner}: pass either config=... or keyword arguments, not both.")
            if not isinstance(config, cls):
                raise TypeError(f"{owner}: config must be a {cls.__name__}, got {type(config).__name__}.")
            return config
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(
                f"{owner} got unknown argument(s) {', '.join(unknown)}. Its arguments: {', '.join(sorted(known))}."
            )
        return cls(**kwargs)


@dataclass
class SSLMethodOutput(ModelOutput):
    """What a method's ``forward`` returns; the Trainer reads ``loss``.

    ``metrics`` are optional scalar diagnostics of the batch (a loss's terms, embedding statistics), detached;
    ``ssl_hub.pretrain`` logs their mean over each logging interval through the Trainer's log
    (:class:`~ssl_hub.training.MethodMetricsCallback`), so a run shows what its loss is made of.
    """

    loss: torch.Tensor | None = None
    metrics: dict[str, torch.Tensor] | None = None

    @classmethod
    def from_terms(cls, terms: dict[str, torch.Tensor], **metrics: torch.Tensor) -> SSLMethodOutput:
        """The output of a loss made of named ``terms``: their sum is the loss, each is logged as ``loss_<name>``,
        and ``metrics`` are logged too."""
        logged = {f"loss_{name}": term.detach() for name, term in terms.items()}
        logged.update({name: value.detach() for name, value in metrics.items()})
        return cls(loss=sum_of_terms(terms), metrics=logged)


class SSLMethod(nn.Module):
    """Base class of all methods: owns the backbone, heads, and any teacher / queue / prototypes.

    Teachers, queues and prototypes are submodules or buffers, so Trainer checkpoints capture them. ``forward``
    returns the loss and never calls backward or steps an optimizer; step-dependent values live in the
    :meth:`callbacks`.

    Args:
        backbone: A timm model name (``"resnet18"``; ``"hf-hub:REPO"`` / ``"local-dir:PATH"`` to continue from a
            published backbone) or a timm model.
        config: The method's config; alternatively give its fields as keyword arguments.
        backbone_kwargs: Passed to ``timm.create_model`` (``pretrained``, ``img_size``, ``drop_path_rate``...).
        **kwargs: Fields of the method's config class.
    """

    name: ClassVar[str]
    display_name: ClassVar[str]
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    transform_class: ClassVar[type[MultiViewTransform]]
    paper: ClassVar[Paper]
    # Masked-image methods work on timm ViTs only (see ssl_hub.modules for the adapter); the others on any backbone.
    requires_vit: ClassVar[bool] = False
    # The submodule published as config.json + model.safetensors: the student "backbone" by default; a method whose
    # EMA teacher is the better encoder (DINO) names it instead, and the student then lives in ssl/.
    published_backbone: ClassVar[str] = "backbone"
    # How the recipe's learning rate (the rate for a global batch of RECIPE_BATCH_SIZE) follows the run's batch when
    # the user does not set one: "linear" (the papers' "lr per 256 images"), "sqrt" (DINOv2), or None (fixed: the
    # Adam recipes at 1e-3). Applied by ssl_hub.training.arguments.scaled_learning_rate.
    learning_rate_scaling: ClassVar[LearningRateScaling] = None
    # timm arguments the method gives a backbone it builds from an architecture name (the user's backbone_kwargs win;
    # a model instance or a published backbone is left as it is). Methods whose losses never reach a ViT's class token
    # (I-JEPA, SimMIM, AIM) publish the mean patch token, global_pool="avg", and warn about a backbone that pools the
    # class token; MAE and I-JEPA initialise their ViTs as their official code does (weight_init="jax"; fix_init).
    backbone_defaults: ClassVar[dict[str, Any]] = {}
    # Read by transformers.Trainer: the batch key holding the inputs, and no loss kwargs in forward.
    main_input_name: ClassVar[str] = "views"
    accepts_loss_kwargs: ClassVar[bool] = False

    def __init__(
        self,
        backbone: str | nn.Module,
        config: MethodConfig | None = None,
        *,
        backbone_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.config = self.config_class.build(config, kwargs, owner=type(self).__name__)
        self.backbone = self._build_backbone(backbone, dict(backbone_kwargs or {}))
        if (
            self.backbone_defaults.get("global_pool") == "avg"
            and getattr(self.backbone, "global_pool", None) == "token"
        ):
            logger.warning(
                f"{self.display_name} trains no class token, and this ViT's features are its class token "
                "(global_pool='token'): build it with global_pool='avg' (the default for a backbone given by name), "
                "the mean of the patch tokens the method trains."
            )
        self.feature_dim = feature_dim(self.backbone)
        # Where the backbone came from, for the card's base_model when continuing from a published one.
        self.backbone_source = backbone if isinstance(backbone, str) else None
        # What the hub folder records about training (data_config, training, evaluation, dataset, license):
        # filled by ssl_hub.pretrain and load_method, used by save_pretrained.
        self.hub_info: dict[str, Any] = {}

    def _build_backbone(self, backbone: str | nn.Module, timm_kwargs: dict[str, Any]) -> nn.Module:
        """``create_backbone`` with :attr:`backbone_defaults` under the user's arguments for an architecture name. An
        architecture that does not take a default (``weight_init`` on a ResNet) is built without them: the method's
        own checks then say what it needs."""
        defaults = {key: value for key, value in self.backbone_defaults.items() if key not in timm_kwargs}
        if not (defaults and isinstance(backbone, str) and parse_model_name(backbone)[0] is None):
            return create_backbone(backbone, **timm_kwargs)
        try:
            return create_backbone(backbone, **defaults, **timm_kwargs)
        except TypeError as error:
            model = create_backbone(backbone, **timm_kwargs)  # raises again if the user's arguments were the cause
            # Debug, not a warning: every architecture that refuses them is one the method then refuses, saying why.
            logger.debug(f"{self.display_name}: {backbone} refused the defaults {defaults} ({error}); built without.")
            return model

    @property
    def published(self) -> nn.Module:
        """The submodule the hub folder publishes: :attr:`published_backbone` (the student, or an EMA teacher)."""
        module: nn.Module = getattr(self, self.published_backbone)
        return module

    def forward(self, views: Sequence[torch.Tensor]) -> SSLMethodOutput:
        """The loss of one batch of views; ``views[i]`` is ``(B, C, H_i, W_i)``."""
        raise NotImplementedError

    def check_views(self, views: Sequence[torch.Tensor], count: int) -> None:
        """Raise a clear error unless ``views`` holds ``count`` batches of images of one size."""
        if isinstance(views, torch.Tensor) or len(views) != count:
            got = "a single tensor" if isinstance(views, torch.Tensor) else f"{len(views)}"
            raise ValueError(
                f"{type(self).__name__} takes {count} views of each image, got {got}: build the data with "
                "method.make_transform(), which returns the views the method expects."
            )
        if any(v.ndim != 4 or v.shape != views[0].shape for v in views):
            raise ValueError(
                f"{type(self).__name__} takes views of one shape (B, C, H, W), got {[tuple(v.shape) for v in views]}."
            )

    def encode_views(
        self, views: Sequence[torch.Tensor], encoder: Callable[[torch.Tensor], torch.Tensor], one_pass: bool
    ) -> tuple[torch.Tensor, ...]:
        """``encoder``'s output for each view of one shape: from one pass over the ``(V * B, C, H, W)`` concatenation
        (batch-norm statistics span every view), or from one pass per view (each view's own statistics)."""
        return tuple(multi_crop_forward(encoder, views, one_pass_per_size=one_pass))  # V x (B, ...)

    def fit_input_size(self, image_size: int) -> None:
        """Adapt every timm model inside (the backbone and any teacher copy) to ``image_size`` when it needs a fixed
        input size (ViTs built for 224 px); see :func:`ssl_hub.modules.backbone.fit_input_size`."""
        for module in self.modules():
            if hasattr(module, "pretrained_cfg"):
                fit_input_size(module, image_size)
        self.fix_position_embeddings()  # a resized ViT holds a resampled embedding: the new grid's instead

    def fix_position_embeddings(self) -> None:
        """Freeze every timm ViT inside (a teacher copy too) at the 2D sine-cosine position embedding of its current
        patch grid, if the method's config sets ``fixed_position_embedding`` (MAE, I-JEPA and AIM, as their papers;
        see :func:`ssl_hub.modules.fix_sincos_position_embedding`). Those methods call it when built, and
        :meth:`fit_input_size` calls it again after resizing."""
        if not getattr(self.config, "fixed_position_embedding", False):
            return
        for module in self.modules():
            if isinstance(module, VisionTransformer):
                fix_sincos_position_embedding(module)

    def make_transform(self, input_size: int = 224, **kwargs: Any) -> MultiViewTransform:
        """The method's default augmentation: image -> list of views. ``kwargs`` override its arguments."""
        return self.transform_class(input_size=input_size, **kwargs)

    def parameter_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups: weight decay on weight matrices and kernels, none on biases and
        normalisation parameters (every tensor of at most one dimension), as SSL recipes do (SimCLR's and BYOL's LARS,
        DINO's ``get_params_groups``). Frozen parameters (teachers) are left out."""
        trainable = [p for p in self.parameters() if p.requires_grad]
        return [
            {"params": [p for p in trainable if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0},
        ]

    def callbacks(self) -> list[TrainerCallback]:
        """The Trainer callbacks this method needs (EMA momentum, temperature schedules, ...)."""
        return []

    @classmethod
    def default_training_arguments(cls, config: MethodConfig | None = None) -> dict[str, Any]:
        """``PretrainingArguments`` values that suit this method when the user does not set them.

        ``learning_rate`` is the rate for a global batch of ``RECIPE_BATCH_SIZE``; ``ssl_hub.pretrain`` and
        ``ssl-hub pretrain`` scale it to the run's batch by the rule of :attr:`learning_rate_scaling`.
        ``timm_optimizer`` and ``timm_optimizer_kwargs`` may name an optimizer of timm's (LARS) to train with in
        place of the one ``optim`` names, unless the run chooses ``optim``. ``config`` (default: the config class's
        defaults) lets the recipe follow the method's hyperparameters, as MoCo's follows its version."""
        return {
            "learning_rate": 1e-3,
            "weight_decay": 1e-6,
            "lr_scheduler_type": "cosine",
            "warmup_steps": 0.05,
            "max_grad_norm": 0.0,  # no clipping unless the method's paper clips
        }

    def backbone_training_arguments(self) -> dict[str, Any]:
        """The recipe's values that follow the backbone's architecture, over :meth:`default_training_arguments`: the
        optimizer, its rate and the weight decay (``learning_rate``, ``weight_decay``, ``timm_optimizer``,
        ``timm_optimizer_kwargs``), as MoCo v3 trains ResNets with LARS and ViTs with AdamW, and LeJEPA decays ViTs
        a hundred times more than ResNets. None by default."""
        return {}

    def save_pretrained(self, save_directory: str | Path, **card_kwargs: Any) -> Path:
        """Write the hub folder: backbone (config.json + model.safetensors), model card, and ``ssl/`` state.

        Args:
            save_directory: Target folder (created if needed; other files in it are left alone).
            **card_kwargs: Model card content, see :func:`ssl_hub.hub.save_hub_folder`.
        """
        from ssl_hub.hub.folder import save_hub_folder

        return save_hub_folder(self, save_directory, **card_kwargs)

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Save the hub folder and upload it to the Hugging Face Hub in one commit; returns the commit URL.

        See :func:`ssl_hub.hub.push_to_hub` for the arguments (``private``, ``revision``, ``commit_message``,
        ``token``...).
        """
        from ssl_hub.hub.push import push_method_to_hub

        return push_method_to_hub(self, repo_id, **kwargs)

    @classmethod
    def from_pretrained(cls: type[MethodT], source: str | Path) -> MethodT:
        """Load a method saved by :meth:`save_pretrained` (a folder, ``local-dir:`` or ``hf-hub:`` name)."""
        from ssl_hub.hub.folder import load_method

        method = load_method(source)
        if not isinstance(method, cls):
            raise TypeError(f"{source} holds a {type(method).__name__}, not a {cls.__name__}.")
        return method
