"""The model card: huggingface_hub's ModelCard rendered from a Jinja template in ``model_cards/``."""

from __future__ import annotations

from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ssl_hub.registry import get_method_class
from ssl_hub.version import __version__

LOSS_CURVE_NAME = "loss_curve.png"
TEMPLATE_NAME = "ssl_method.md"


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def plot_loss_curve(history: list[list[float]], path: Path) -> None:
    """Save the training loss against the step as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    steps, losses = zip(*history, strict=True)
    figure, axes = plt.subplots(figsize=(6, 3.5), dpi=100)
    axes.plot(steps, losses, color="tab:blue", linewidth=1.5)
    axes.set_xlabel("step")
    axes.set_ylabel("training loss")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _eval_results(evaluation: list[dict[str, Any]]) -> list[EvalResult]:
    return [
        EvalResult(
            task_type="image-classification",
            task_name="Image classification (frozen features)",
            dataset_type=result["dataset_id"],
            dataset_name=result["dataset_name"],
            dataset_split=result["split"],
            metric_type="accuracy",
            metric_name=result["name"],
            metric_value=round(result["value"], 2),
            metric_config=result.get("config"),
        )
        for result in evaluation
    ]


def render_model_card(hub_config: dict[str, Any], model_ref: str) -> ModelCard:
    """Render the card of a hub folder from its ``config.json`` content alone.

    Args:
        hub_config: The folder's config.json (timm's entries plus the ``ssl_hub`` block).
        model_ref: ``"hf-hub:user/repo"`` or ``"local-dir:PATH"``: how the loading code names the model.
    """
    ssl_block = hub_config["ssl_hub"]
    method_class = get_method_class(ssl_block["method"])
    training, dataset = ssl_block.get("training"), ssl_block.get("dataset")
    evaluation = ssl_block.get("evaluation") or []
    source = ssl_block.get("backbone_source") or ""
    base_model = source.removeprefix("hf-hub:").partition("@")[0] if source.startswith("hf-hub:") else None
    architecture = hub_config["architecture"]
    card_data = ModelCardData(
        library_name="timm",
        license=ssl_block.get("license"),
        tags=sorted(
            {"self-supervised", "ssl-hub", "image-feature-extraction", "timm", method_class.name, architecture}
        ),
        pipeline_tag="image-feature-extraction",
        datasets=[dataset["hub_id"]] if dataset and dataset.get("hub_id") else None,
        base_model=base_model,
        model_name=f"{architecture}-{method_class.name}",
        eval_results=_eval_results(evaluation) or None,
    )
    pretrained_cfg = hub_config["pretrained_cfg"]
    location = model_ref.removeprefix("hf-hub:").removeprefix("local-dir:")
    template = resources.files("ssl_hub.model_cards") / TEMPLATE_NAME
    return ModelCard.from_template(
        card_data,
        template_str=template.read_text(encoding="utf-8"),
        title=f"{architecture} pretrained with {method_class.display_name}",
        method_name=method_class.name,
        method_display_name=method_class.display_name,
        paper=method_class.paper,
        method_config=ssl_block["method_config"],
        architecture=architecture,
        num_features=hub_config["num_features"],
        input_size=pretrained_cfg["input_size"][-1],
        mean=tuple(round(m, 4) for m in pretrained_cfg["mean"]),
        std=tuple(round(s, 4) for s in pretrained_cfg["std"]),
        timm_name=model_ref,
        transformers_name=location,
        ssl_hub_name=model_ref,
        base_model=base_model,
        dataset=dataset,
        training=training,
        evaluation=evaluation,
        loss_curve=LOSS_CURVE_NAME if has_loss_curve(training) else None,
        versions={
            "ssl_hub": ssl_block.get("version", __version__),
            "timm": _version("timm"),
            "transformers": _version("transformers"),
            "torch": _version("torch"),
        },
    )


def has_loss_curve(training: dict[str, Any] | None) -> bool:
    """Whether a training summary has enough points for a loss curve."""
    return training is not None and len(training.get("loss_history") or []) >= 2
