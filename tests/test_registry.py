"""Registry, method construction and its error messages."""

from __future__ import annotations

import dataclasses

import pytest
import timm
import torch
from transformers import TrainingArguments

import ssl_hub
from ssl_hub.cli import PretrainCommand
from ssl_hub.modules.backbone import UnknownBackboneError
from ssl_hub.registry import UnknownMethodError


def test_simclr_is_registered() -> None:
    assert "simclr" in ssl_hub.list_methods()
    assert ssl_hub.get_method_class("SimCLR") is ssl_hub.get_method_class("sim-clr")


def test_unknown_method_suggests_close_names() -> None:
    with pytest.raises(UnknownMethodError, match=r"Unknown method 'simclrr'\. Did you mean 'simclr'\?"):
        ssl_hub.create_method("simclrr", backbone="test_resnet")


def test_unknown_backbone_names_close_timm_architectures() -> None:
    with pytest.raises(UnknownBackboneError, match=r"resnet181.*Close matches: .*resnet18"):
        ssl_hub.create_method("simclr", backbone="resnet181")


def test_unknown_method_argument_lists_the_known_ones() -> None:
    with pytest.raises(TypeError, match=r"unknown argument\(s\) temprature.*temperature"):
        ssl_hub.create_method("simclr", backbone="test_resnet", temprature=0.1)


@pytest.mark.parametrize("value", [0.0, -1.0])
def test_bad_temperature_fails_at_construction(value: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        ssl_hub.create_method("simclr", backbone="test_resnet", temperature=value)


def test_backbone_feature_width_is_read_from_the_model() -> None:
    method = ssl_hub.create_method("simclr", backbone="test_convnext")
    features = method.backbone(torch.randn(2, 3, 32, 32))
    assert method.feature_dim == features.shape[1] == method.projection_head.layers[0].in_features


def test_a_timm_model_instance_loses_its_classifier() -> None:
    model = timm.create_model("test_resnet", num_classes=7)
    method = ssl_hub.create_method("simclr", backbone=model)
    assert method.backbone is model
    assert model.num_classes == 0
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, method.feature_dim)


@pytest.mark.parametrize("name", ssl_hub.list_methods())
def test_method_arguments_do_not_collide_with_other_cli_flags(name: str) -> None:
    fields = {f.name for f in dataclasses.fields(ssl_hub.get_method_class(name).config_class)}
    others = {f.name for f in dataclasses.fields(TrainingArguments)} | {
        f.name for f in dataclasses.fields(PretrainCommand)
    }
    assert not fields & others
