"""``ssl-hub convert``: a checkpoint of another library -> a hub folder with its backbone and a card saying so.

The converter of the format (:data:`FORMATS`) finds the backbone's tensors and gives them timm's names; then, the same
for every format, the timm architecture is built with ``num_classes=0`` and loaded strictly (every weight of the
model filled, every other tensor of the checkpoint reported dropped), and ``config.json`` + ``model.safetensors`` +
``README.md`` are written with :func:`ssl_hub.hub.folder.write_backbone` and the model card template. Only the
backbone is converted: the folder has no ``ssl/``, so ``ssl_hub.load_method`` says to start a new method from it
with ``ssl_hub.create_method(name, backbone="local-dir:DIR")``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ssl_hub.conversion import dino, lightly, mae, mocov3, torchvision, vicregl
from ssl_hub.conversion.common import (
    ConversionError,
    SourceFormat,
    build_backbone,
    check_architecture,
    file_sha256,
    group_keys,
    load_checkpoint,
    native_size_args,
)
from ssl_hub.hub.card import render_model_card
from ssl_hub.hub.folder import CARD_NAME, SSL_DIR, default_data_config, write_backbone
from ssl_hub.modules.backbone import fit_input_size
from ssl_hub.registry import get_method_class
from ssl_hub.version import __version__

logger = logging.getLogger(__name__)

FORMATS: dict[str, SourceFormat] = {
    source.name: source
    for source in (lightly.FORMAT, dino.FORMAT, mocov3.FORMAT, mae.FORMAT, vicregl.FORMAT, torchvision.FORMAT)
}


@dataclass
class ConversionResult:
    """What :func:`convert_checkpoint` wrote.

    Attributes:
        output_dir: The hub folder.
        architecture: The timm architecture (config.json's ``architecture``).
        model_args: Its ``timm.create_model`` arguments beyond the architecture's defaults.
        weights: Which weights were converted ("the teacher's backbone").
        prefix: Their key prefix in the checkpoint.
        num_tensors: How many tensors the backbone took from the checkpoint.
        dropped: The checkpoint's tensors that are not the backbone's (heads, teachers, decoders...).
        dropped_groups: ``dropped`` by module: ``[{"keys": "teacher.head.*", "count": 8}, ...]``.
        ignored_entries: Top-level entries of the checkpoint that hold no weights (``optimizer``, ``epoch``...).
        method: Registry name of the method the card names, or ``None`` when unknown.
    """

    output_dir: Path
    architecture: str
    model_args: dict[str, Any]
    weights: str
    prefix: str
    num_tensors: int
    dropped: list[str] = field(default_factory=list)
    dropped_groups: list[dict[str, Any]] = field(default_factory=list)
    ignored_entries: list[str] = field(default_factory=list)
    method: str | None = None

    def summary(self) -> str:
        """A few lines for the command line: what was converted, what was dropped, where it went."""
        arguments = f" ({self.model_args})" if self.model_args else ""
        under = f" under {self.prefix}" if self.prefix else ""
        lines = [
            f"Converted {self.weights} ({self.num_tensors} tensors{under}) to timm's {self.architecture}{arguments}."
        ]
        if self.dropped:
            shown = ", ".join(f"{group['keys']} ({group['count']})" for group in self.dropped_groups[:10])
            more = ", ..." if len(self.dropped_groups) > 10 else ""
            lines.append(f"Dropped {len(self.dropped)} tensors: {shown}{more}.")
        if self.ignored_entries:
            lines.append(f"Ignored entries that hold no weights: {', '.join(self.ignored_entries)}.")
        lines.append(f"Hub folder written to {self.output_dir}")
        return "\n".join(lines)


def _source_format(name: str) -> SourceFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ConversionError(f"Unknown checkpoint format {name!r}; one of {', '.join(FORMATS)}.") from None


def _check_options(source: SourceFormat, encoder: str | None, prefix: str | None, image_size: int | None) -> None:
    if encoder is not None and encoder not in source.encoders:
        choices = f"one of {', '.join(source.encoders)}" if source.encoders else "none: it holds one encoder"
        raise ConversionError(f"--encoder {encoder!r} does not apply to {source.name} checkpoints ({choices}).")
    if prefix is not None and not source.accepts_prefix:
        raise ConversionError(
            f"--prefix does not apply to {source.name} checkpoints: their layout is known (see --encoder)."
        )
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ConversionError(f"--image-size must be a positive number of pixels, got {image_size!r}.")


def _method(source: SourceFormat, method: str | None) -> tuple[str | None, dict[str, Any]]:
    """The registry name of the method the card names, and the method arguments the format fixes."""
    if method is None:
        return source.method, dict(source.method_config)
    try:
        name = get_method_class(method).name
    except ValueError as error:
        raise ConversionError(str(error)) from error
    if source.method is not None and name != source.method:
        raise ConversionError(f"{source.name} checkpoints come from {source.method}, not {name}: leave out --method.")
    return name, dict(source.method_config)


def convert_checkpoint(
    checkpoint: str | os.PathLike[str],
    source_format: str,
    output_dir: str | os.PathLike[str],
    *,
    backbone: str | None = None,
    image_size: int | None = None,
    license: str | None = None,
    method: str | None = None,
    encoder: str | None = None,
    prefix: str | None = None,
    model_args: dict[str, Any] | None = None,
    base_model: str | None = None,
    allow_pickle: bool = False,
) -> ConversionResult:
    """Convert the backbone of another library's checkpoint into a hub folder.

    Args:
        checkpoint: The checkpoint file.
        source_format: Its format, one of :data:`FORMATS` (``lightly``, ``dino``, ``mocov3``, ``mae``, ``vicregl``,
            ``torchvision``).
        output_dir: The hub folder to write (created; it must not hold an ``ssl/`` folder of a trained method).
        backbone: The timm architecture of the weights. Default: what the checkpoint names (DINO's and MAE's
            ``args``, MoCo v3's ``arch``), else the standard ViT or ResNet its weights are.
        image_size: Input size the folder records (a fixed-size ViT gets its position embeddings resampled to it).
            Default: the architecture's, or the size the ViT's position embeddings were trained at.
        license: Licence of the weights for the card. Default: that of the format's released weights (dino:
            apache-2.0; mocov3, mae, vicregl: cc-by-nc-4.0); none for lightly and torchvision.
        method: The ssl_hub method that trained the weights, for lightly and torchvision checkpoints (the other
            formats name theirs).
        encoder: Which encoder of a two-encoder checkpoint: dino ``teacher`` (default) or ``student``; mocov3
            ``base`` (default) or ``momentum``.
        prefix: The backbone's key prefix in lightly / torchvision checkpoints (default: detected).
        model_args: ``timm.create_model`` arguments the weights need (recorded in config.json).
        base_model: Hub repository of the source weights, for the card's ``base_model``.
        allow_pickle: Load a checkpoint that ``torch.load(weights_only=True)`` refuses with full unpickling, which
            can run code from the file: only for files you trust.

    Raises:
        ConversionError: Unknown format, unreadable file, or weights that do not fit the architecture; the message
            says what to pass instead.
    """
    source = _source_format(source_format)
    _check_options(source, encoder, prefix, image_size)
    method_name, method_config = _method(source, method)
    path = Path(checkpoint).expanduser()
    target = Path(output_dir).expanduser().resolve()
    if (target / SSL_DIR).exists():
        raise ConversionError(
            f"{target} holds {SSL_DIR}/, the state of a trained method, which a converted backbone would not match: "
            "write to a new folder."
        )
    architecture = check_architecture(backbone) if backbone is not None else None
    extraction = source.extract(
        load_checkpoint(path, allow_pickle=allow_pickle),
        architecture=architecture,
        model_args=dict(model_args or {}),
        encoder=encoder,
        prefix=prefix,
    )
    architecture = architecture or extraction.architecture
    keys = f"{extraction.prefix}*" if extraction.prefix else "all tensors"
    where = f"The weights of {extraction.description} ({keys} of {path.name})"
    if architecture is None:
        raise ConversionError(
            f"{where} are not a standard ViT or ResNet, so their timm architecture is unknown: pass it as "
            "--backbone (e.g. --backbone vit_small_patch16_224)."
        )
    arguments = {**extraction.model_args, **(model_args or {})}
    arguments = {**native_size_args(architecture, arguments, extraction.state), **arguments}
    model, _ = build_backbone(architecture, arguments, extraction.state, where)
    if image_size is not None:
        fit_input_size(model, image_size)
    used = {extraction.source_keys[name] for name in model.state_dict() if name in extraction.source_keys}
    dropped = [key for key in extraction.weights if key not in used]
    dropped_groups = group_keys(dropped, used)
    license = license if license is not None else source.license
    if license is None:
        logger.warning("No licence recorded for %s: pass --license with that of the source weights.", path.name)
    ssl_block = {
        "version": __version__,
        "method": method_name,
        "method_config": method_config,
        "backbone_source": None,
        "published_backbone": "backbone",
        "training": None,
        "evaluation": None,
        "dataset": None,
        "license": license,
        "converted_from": {
            "file": path.name,
            "sha256": file_sha256(path),
            "format": source.name,
            "format_description": source.description,
            "weights": extraction.description,
            "prefix": extraction.prefix,
            "key_names": extraction.key_names,
            "num_tensors": len(used),
            "dropped": dropped_groups,
            "num_dropped": len(dropped),
            "ignored_entries": extraction.ignored_entries,
            "base_model": base_model,
        },
    }
    data_config = {**default_data_config(model), **source.data_config}
    if image_size is not None:
        data_config["input_size"] = (data_config["input_size"][0], image_size, image_size)
    _write_folder(model, target, data_config, ssl_block)
    return ConversionResult(
        output_dir=target,
        architecture=architecture,
        model_args=arguments,
        weights=extraction.description,
        prefix=extraction.prefix,
        num_tensors=len(used),
        dropped=dropped,
        dropped_groups=dropped_groups,
        ignored_entries=extraction.ignored_entries,
        method=method_name,
    )


def _write_folder(model: nn.Module, target: Path, data_config: dict[str, Any], ssl_block: dict[str, Any]) -> None:
    """Write config.json, model.safetensors and README.md into a staging folder, then move them into ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".ssl_hub-convert-", dir=target))
    try:
        hub_config = write_backbone(model, staging, data_config, {"ssl_hub": ssl_block})
        render_model_card(hub_config, f"local-dir:{target}").save(staging / CARD_NAME)
        for entry in staging.iterdir():
            os.replace(entry, target / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
