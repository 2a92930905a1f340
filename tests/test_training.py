"""Trainer integration beyond the happy path: a NaN loss stops training without losing the last good state."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import random_images
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

import ssl_hub
from ssl_hub.data import ArrayImageDataset
from ssl_hub.methods import SimCLR, SSLMethodOutput
from ssl_hub.training import NonFiniteLossError
from ssl_hub.training.callbacks import CheckpointedHistory


def cpu_run(output_dir: Path, **overrides: Any) -> dict[str, Any]:
    """TrainingArguments of a short, quiet CPU run of batches of 8 that saves no checkpoint, with ``overrides``."""
    return {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": 8,
        "use_cpu": True,
        "save_strategy": "no",
        "disable_tqdm": True,
        **overrides,
    }


class NaNAtThirdStep(SimCLR):
    """SimCLR whose third batch holds NaN pixels (so activations, BN statistics and the loss turn NaN)."""

    calls = 0

    def forward(self, views: Sequence[torch.Tensor]) -> SSLMethodOutput:
        self.calls += 1
        if self.calls == 3:
            views = [v * float("nan") for v in views]
        return super().forward(views)


class Snapshots(TrainerCallback):
    def __init__(self) -> None:
        self.states: dict[int, dict[str, torch.Tensor]] = {}

    def on_step_end(self, args: Any, state: Any, control: Any, model: torch.nn.Module, **kwargs: Any) -> None:
        self.states[state.global_step] = copy.deepcopy(model.state_dict())


def test_nan_loss_stops_training_keeps_the_last_finite_weights_and_saves_them(tmp_path: Path) -> None:
    method = NaNAtThirdStep("test_resnet")
    snapshots = Snapshots()
    with pytest.raises(
        NonFiniteLossError, match=r"step 3.*checkpoint-3.*--resume_from_checkpoint.*lower learning rate needs a new run"
    ) as error:
        ssl_hub.pretrain(
            method,
            ArrayImageDataset(random_images(32, 32)),
            cpu_run(tmp_path, max_steps=10),
            image_size=32,
            callbacks=[snapshots],
        )
    assert method.calls == 3  # stopped at once
    final = dict(method.named_parameters())
    last_good = snapshots.states[2]
    for key, value in final.items():  # the NaN step changed no weight
        torch.testing.assert_close(value.detach(), last_good[key], rtol=0, atol=0, msg=key)
    assert all(torch.isfinite(v).all() for v in method.state_dict().values() if v.is_floating_point())
    assert (tmp_path / "checkpoint-3" / "model.safetensors").is_file()
    assert not (tmp_path / "config.json").exists(), "a failed run must not publish a hub folder"
    assert "checkpoint-3" in str(error.value)


def test_weight_decay_spares_biases_and_normalisation_parameters(tmp_path: Path) -> None:
    method = ssl_hub.create_method("simclr", backbone="test_resnet")
    result = ssl_hub.pretrain(
        method,
        ArrayImageDataset(random_images(16, 32)),
        cpu_run(tmp_path, max_steps=1, weight_decay=0.1, optim="sgd"),
        image_size=32,
        save=False,
    )
    decayed, spared = result.trainer.optimizer.param_groups
    assert decayed["weight_decay"] == 0.1
    assert spared["weight_decay"] == 0.0
    names = {id(p): n for n, p in method.named_parameters()}
    assert {names[id(p)] for p in spared["params"]} == {n for n, p in method.named_parameters() if p.ndim <= 1}
    assert "backbone.bn1.weight" in {names[id(p)] for p in spared["params"]}
    assert all(p.ndim > 1 for p in decayed["params"])
    assert type(result.trainer.optimizer.optimizer).__name__ == "SGD"  # the optimizer --optim names


@pytest.mark.parametrize(
    ("name", "overrides", "factor"),
    [
        ("dino", {"per_device_train_batch_size": 256}, 4.0),  # linear: "5e-4 per 256 images"
        ("dino", {"per_device_train_batch_size": 32, "gradient_accumulation_steps": 4}, 2.0),
        ("dinov2", {"per_device_train_batch_size": 256}, 2.0),  # square root of the batch ratio
        ("simclr", {"per_device_train_batch_size": 256}, 1.0),  # the fixed Adam rate
        ("dino", {}, 1.0),  # the recipe's own batch
    ],
)
def test_recipe_learning_rate_follows_the_global_batch(name: str, overrides: dict[str, Any], factor: float) -> None:
    method = ssl_hub.create_method(name, "test_vit", **({"output_dim": 64} if name.startswith("dino") else {}))
    recipe = type(method).default_training_arguments()["learning_rate"]
    args = ssl_hub.training_arguments(method, output_dir="unused", report_to="none", **overrides)
    assert args.learning_rate == pytest.approx(recipe * factor)


@pytest.mark.parametrize(
    ("overrides", "momentum"),
    [
        ({}, 0.9),  # SimSiam's recipe: SGD with optim_args "momentum=0.9"
        ({"optim": "sgd"}, 0.9),  # the recipe's optimizer named again
        ({"optim": "sgd", "optim_args": "momentum=0.5"}, 0.5),
        ({"optim": "rmsprop"}, 0.0),  # another optimizer: not SGD's momentum but its own default
    ],
)
def test_the_recipe_optimizer_arguments_apply_to_its_optimizer_only(overrides: dict[str, Any], momentum: float) -> None:
    method = ssl_hub.create_method("simsiam", "test_resnet")
    args = ssl_hub.training_arguments(method, output_dir="unused", report_to="none", **overrides)
    optimizer_class, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, method)
    assert optimizer_class.__name__ == ("RMSprop" if overrides.get("optim") == "rmsprop" else "SGD")
    assert kwargs.get("momentum", 0.0) == momentum


@pytest.mark.parametrize(
    ("overrides", "timm_optimizer", "timm_optimizer_kwargs", "rate"),
    [  # NNCLR's recipe: timm's larc, trust coefficient 0.02, 0.4 per 256 images (batch 128 here)
        ({}, "larc", {"trust_coeff": 0.02}, 0.2),
        ({"timm_optimizer_kwargs": {"trust_coeff": 0.001}}, "larc", {"trust_coeff": 0.001}, 0.2),  # replaced
        ({"timm_optimizer": "lars", "learning_rate": 0.3}, "lars", None, 0.3),  # larc's arguments stay larc's
        ({"optim": "sgd", "learning_rate": 0.05}, None, None, 0.05),  # choosing optim leaves timm's out
        ({"timm_optimizer": None, "learning_rate": 1e-3}, None, None, 1e-3),
    ],
)
def test_a_recipes_timm_optimizer_is_the_default_unless_the_run_chooses_its_optimizer(
    overrides: dict[str, Any], timm_optimizer: str | None, timm_optimizer_kwargs: dict[str, Any] | None, rate: float
) -> None:
    method = ssl_hub.create_method("nnclr", "test_resnet")
    batch = {"per_device_train_batch_size": 128}
    args = ssl_hub.training_arguments(method, output_dir="unused", report_to="none", **batch, **overrides)
    assert isinstance(args, ssl_hub.PretrainingArguments)
    assert (args.timm_optimizer, args.timm_optimizer_kwargs) == (timm_optimizer, timm_optimizer_kwargs)
    assert args.learning_rate == pytest.approx(rate)


def test_a_backbone_recipe_may_set_the_optimizer_its_rate_and_the_weight_decay_only() -> None:
    """Every run leaves those to the recipe unless it gives them (the command line too: it fills them in once the
    backbone is built); a schedule that depended on the backbone would be lost on the command line."""

    class BackboneWarmup(SimCLR):
        def backbone_training_arguments(self) -> dict[str, Any]:
            return {"warmup_steps": 10}

    with pytest.raises(TypeError, match=r"set learning_rate, weight_decay, timm_optimizer, .* only.*warmup_steps"):
        ssl_hub.training_arguments(BackboneWarmup("test_resnet"), output_dir="unused", report_to="none")


@pytest.mark.parametrize(
    ("backbone", "overrides", "weight_decay"),
    [("test_resnet", {}, 5e-4), ("test_vit", {}, 5e-2), ("test_resnet", {"weight_decay": 0.1}, 0.1)],
)
def test_lejepas_weight_decay_follows_the_backbone_unless_given(
    backbone: str, overrides: dict[str, float], weight_decay: float
) -> None:
    """The official README's: 5e-2 on ViTs, 5e-4 on ResNets."""
    method = ssl_hub.create_method("lejepa", backbone, projection_hidden_dim=16, sigreg_num_vectors=8)
    args = ssl_hub.training_arguments(method, output_dir="unused", report_to="none", **overrides)
    assert args.weight_decay == weight_decay


@pytest.mark.parametrize("arguments", ["dict", "TrainingArguments"])
def test_pretrain_builds_the_recipes_timm_optimizer_from_a_dict_and_a_plain_trainingarguments_optim(
    arguments: str, tmp_path: Path
) -> None:
    """A dict merges over the recipe (NNCLR: LARS with LARC's clipping); finished ``TrainingArguments`` are used as
    they are, so a plain one trains with its ``optim``."""
    method = ssl_hub.create_method("nnclr", "test_resnet", memory_bank_size=16)
    run = cpu_run(tmp_path, max_steps=1, report_to="none")
    result = ssl_hub.pretrain(
        method,
        ArrayImageDataset(random_images(8, 32)),
        run if arguments == "dict" else TrainingArguments(**run),
        image_size=32,
        knn=False,
        save=False,
    )
    optimizer = result.trainer.optimizer.optimizer
    if arguments == "dict":
        assert type(optimizer).__name__ == "Lars"
        assert (optimizer.defaults["trust_clip"], optimizer.defaults["trust_coeff"]) == (True, 0.02)
        assert result.training["optimizer"] == "timm larc"
    else:
        assert type(optimizer).__name__ == "AdamW"
        assert result.training["optimizer"] == "adamw_torch_fused"


def test_a_learning_rate_the_user_sets_is_never_scaled() -> None:
    method = ssl_hub.create_method("dino", "test_resnet", output_dim=64)
    args = ssl_hub.training_arguments(
        method, output_dir="unused", report_to="none", per_device_train_batch_size=256, learning_rate=0.01
    )
    assert args.learning_rate == 0.01


def test_a_methods_loss_terms_are_logged_by_the_trainer_and_sum_to_its_loss(tmp_path: Path) -> None:
    method = ssl_hub.create_method("vicreg", backbone="test_resnet", projection_hidden_dim=32, projection_output_dim=16)
    result = ssl_hub.pretrain(
        method,
        ArrayImageDataset(random_images(32, 32)),
        # the logged terms average micro-batches, as the logged loss does
        cpu_run(tmp_path, max_steps=4, gradient_accumulation_steps=2, logging_steps=2),
        image_size=32,
        save=False,
    )
    history = result.trainer.state.log_history
    terms = {entry["step"]: entry for entry in history if "loss_variance" in entry}
    losses = {entry["step"]: entry["loss"] for entry in history if "loss" in entry}
    assert sorted(terms) == sorted(losses) == [2, 4]
    for step, entry in terms.items():
        parts = [entry[f"loss_{name}"] for name in ("invariance", "variance", "covariance")]
        assert all(part > 0 for part in parts)
        assert sum(parts) == pytest.approx(losses[step], rel=1e-5)
        assert entry["embedding_std"] > 0
    assert result.training["final_metrics"] == {k: v for k, v in terms[4].items() if k not in ("epoch", "step")}


def test_transform_kwargs_beside_a_transform_are_refused_before_anything_runs(tmp_path: Path) -> None:
    method = ssl_hub.create_method("simclr", "test_resnet")
    with pytest.raises(ValueError, match="transform_kwargs are arguments of the method's default transform"):
        ssl_hub.pretrain(
            method,
            ArrayImageDataset(random_images(8, 32)),
            {"output_dir": str(tmp_path / "run"), "max_steps": 1, "use_cpu": True},
            transform=method.make_transform(input_size=32),
            transform_kwargs={"gaussian_blur": 0.0},  # would be silently ignored by the given transform
        )
    assert not (tmp_path / "run").exists()


class ViewsWithoutRepr:
    """A user's transform whose class defines no ``__repr__``: Python's default names a memory address."""

    def __init__(self, views: Any) -> None:
        self.views = views

    def __call__(self, image: Any) -> Any:
        return self.views(image)


def test_the_record_names_a_transform_without_a_repr_by_its_class_not_its_address(tmp_path: Path) -> None:
    method = ssl_hub.create_method("simclr", "test_resnet")
    transform = ViewsWithoutRepr(method.make_transform(input_size=32))
    assert " at 0x" in repr(transform)
    result = ssl_hub.pretrain(
        method, ArrayImageDataset(random_images(8, 32)), cpu_run(tmp_path, max_steps=1), transform=transform, save=False
    )
    assert result.training["augmentation"] == f"<{ViewsWithoutRepr.__module__}.ViewsWithoutRepr object>"


class GradientsBeforeTheStep(TrainerCallback):
    """The named parameters and their gradients just before the (first) optimizer step."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = names
        self.weights: dict[str, torch.Tensor] = {}
        self.gradients: dict[str, torch.Tensor] = {}

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        parameters = dict(kwargs["model"].named_parameters())
        for name in self.names:
            self.weights[name] = parameters[name].detach().double().clone()
            self.gradients[name] = parameters[name].grad.detach().double().clone()


def test_a_timm_optimizer_steps_the_methods_parameter_groups_as_lars_prescribes(tmp_path: Path) -> None:
    """LARS (You et al., 2017) over the method's groups: a kernel moves by lr * trust * (g + wd * w) with
    trust = eta * |w| / (|g| + wd * |w|); a BatchNorm bias has neither decay nor adaptation (BYOL's and SimCLR's
    rule)."""
    method = ssl_hub.create_method("simclr", backbone="test_resnet")
    kernel, bias = "backbone.conv1.0.weight", "backbone.conv1.1.bias"  # a convolution, a BatchNorm
    before_step = GradientsBeforeTheStep([kernel, bias])
    rate, weight_decay, eta = 0.5, 0.1, 0.02
    result = ssl_hub.pretrain(
        method,
        ArrayImageDataset(random_images(16, 32)),
        cpu_run(
            tmp_path,
            max_steps=1,
            learning_rate=rate,
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=weight_decay,
            timm_optimizer="lars",
            timm_optimizer_kwargs={"trust_coeff": eta},
        ),
        image_size=32,
        callbacks=[before_step],
        save=False,
    )
    assert type(result.trainer.optimizer.optimizer).__name__ == "Lars"
    assert (result.training["optimizer"], result.training["optimizer_arguments"]) == ("timm lars", f"trust_coeff={eta}")
    after = dict(method.named_parameters())
    w, g = before_step.weights[kernel], before_step.gradients[kernel]
    trust = eta * w.norm() / (g.norm() + weight_decay * w.norm())
    expected = w - rate * trust * (g + weight_decay * w)  # the first step: the momentum buffer is the update itself
    torch.testing.assert_close(after[kernel].detach().double(), expected, rtol=1e-5, atol=1e-7)
    assert (after[kernel].detach().double() - w).abs().max() > 1e-6  # it moved
    w, g = before_step.weights[bias], before_step.gradients[bias]
    torch.testing.assert_close(after[bias].detach().double(), w - rate * g, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("overrides", "optimizer", "optimizer_kwargs", "message"),
    [
        ({}, "lars", {}, "give the learning rate too"),  # the recipe's AdamW rate is no LARS rate
        ({"learning_rate": 0.3}, "larz", {}, "timm has no optimizer named 'larz'"),
        ({"learning_rate": 0.3}, "lars", {"trust": 0.02}, "do not fit timm's 'lars'.*'trust'"),
        ({}, None, {"trust_coeff": 0.02}, "name it with timm_optimizer too"),  # not silently dropped
        ({"learning_rate": 0.3, "fsdp": "full_shard"}, "lars", {}, "cannot be used under DeepSpeed or FSDP"),
        ({"learning_rate": 0.3, "weight_decay": 0.0}, "larc", {}, "adapts the learning rate only of parameters"),
    ],
)
def test_a_timm_optimizer_that_cannot_be_built_is_refused_before_anything_runs(
    overrides: dict[str, Any], optimizer: str | None, optimizer_kwargs: dict[str, Any], message: str, tmp_path: Path
) -> None:
    method = ssl_hub.create_method("simclr", "test_resnet")
    with pytest.raises(ValueError, match=message):
        ssl_hub.pretrain(
            method,
            ArrayImageDataset(random_images(8, 32)),
            cpu_run(
                tmp_path / "run",
                max_steps=1,
                timm_optimizer=optimizer,
                timm_optimizer_kwargs=optimizer_kwargs,
                **overrides,
            ),
        )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("optimizer", "overrides", "betas", "eps", "card"),
    [
        # LAMB keeps its own eps (1e-6) and beta1; the changed beta2 (MAE's and AIM's 0.95) reaches it
        ("lamb", {"adam_beta2": 0.95}, (0.9, 0.95), 1e-6, "betas=(0.9, 0.95)"),
        # Lion has no eps; its beta2 stays its own 0.99, not TrainingArguments' 0.999
        ("lion", {"adam_beta1": 0.8, "adam_epsilon": 1e-6}, (0.8, 0.99), None, "betas=(0.8, 0.99)"),
        ("adamw", {"adam_epsilon": 1e-6, "timm_optimizer_kwargs": {"betas": (0.5, 0.6)}}, (0.5, 0.6), 1e-6,
         "eps=1e-06,betas=(0.5, 0.6)"),  # the optimizer's own arguments win
        ("larc", {"adam_beta2": 0.95}, None, 1e-8, None),  # no betas: ignored, as by the Trainer's SGD
    ],
)  # fmt: skip
def test_the_adam_settings_a_run_changes_reach_a_timm_optimizer_of_the_adam_family(
    optimizer: str, overrides: dict[str, Any], betas: tuple[float, float] | None, eps: float | None, card: str | None,
    tmp_path: Path,
) -> None:  # fmt: skip
    method = ssl_hub.create_method("simclr", "test_resnet")
    run = cpu_run(tmp_path, max_steps=1, timm_optimizer=optimizer, learning_rate=1e-3, weight_decay=0.1, **overrides)
    images = ArrayImageDataset(random_images(8, 32))
    result = ssl_hub.pretrain(method, images, run, image_size=32, knn=False, save=False)
    defaults = result.trainer.optimizer.optimizer.defaults
    assert (defaults.get("betas"), defaults.get("eps")) == (betas, eps)
    assert result.training["optimizer_arguments"] == card


def test_a_lars_without_weight_decay_trains_when_told_to_adapt_every_rate(tmp_path: Path) -> None:
    """The remedy the refusal above names: ``always_adapt`` makes LARS adapt the undecayed parameters too."""
    method = ssl_hub.create_method("simclr", "test_resnet")
    result = ssl_hub.pretrain(
        method,
        ArrayImageDataset(random_images(8, 32)),
        cpu_run(
            tmp_path,
            max_steps=1,
            learning_rate=0.3,
            weight_decay=0.0,
            timm_optimizer="larc",
            timm_optimizer_kwargs={"always_adapt": True},
        ),
        save=False,
    )
    assert result.training["global_step"] == 1
    assert all(group["always_adapt"] for group in result.trainer.optimizer.optimizer.param_groups)


@pytest.mark.parametrize("checkpoint", [1, 2])  # mid-epoch, and at the first epoch's end
def test_a_run_resumed_from_a_checkpoint_ends_as_the_uninterrupted_run_with_a_timm_optimizer(
    tmp_path: Path, checkpoint: int
) -> None:
    """The Trainer checkpoints the timm optimizer's state (LARS's momentum buffers) and the schedule with the weights:
    resuming at step 1 or 2 of 4 ends on the weights of the run that was never interrupted. Step 2 ends the first
    epoch. Mid-epoch the Trainer restores the random state only after drawing the first resumed batch; the views are
    the same because each image's are drawn from (seed, epoch, index), not from the process's random state. The
    resumed run starts from other random weights and counts its steps, so only the checkpoint can bring it there."""
    images = ArrayImageDataset(random_images(16, 32))  # two steps of 8 per epoch

    def train(output_dir: Path, resume_from: Path | None = None) -> tuple[dict[str, torch.Tensor], list[int], Any]:
        torch.manual_seed(0 if resume_from is None else 1)
        method = ssl_hub.create_method("simclr", "test_resnet")
        arguments = cpu_run(
            output_dir,
            max_steps=4,
            learning_rate=0.5,
            save_strategy="steps",
            save_steps=1,
            timm_optimizer="lars",
            timm_optimizer_kwargs={"trust_coeff": 0.02},
        )
        if resume_from is not None:
            arguments["resume_from_checkpoint"] = str(resume_from)
        snapshots = Snapshots()  # the steps this run took
        result = ssl_hub.pretrain(
            method,
            images,
            arguments,
            image_size=32,
            callbacks=[snapshots],
            save=False,  # the checkpoints are what resuming reads; no hub folder is needed
        )
        weights = {name: value.detach().clone() for name, value in method.named_parameters()}
        return weights, sorted(snapshots.states), result.training

    uninterrupted, steps, training = train(tmp_path / "whole")
    saved_history = tmp_path / "whole" / f"checkpoint-{checkpoint}" / CheckpointedHistory.HISTORY_FILE
    saved = json.loads(saved_history.read_text())
    assert saved["seconds"] > 0
    saved["seconds"] = 1000.0  # the run up to the checkpoint took far longer than the resumed steps can
    saved_history.write_text(json.dumps(saved))
    resumed, resumed_steps, resumed_training = train(
        tmp_path / "resumed", resume_from=tmp_path / "whole" / f"checkpoint-{checkpoint}"
    )
    assert (steps, resumed_steps) == ([1, 2, 3, 4], list(range(checkpoint + 1, 5)))
    # the card of the resumed run describes the whole run: the loss of every step, the checkpoint's ones too
    assert [step for step, _ in resumed_training["loss_history"]] == [1, 2, 3, 4]
    losses = [[loss for _, loss in run["loss_history"]] for run in (resumed_training, training)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    assert resumed_training["final_loss"] == pytest.approx(training["final_loss"], rel=1e-6)
    # and its training time: the checkpoint's seconds, then this run's on the same clock
    assert resumed_training["runtime_seconds"] > 1000.0
    torch.manual_seed(0)
    initial = dict(ssl_hub.create_method("simclr", "test_resnet").named_parameters())
    for name, value in uninterrupted.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=0, msg=name)
    assert any(not torch.equal(value, initial[name]) for name, value in uninterrupted.items())  # it trained


def test_checkpointed_history_saves_every_history_and_restores_it_before_the_resumed_steps(tmp_path: Path) -> None:
    callback = CheckpointedHistory({"loss": [(1, 2.0), (2, 1.5)], "knn": [(2, 55.0)]})
    callback.earlier_seconds = 100.0  # itself resumed from a run that had trained 100 s
    args, state = TrainingArguments(output_dir=str(tmp_path), report_to="none"), TrainerState(global_step=2)
    callback.on_train_begin(args, state, TrainerControl())
    (tmp_path / "checkpoint-2").mkdir()
    callback.on_save(args, state, TrainerControl())
    loss: list[tuple[int, float]] = [(3, 1.2)]  # a resumed run that has already logged a step
    knn: list[tuple[int, float]] = []
    resumed = CheckpointedHistory({"loss": loss, "knn": knn})
    resumed.restore(tmp_path / "checkpoint-2")
    assert loss == [(1, 2.0), (2, 1.5), (3, 1.2)]
    assert knn == [(2, 55.0)]
    assert 100.0 < resumed.earlier_seconds < 100.0 + callback.seconds()
    callback.on_train_end(args, state, TrainerControl())
    assert callback.seconds() == callback.seconds()  # the clock stops with training: the card's time is the run's
