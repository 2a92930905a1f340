"""Checks shared by the tests of the masked-image teacher methods (MSN, PMSN, I-JEPA, iBOT, DINOv2): the hub round
trip of a published teacher, through timm and transformers. Their EMA update: teacher_state_checks.check_ema_follows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import timm
import torch
from conftest import random_images
from PIL import Image
from teacher_state_checks import ema_callback, pretrain_a_few_steps

import ssl_hub
from ssl_hub.data import collate_views


def check_hub_round_trip(
    method: ssl_hub.SSLMethod, tmp_path: Path, views: Sequence[torch.Tensor], state_prefixes: Sequence[str]
) -> ssl_hub.SSLMethod:
    """After a short ``pretrain``: timm ``local-dir:`` and transformers ``AutoModel`` give the published teacher's
    features, the published weights are the teacher's only, and ``load_method`` restores every tensor (those under
    ``state_prefixes`` must exist) and the same loss. Returns the restored method."""
    from transformers import AutoModel

    pretrain_a_few_steps(method, tmp_path / "run", steps=2)
    folder = method.save_pretrained(tmp_path / "hub")
    assert method.published_backbone == "teacher_backbone"
    assert method.published is method.teacher_backbone
    kept = 100 * ema_callback(method).initial_weight_share(2)
    share = f"after 2 steps it still holds {kept:.1f} % of its initial weights"
    assert share in (folder / "README.md").read_text()
    method.eval()
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = method.teacher_backbone(images)
        timm_model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
        torch.testing.assert_close(timm_model(images), expected, rtol=0, atol=0)
        encoder = AutoModel.from_pretrained(folder).eval()
        torch.testing.assert_close(encoder(pixel_values=images).pooler_output, expected, rtol=1e-5, atol=1e-6)
        student = method.backbone(images)
    assert not torch.equal(student, expected), "the student differs from the published teacher after training"
    teacher_state = method.teacher_backbone.state_dict()
    assert timm_model.state_dict().keys() == teacher_state.keys()  # no mask token, predictor or head
    for key, value in timm_model.state_dict().items():
        assert torch.equal(value, teacher_state[key]), key

    restored = ssl_hub.load_method(folder)
    assert type(restored) is type(method)
    assert restored.config == method.config
    original, loaded = method.state_dict(), restored.state_dict()
    assert original.keys() == loaded.keys()
    for prefix in state_prefixes:
        assert any(key.startswith(prefix) for key in original), prefix
    for key, value in original.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0, msg=key)
    method.train()
    restored.train()
    with torch.no_grad():
        torch.testing.assert_close(restored(views=views).loss, method(views=views).loss, rtol=0, atol=0)
    return restored


def transform_views(method: ssl_hub.SSLMethod, count: int = 4, size: int = 32) -> list[torch.Tensor]:
    """A fixed batch of the views ``method`` trains on, made by its own transform."""
    torch.manual_seed(0)
    transform = method.make_transform(input_size=size)
    items = [{"views": transform(Image.fromarray(image))} for image in random_images(count, size, seed=1)]
    return collate_views(items)["views"]
