"""The hub folder: timm's config.json + model.safetensors for the backbone, a model card, and ``ssl/`` state.

``config.json`` and ``model.safetensors`` are the one source of the backbone, loadable by timm
(``local-dir:`` / ``hf-hub:``) and transformers (timm wrapper) with no ssl_hub code; ``ssl/`` holds only what is
not the backbone (heads, teachers, queues, prototypes), so :func:`load_method` can continue pretraining.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import safetensors.torch
import timm
import torch
from safetensors import safe_open
from timm.models import get_model_input_config, save_for_hf

from ssl_hub.registry import get_method_class
from ssl_hub.version import __version__

if TYPE_CHECKING:
    from ssl_hub.methods.base import SSLMethod

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
SSL_DIR = "ssl"
FORMAT_VERSION = 1

# pretrained_cfg keys that describe this checkpoint's inputs and structure. Everything else timm carries over from
# the architecture's default tag (its licence, origin, paper, hub id) describes somebody else's checkpoint.
_PRETRAINED_CFG_KEYS = (
    "input_size",
    "fixed_input_size",
    "interpolation",
    "crop_pct",
    "crop_mode",
    "mean",
    "std",
    "num_classes",
    "pool_size",
    "first_conv",
    "classifier",
    "min_input_size",
    "test_input_size",
    "test_crop_pct",
    "custom_load",
)


_DATA_CONFIG_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


class HubFolderError(ValueError):
    """A hub folder that is malformed, truncated or names an unknown architecture; the message names the file."""


def default_data_config(backbone: torch.nn.Module) -> dict[str, Any]:
    """Preprocessing recorded when none is given: the backbone's current input size, ImageNet statistics."""
    return {
        "input_size": tuple(get_model_input_config(backbone)["input_size"]),
        "interpolation": "bicubic",
        "mean": timm.data.IMAGENET_DEFAULT_MEAN,
        "std": timm.data.IMAGENET_DEFAULT_STD,
        "crop_pct": 1.0,
        "crop_mode": "center",
    }


def write_backbone(
    backbone: torch.nn.Module, folder: Path, data_config: dict[str, Any], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write ``config.json`` + ``model.safetensors`` with timm's exporter, made loadable by transformers too.

    timm records ``model_args.num_classes``, which transformers' timm wrapper passes again next to its own
    ``num_classes`` ("got multiple values for keyword argument"); the root ``num_classes: 0`` already says it. A
    ``weight_init`` or ``fix_init`` (how the random weights were drawn, e.g. MAE's, I-JEPA's) says nothing about the
    saved ones: left out too.
    """
    save_for_hf(backbone, str(folder), safe_serialization=True, data_config=data_config)
    config_path = folder / CONFIG_NAME
    config = json.loads(config_path.read_text())
    model_args = config.pop("model_args", {})
    for key in ("num_classes", "weight_init", "fix_init"):
        model_args.pop(key, None)
    if model_args:
        config["model_args"] = model_args
    config["pretrained_cfg"] = {k: v for k, v in config["pretrained_cfg"].items() if k in _PRETRAINED_CFG_KEYS}
    config.update(extra or {})
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    return config


def save_hub_folder(
    method: SSLMethod,
    save_directory: str | Path,
    *,
    data_config: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    evaluation: list[dict[str, Any]] | None = None,
    dataset: dict[str, Any] | None = None,
    license: str | None = None,
    model_ref: str | None = None,
    overwrite_card: bool = False,
) -> Path:
    """Write the hub folder of ``method`` into ``save_directory``.

    Files are written to a staging folder first and moved into place at the end, so an error leaves an earlier
    folder intact. Other files in ``save_directory`` (Trainer checkpoints) are left alone. Each record left
    ``None`` comes from ``method.hub_info``, which ``pretrain`` and ``load_method`` fill.

    Args:
        method: The method to save.
        save_directory: Target folder.
        data_config: Preprocessing the backbone expects (``input_size``, ``mean``, ``std``, ``interpolation``,
            ``crop_pct``); defaults to :func:`default_data_config`.
        training: Training summary for config.json and the card (see ``ssl_hub.training.pretrain``).
        evaluation: Evaluation results for the card's model-index.
        dataset: ``{"name", "hub_id", "num_images", ...}`` describing the pretraining data.
        license: Licence of the weights, for the card (default apache-2.0).
        model_ref: How users load it (``"hf-hub:user/repo"``); defaults to ``"local-dir:<folder>"``.
        overwrite_card: Replace a README.md in ``save_directory`` that was edited by hand (kept otherwise).
    """
    from ssl_hub.hub.card import LOSS_CURVE_NAME, card_is_generated, has_loss_curve, plot_loss_curve, render_model_card

    target = Path(save_directory).expanduser().resolve()
    target.mkdir(parents=True, exist_ok=True)
    given = {
        "data_config": data_config,
        "training": training,
        "evaluation": evaluation,
        "dataset": dataset,
        "license": license,
    }
    info = {**method.hub_info, **{k: v for k, v in given.items() if v is not None}}
    published = method.published
    data_config = {**default_data_config(published), **info.get("data_config", {})}
    training = info.get("training")
    ssl_block = {
        "version": __version__,
        "method": method.name,
        "method_config": method.config.to_dict(),
        "backbone_source": method.backbone_source,
        "published_backbone": method.published_backbone,
        "training": training,
        "evaluation": info.get("evaluation"),
        "dataset": info.get("dataset"),
        "license": info.get("license", "apache-2.0"),
    }
    staging = Path(tempfile.mkdtemp(prefix=".ssl_hub-", dir=target))
    try:
        hub_config = write_backbone(published, staging, data_config, {"ssl_hub": ssl_block})
        _write_method_state(method, staging / SSL_DIR)
        loss_history = training["loss_history"] if training is not None and has_loss_curve(training) else None
        if loss_history is not None:
            plot_loss_curve(loss_history, staging / LOSS_CURVE_NAME)
        existing_card = target / CARD_NAME
        new_card = overwrite_card or not existing_card.is_file() or card_is_generated(existing_card.read_text("utf-8"))
        if new_card:
            render_model_card(hub_config, model_ref or f"local-dir:{target}").save(staging / CARD_NAME)
        else:
            logger.warning("Keeping %s: it was edited by hand (pass overwrite_card=True to replace it).", existing_card)
        for entry in staging.iterdir():
            _replace(entry, target / entry.name)
        if new_card and loss_history is None:  # an earlier save's curve, which the new card does not show
            (target / LOSS_CURVE_NAME).unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _ssl_state_keys(method: SSLMethod) -> list[str]:
    """Keys of ``method.state_dict()`` that ``ssl/`` holds: all but the published backbone's."""
    prefix = method.published_backbone + "."
    return [name for name in method.state_dict() if not name.startswith(prefix)]


def _write_method_state(method: SSLMethod, folder: Path) -> None:
    folder.mkdir()
    state = method.state_dict()
    state = {name: state[name].detach().contiguous().clone() for name in _ssl_state_keys(method)}
    safetensors.torch.save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    config = {
        "format": "ssl_hub.method",
        "format_version": FORMAT_VERSION,
        "ssl_hub_version": __version__,
        "method": method.name,
        "method_config": method.config.to_dict(),
    }
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")


def _replace(source: Path, destination: Path) -> None:
    """Move ``source`` over ``destination`` (a file or a folder)."""
    if destination.is_dir() and not destination.is_symlink():
        old = destination.with_name(destination.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(destination, old)
        os.replace(source, destination)
        shutil.rmtree(old)
    else:
        os.replace(source, destination)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise HubFolderError(f"{path} is missing.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise HubFolderError(f"{path} is not valid JSON (truncated or edited by hand?): {error}") from error
    if not isinstance(data, dict):
        raise HubFolderError(f"{path} must hold a JSON object, not {type(data).__name__}.")
    return data


def _check_safetensors(path: Path) -> set[str]:
    if not path.is_file():
        raise HubFolderError(f"{path} is missing.")
    try:
        with safe_open(str(path), framework="pt") as weights:
            return set(weights.keys())
    except Exception as error:  # safetensors raises its own error type for every malformed file
        raise HubFolderError(f"{path} is not a readable safetensors file (truncated?): {error}") from error


def check_backbone_folder(folder: Path) -> dict[str, Any]:
    """Validate ``config.json`` and ``model.safetensors`` of a hub folder; return the config.

    Raises:
        HubFolderError: naming the file that is missing, malformed, truncated or names an unknown architecture.
    """
    if not folder.is_dir():
        raise HubFolderError(f"{folder} is not a folder.")
    config_path = folder / CONFIG_NAME
    config = _read_json(config_path)
    architecture = config.get("architecture")
    if not isinstance(architecture, str):
        raise HubFolderError(f"{config_path} has no 'architecture' entry: it is not a timm hub config.")
    if not timm.is_model(architecture):
        raise HubFolderError(
            f"{config_path} names architecture {architecture!r}, which timm {timm.__version__} does not have "
            "(a newer timm may, or the file was edited)."
        )
    _check_safetensors(folder / WEIGHTS_NAME)
    return config


def resolve_folder(source: str | Path) -> Path:
    """A local folder for ``source``: a path, ``local-dir:PATH``, or ``hf-hub:REPO[@revision]`` (downloaded)."""
    text = str(source)
    if text.startswith("hf-hub:"):
        from huggingface_hub import snapshot_download

        repo_id, _, revision = text.removeprefix("hf-hub:").partition("@")
        return Path(snapshot_download(repo_id, revision=revision or None))
    folder = Path(text.removeprefix("local-dir:")).expanduser()
    if not folder.is_dir():
        hint = " For a Hub repository write hf-hub:" + text if text.count("/") == 1 and not folder.exists() else ""
        raise FileNotFoundError(f"{folder} is not a folder.{hint}")
    return folder.resolve()


def load_method(source: str | Path) -> SSLMethod:
    """Restore a method saved by ``save_pretrained``, with its full SSL state, to continue pretraining.

    Args:
        source: A hub folder, ``local-dir:PATH`` or ``hf-hub:REPO[@revision]``.
    """
    from ssl_hub.modules.backbone import create_backbone

    folder = resolve_folder(source)
    config_path = folder / CONFIG_NAME
    try:
        backbone = create_backbone(f"local-dir:{folder}")  # validates config.json and model.safetensors first
    except RuntimeError as error:
        raise HubFolderError(
            f"{folder / WEIGHTS_NAME} does not fit the architecture in {config_path}: {error}"
        ) from error
    ssl_config_path, ssl_weights_path = folder / SSL_DIR / CONFIG_NAME, folder / SSL_DIR / WEIGHTS_NAME
    if not (folder / SSL_DIR).is_dir():
        raise HubFolderError(
            f"{folder / SSL_DIR} is missing: this folder holds a backbone only. Start a new method from it with "
            f"ssl_hub.create_method(name, backbone='local-dir:{folder}')."
        )
    ssl_config = _read_json(ssl_config_path)
    if ssl_config.get("format") != "ssl_hub.method" or "method" not in ssl_config:
        raise HubFolderError(f"{ssl_config_path} is not an ssl_hub method config (no 'format' / 'method' entry).")
    if ssl_config.get("format_version", 0) > FORMAT_VERSION:
        raise HubFolderError(
            f"{ssl_config_path} has format version {ssl_config['format_version']}; this ssl_hub ({__version__}) "
            f"reads up to {FORMAT_VERSION}: upgrade ssl_hub."
        )
    method_class = get_method_class(ssl_config["method"])
    stored_keys = _check_safetensors(ssl_weights_path)
    try:
        method = method_class(backbone, **ssl_config.get("method_config", {}))
    except (TypeError, ValueError) as error:
        raise HubFolderError(
            f"{ssl_config_path}: its method_config does not build {method_class.name}: {error}"
        ) from error
    if method.published_backbone != "backbone":  # the published weights are the teacher's, say
        method.published.load_state_dict(backbone.state_dict())
    expected = set(_ssl_state_keys(method))
    if stored_keys != expected:
        missing, unexpected = sorted(expected - stored_keys), sorted(stored_keys - expected)
        raise HubFolderError(
            f"{ssl_weights_path} does not match {method_class.name}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}."
        )
    try:
        method.load_state_dict(safetensors.torch.load_file(str(ssl_weights_path)), strict=False)
    except RuntimeError as error:
        raise HubFolderError(f"{ssl_weights_path} does not fit {method_class.name}: {error}") from error
    hub_config = _read_json(config_path)
    record = hub_config.get("ssl_hub") or {}
    method.hub_info = {
        "data_config": {k: v for k, v in hub_config["pretrained_cfg"].items() if k in _DATA_CONFIG_KEYS},
        **{k: record[k] for k in ("training", "evaluation", "dataset", "license") if record.get(k) is not None},
    }
    return method
