"""What every converter shares: reading a checkpoint safely, finding the backbone's tensors, naming the timm
architecture, building it strictly from the weights, and writing the hub folder with a card that says what was
converted.

A converter (one file per source format) knows only its format's layout: which entries hold weights, under which key
prefix the backbone sits, how its names become timm's, and what the format tells about the method and preprocessing.
It returns an :class:`Extraction`; :func:`ssl_hub.conversion.convert_checkpoint` does the rest the same way for
every format.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import timm
import torch
from timm.models import split_model_name_tag
from torch import nn

# The official repositories save their command-line arguments (an argparse.Namespace of plain values) next to the
# weights; torch.load(weights_only=True) reads them once the class is allowed.
SAFE_GLOBALS: list[Any] = [argparse.Namespace]

# Tokens of a key prefix that name a momentum / EMA copy rather than the trained (student) backbone.
_TEACHER_TOKENS = frozenset({"teacher", "momentum", "ema", "target", "mom"})

# Standard timm ViTs and ResNets, recognised from their weights when no architecture is given.
# ViT: (embedding width, depth) -> size name. Attention heads leave no trace in the weights: these are timm's defaults.
_VIT_SIZES = {(192, 12): "tiny", (384, 12): "small", (768, 12): "base", (1024, 24): "large", (1280, 32): "huge"}
# ResNet: (block, blocks per stage, width of the first stage's first conv) -> architecture.
_RESNETS: dict[tuple[str, tuple[int, ...], int], str] = {
    ("basic", (2, 2, 2, 2), 64): "resnet18",
    ("basic", (3, 4, 6, 3), 64): "resnet34",
    ("bottleneck", (3, 4, 6, 3), 64): "resnet50",
    ("bottleneck", (3, 4, 23, 3), 64): "resnet101",
    ("bottleneck", (3, 8, 36, 3), 64): "resnet152",
    ("bottleneck", (3, 4, 6, 3), 128): "wide_resnet50_2",
    ("bottleneck", (3, 4, 23, 3), 128): "wide_resnet101_2",
}

# What torch.load(weights_only=True) says when a checkpoint holds a class it does not allow, or is no pickle at all.
_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")
_UNPICKLER_ERROR = re.compile(r"WeightsUnpickler error:\s*(.+)")

Renamer = Callable[[Mapping[str, torch.Tensor]], dict[str, str]]


class ConversionError(ValueError):
    """A checkpoint that cannot be converted; the message says why and what to pass instead."""


@dataclass
class Extraction:
    """The backbone a converter found in a checkpoint, under timm's key names.

    Attributes:
        weights: Every weight tensor of the checkpoint, under its key there (entries of several state dicts are
            prefixed with the entry's name, e.g. ``teacher.``); what the backbone does not use is reported dropped.
        ignored_entries: Top-level entries of the checkpoint that hold no weights (``optimizer``, ``epoch``...).
        prefix: The key prefix of the backbone in ``weights`` (``"teacher.backbone."``; ``""`` for all of them).
        state: The backbone's tensors under timm's names.
        source_keys: For each name in ``state``, its key in ``weights``.
        description: Which weights these are, for the card ("the teacher's backbone").
        key_names: How the source's names became timm's, for the card.
        architecture: The timm architecture the checkpoint names or its weights imply; ``None`` when unknown.
        model_args: ``timm.create_model`` arguments the weights need (``num_heads``, ``global_pool``...).
    """

    weights: dict[str, torch.Tensor]
    ignored_entries: list[str]
    prefix: str
    state: dict[str, torch.Tensor]
    source_keys: dict[str, str]
    description: str
    key_names: str
    architecture: str | None = None
    model_args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceFormat:
    """A checkpoint format ``ssl-hub convert --from`` reads.

    Attributes:
        name: The ``--from`` value.
        description: What it is, for the card ("an official DINO checkpoint (facebookresearch/dino)").
        extract: ``extract(checkpoint, architecture=..., model_args=..., encoder=..., prefix=...)`` ->
            :class:`Extraction`.
        encoders: The encoders a checkpoint of this format holds, the default first (``("teacher", "student")``);
            empty when it holds one.
        accepts_prefix: Whether ``prefix`` may name the backbone's key prefix (formats that detect it).
        method: Registry name of the method the format always comes from (``None``: unknown unless given).
        method_config: Arguments of that method the format fixes (MoCo v3: ``{"version": 3}``).
        license: Licence of the format's officially released weights (``None``: unknown unless given).
        data_config: Preprocessing of the format's evaluation protocol (``interpolation``, ``crop_pct``...).
    """

    name: str
    description: str
    extract: Callable[..., Extraction]
    encoders: tuple[str, ...] = ()
    accepts_prefix: bool = False
    method: str | None = None
    method_config: Mapping[str, Any] = field(default_factory=dict)
    license: str | None = None
    data_config: Mapping[str, Any] = field(default_factory=dict)


def load_checkpoint(path: Path, *, allow_pickle: bool = False) -> Any:
    """Read a checkpoint file onto the CPU with ``torch.load(weights_only=True)`` (or safetensors).

    Args:
        path: A ``torch.save`` file (``.ckpt``, ``.pth``, ``.pth.tar``, ``.pt``) or a ``.safetensors`` file.
        allow_pickle: Fall back to full unpickling (``weights_only=False``), which runs code the file names: only
            for files from a trusted source.

    Raises:
        ConversionError: The file is missing, is not a checkpoint, or needs pickle and ``allow_pickle`` is off.
    """
    if not path.is_file():
        raise ConversionError(f"{path} does not exist or is not a file.")
    if path.suffix == ".safetensors":
        try:
            return safetensors.torch.load_file(str(path))
        except Exception as error:  # safetensors raises its own error type for every malformed file
            raise ConversionError(f"{path} is not a readable safetensors file: {error}") from error
    try:
        if allow_pickle:
            return torch.load(path, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises UnpicklingError, KeyError, RuntimeError... on what it cannot read
        unsafe = _UNSAFE_GLOBAL.search(str(error))
        if unsafe is not None:
            raise ConversionError(
                f"{path} holds Python objects ({unsafe[1]}) that only pickle can load, and unpickling can run code "
                "from the file, so torch.load(weights_only=True) refused it. If you trust its source, pass "
                "--allow-pickle (Python: allow_pickle=True); or save its weights alone with torch.save(state_dict) "
                "and convert that file."
            ) from error
        reason = _UNPICKLER_ERROR.search(str(error))
        detail = reason[1] if reason else f"{type(error).__name__}: {error}"
        raise ConversionError(f"{path} is not a PyTorch checkpoint, or is truncated (torch.load: {detail}).") from error


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tensors_of(value: Any) -> dict[str, torch.Tensor] | None:
    """The tensors of a state dict (a mapping with string keys holding at least one tensor), else ``None``."""
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        return None
    found = {key: tensor for key, tensor in value.items() if isinstance(tensor, torch.Tensor)}
    return found or None


def gather_weights(
    checkpoint: Any, entries: tuple[str, ...], format_name: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The weights of a checkpoint and its other top-level entries.

    The weights are the state dicts under ``entries`` (several get their entry's name as key prefix:
    ``teacher.backbone...``); a checkpoint with none of them is taken as a state dict itself.

    Raises:
        ConversionError: The checkpoint holds no state dict.
    """
    if not isinstance(checkpoint, Mapping):
        raise ConversionError(
            f"This is not a {format_name} checkpoint: torch.load returned a {type(checkpoint).__name__}, not a dict."
        )
    present = [name for name in entries if tensors_of(checkpoint.get(name)) is not None]
    if not present:
        weights = tensors_of(checkpoint)
        if weights is None:
            found = ", ".join(repr(key) for key in list(checkpoint)[:8]) or "nothing"
            expected = " or ".join(repr(name) for name in entries)
            raise ConversionError(
                f"This is not a {format_name} checkpoint: it has no {expected} entry and is no state dict "
                f"(it holds {found})."
            )
        return weights, [str(key) for key in checkpoint if key not in weights]
    weights = {}
    for name in present:
        state = tensors_of(checkpoint[name]) or {}
        weights.update(state if len(present) == 1 else {f"{name}.{key}": tensor for key, tensor in state.items()})
    return weights, [str(key) for key in checkpoint if key not in present]


def strip_prefix(weights: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix``, with the prefix removed from their keys."""
    return {key[len(prefix) :]: tensor for key, tensor in weights.items() if key.startswith(prefix)}


def first_prefix(weights: Mapping[str, torch.Tensor], candidates: tuple[str, ...]) -> str | None:
    """The first of ``candidates`` that some key starts with (``""`` matches any checkpoint)."""
    return next((prefix for prefix in candidates if any(key.startswith(prefix) for key in weights)), None)


def same_names(state: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """The identity renaming: the source's names are timm's."""
    return {key: key for key in state}


def check_architecture(name: str) -> str:
    """``name`` when timm has that architecture (an optional ``.tag`` allowed), else a clear error."""
    if ":" in name:
        raise ConversionError(
            f"--backbone {name!r}: name the timm architecture of the checkpoint's weights (e.g. resnet50, "
            "vit_small_patch16_224), not a published model."
        )
    architecture, _ = split_model_name_tag(name)
    if not timm.is_model(architecture):
        close = difflib.get_close_matches(architecture, timm.list_models(), n=5, cutoff=0.6)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        raise ConversionError(
            f"timm {timm.__version__} has no architecture {architecture!r}.{hint} "
            "List them with timm.list_models('*pattern*')."
        )
    return name


def _block_count(state: Mapping[str, torch.Tensor], module: str) -> int:
    """How many numbered children ``module`` has (``blocks.0.`` ... ``blocks.11.`` -> 12)."""
    pattern = re.compile(rf"{re.escape(module)}\.(\d+)\.")
    indices = {int(match[1]) for key in state if (match := pattern.match(key))}
    return max(indices) + 1 if indices else 0


def guess_architecture(state: Mapping[str, torch.Tensor]) -> str | None:
    """The standard timm ViT or ResNet whose weights ``state`` (timm names) holds; ``None`` when it is neither.

    ViTs are named by width, depth and patch size (``vit_small_patch16_224``), ResNets by block type, blocks per
    stage and width (``resnet50``, ``wide_resnet50_2``). Attention heads leave no trace in the weights: a ViT
    gets timm's number of heads for its size, and a converter whose source uses another passes ``num_heads``.
    """
    name = None
    patch_weight = state.get("patch_embed.proj.weight")
    if patch_weight is not None and patch_weight.ndim == 4 and "cls_token" in state and "pos_embed" in state:
        size = _VIT_SIZES.get((patch_weight.shape[0], _block_count(state, "blocks")))
        if size is not None and patch_weight.shape[-1] == patch_weight.shape[-2]:
            name = f"vit_{size}_patch{patch_weight.shape[-1]}_224"
    elif "conv1.weight" in state and "layer1.0.conv1.weight" in state:
        block = "bottleneck" if "layer1.0.conv3.weight" in state else "basic"
        layers = tuple(_block_count(state, f"layer{stage}") for stage in range(1, 5))
        name = _RESNETS.get((block, layers, state["layer1.0.conv1.weight"].shape[0]))
    return name if name is not None and timm.is_model(name) else None


def create_model(architecture: str, model_args: Mapping[str, Any]) -> nn.Module:
    """``timm.create_model(architecture, num_classes=0, **model_args)``, with a clear error for arguments it refuses.

    Raises:
        ConversionError: timm refused the arguments (an unknown name, heads that do not divide the width...).
    """
    try:
        return timm.create_model(architecture, num_classes=0, **model_args)
    except (TypeError, ValueError, AssertionError) as error:  # timm checks model arguments with asserts too
        raise ConversionError(
            f"timm's {architecture} does not build with the model arguments {dict(model_args)}: {error}"
        ) from error


def meta_model(architecture: str, model_args: Mapping[str, Any]) -> nn.Module:
    """:func:`create_model` on the meta device: the model's names and shapes, with no memory or initialisation cost."""
    with torch.device("meta"):
        return create_model(architecture, model_args)


def _prefix_tokens(prefix: str) -> set[str]:
    return {token for token in re.split(r"[._]", prefix.lower()) if token}


def _dotted_prefixes(keys: list[str]) -> set[str]:
    """``""`` and every prefix of a key that ends at a dot (``a.b.c`` -> ``""``, ``a.``, ``a.b.``)."""
    prefixes = {""}
    for key in keys:
        parts = key.split(".")[:-1]
        prefixes.update(".".join(parts[: depth + 1]) + "." for depth in range(len(parts)))
    return prefixes


def find_backbone(
    weights: Mapping[str, torch.Tensor],
    *,
    architecture: str | None,
    model_args: Mapping[str, Any],
    prefix: str | None = None,
    rename: Renamer = same_names,
) -> tuple[str, dict[str, torch.Tensor], dict[str, str], str | None]:
    """Find the student backbone among a model's weights.

    Every key prefix that ends at a dot is a candidate: its tensors, renamed by ``rename``, are scored by how many
    names of the timm model they fill (``architecture``, or the standard ViT / ResNet the candidate's weights look
    like). The best score wins; among equals, a prefix that does not name a teacher / momentum / EMA copy, then one
    that names the student, then the shortest. So ``backbone.`` wins over ``backbone_momentum.``,
    ``student_backbone.`` over ``teacher_backbone.`` and ``model.backbone.vit.`` over ``model.``.

    Args:
        weights: The checkpoint's weights.
        architecture: The timm architecture of the backbone; ``None`` to recognise standard ViTs and ResNets.
        model_args: ``timm.create_model`` arguments of that architecture.
        prefix: The backbone's prefix, when known; no search then.
        rename: Maps the source names under a prefix to timm's (see ``conversion.torchvision.resnet_names``).

    Returns:
        The prefix, the backbone's tensors under timm's names, their source keys, and the architecture.

    Raises:
        ConversionError: No prefix holds such a backbone.
    """
    if prefix is not None:
        state = strip_prefix(weights, prefix)
        if not state:
            raise ConversionError(f"No key starts with {prefix!r}; the keys start with {_key_summary(weights)}.")
        names = rename(state)
        return (
            prefix,
            {names[key]: tensor for key, tensor in state.items()},
            {names[key]: prefix + key for key in state},
            architecture or guess_architecture({names[key]: tensor for key, tensor in state.items()}),
        )
    expected_keys: dict[str, set[str]] = {}
    best: tuple[tuple[int, bool, bool, int], str, dict[str, str], str] | None = None
    for candidate in sorted(_dotted_prefixes(list(weights))):
        state = strip_prefix(weights, candidate)
        names = rename(state)
        renamed = {names[key]: tensor for key, tensor in state.items()}
        target = architecture or guess_architecture(renamed)
        if target is None:
            continue
        if target not in expected_keys:
            expected_keys[target] = set(meta_model(target, model_args).state_dict())
        score = len(expected_keys[target] & renamed.keys())
        tokens = _prefix_tokens(candidate)
        rank = (score, not tokens & _TEACHER_TOKENS, "student" in tokens, -len(candidate))
        if score and (best is None or rank > best[0]):
            best = (rank, candidate, names, target)
    if best is None:
        wanted = f"timm's {architecture}" if architecture else "a standard ViT or ResNet"
        raise ConversionError(
            f"No key prefix holds the weights of {wanted}; the keys start with {_key_summary(weights)}. Pass the "
            "backbone's timm architecture as --backbone (and its key prefix as --prefix)."
        )
    _, found, names, target = best
    state = strip_prefix(weights, found)
    return (
        found,
        {names[key]: tensor for key, tensor in state.items()},
        {names[key]: found + key for key in state},
        target,
    )


def _key_summary(weights: Mapping[str, torch.Tensor]) -> str:
    groups = group_keys(list(weights), set())
    return ", ".join(f"{group['keys']} ({group['count']})" for group in groups[:8])


def group_keys(dropped: list[str], kept: set[str]) -> list[dict[str, Any]]:
    """Keys grouped by the shortest dotted prefix that no kept key shares, in order of first appearance.

    ``["teacher.head.mlp.0.weight", ..., "student.module.backbone.cls_token", ...]`` with the teacher's backbone
    kept gives ``[{"keys": "teacher.head.*", "count": 8}, {"keys": "student.*", "count": 152}]``.
    """
    kept_prefixes = _dotted_prefixes(list(kept))
    counts: dict[str, int] = {}
    for key in dropped:
        parts = key.split(".")
        group = key
        for depth in range(1, len(parts)):
            head = ".".join(parts[:depth]) + "."
            if head not in kept_prefixes:
                group = head + "*"
                break
        counts[group] = counts.get(group, 0) + 1
    return [{"keys": group, "count": count} for group, count in counts.items()]


def native_size_args(
    architecture: str, model_args: Mapping[str, Any], state: Mapping[str, torch.Tensor]
) -> dict[str, Any]:
    """``{"img_size": ...}`` when a ViT's position embeddings in ``state`` are for another input size than the
    architecture's default (e.g. ``test_vit`` weights trained at 224 px), so the model is built at the weights' size.
    """
    pos_embed = state.get("pos_embed")
    if "img_size" in model_args or pos_embed is None or pos_embed.ndim != 3:
        return {}
    model = meta_model(architecture, model_args)
    own, patch_embed = getattr(model, "pos_embed", None), getattr(model, "patch_embed", None)
    if not isinstance(own, torch.Tensor) or patch_embed is None or own.shape == pos_embed.shape:
        return {}
    prefix_tokens = 0 if getattr(model, "no_embed_class", False) else int(getattr(model, "num_prefix_tokens", 0))
    side = math.isqrt(max(pos_embed.shape[1] - prefix_tokens, 0))
    if side == 0 or side * side != pos_embed.shape[1] - prefix_tokens:
        return {}
    patch_height, patch_width = patch_embed.patch_size
    return {"img_size": (side * patch_height, side * patch_width)}


def _classifier_names(model: nn.Module) -> tuple[str, ...]:
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
    return (classifier,) if isinstance(classifier, str) else tuple(classifier)


def build_backbone(
    architecture: str, model_args: Mapping[str, Any], state: Mapping[str, torch.Tensor], source: str
) -> tuple[nn.Module, list[str]]:
    """timm's ``architecture`` with no classifier (``num_classes=0``), every weight loaded from ``state``.

    Loading is strict: each parameter and buffer of the model must be in ``state`` with its shape (only BatchNorm's
    ``num_batches_tracked`` counters, which older checkpoints lack and which do not change the features, keep
    their initial value); keys of ``state`` the model lacks are an error unless they belong to the
    architecture's classifier (``fc``, ``head``: a linear head or projector the source put there).

    Args:
        architecture: A timm architecture.
        model_args: Its ``timm.create_model`` arguments.
        state: The weights, under timm's names.
        source: Where the weights come from, for the error message.

    Returns:
        The model (in eval mode) and the classifier keys of ``state`` it left out.

    Raises:
        ConversionError: The weights do not fit the architecture; the message names the first keys at fault.
    """
    model = create_model(architecture, model_args)
    expected = model.state_dict()
    classifiers = _classifier_names(model)
    unexpected = [key for key in state if key not in expected]
    heads = [key for key in unexpected if any(key == name or key.startswith(name + ".") for name in classifiers)]
    unexpected = [key for key in unexpected if key not in heads]
    missing = [key for key in expected if key not in state and not key.endswith("num_batches_tracked")]
    mismatched = [key for key in expected if key in state and state[key].shape != expected[key].shape]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"missing {_first(missing)}")
        if unexpected:
            problems.append(f"unexpected {_first(unexpected)}")
        if mismatched:
            shapes = [f"{key} {tuple(state[key].shape)} vs {tuple(expected[key].shape)}" for key in mismatched[:3]]
            problems.append(f"other shapes ({len(mismatched)}): {', '.join(shapes)}")
        arguments = f" with {dict(model_args)}" if model_args else ""
        raise ConversionError(
            f"{source} do not fit timm's {architecture}{arguments}: {'; '.join(problems)}. Pass the architecture "
            "they were trained with as --backbone (and any timm arguments it needs as --model-args)."
        )
    model.load_state_dict({key: state.get(key, value) for key, value in expected.items()}, strict=True)
    return model.eval(), heads


def _first(keys: list[str], count: int = 5) -> str:
    more = f" and {len(keys) - count} more" if len(keys) > count else ""
    return f"({len(keys)}) {', '.join(keys[:count])}{more}"
