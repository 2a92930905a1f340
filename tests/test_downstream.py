"""Published backbones inside transformers' and torchvision's detection / segmentation models."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from torchvision.models.detection import FasterRCNN, MaskRCNN

import ssl_hub
from ssl_hub.hub.downstream import TimmFPNBackbone, load_backbone_weights


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("downstream")
    out = {}
    for backbone in ("test_resnet", "test_vit"):
        method = ssl_hub.create_method("simclr", backbone=backbone)
        with torch.no_grad():  # weights no random init could produce: a missed load cannot pass
            for parameter in method.backbone.parameters():
                parameter.add_(0.5)
        out[backbone] = method.save_pretrained(root / backbone)
    return out


def test_upernet_gets_every_backbone_weight_and_trains(folders: dict[str, Path]) -> None:
    from transformers import TimmBackboneConfig, UperNetConfig, UperNetForSemanticSegmentation

    folder = folders["test_resnet"]
    config = UperNetConfig(
        backbone_config=TimmBackboneConfig(backbone=f"local-dir:{folder}", out_indices=(1, 2, 3, 4)),
        hidden_size=32, use_auxiliary_head=False, num_labels=3,
    )  # fmt: skip
    model = UperNetForSemanticSegmentation(config)
    assert load_backbone_weights(model, str(folder)) == ["backbone._backbone"]
    reference = timm.create_model(f"local-dir:{folder}", pretrained=True, features_only=True, out_indices=(1, 2, 3, 4))
    loaded = model.backbone._backbone.state_dict()
    assert loaded.keys() == reference.state_dict().keys()
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0, msg=key)
    output = model(pixel_values=torch.randn(2, 3, 64, 64), labels=torch.randint(0, 3, (2, 64, 64)))
    output.loss.backward()
    assert torch.isfinite(output.loss)
    # the segmentation loss trains the loaded backbone: transformers leaves it unfrozen
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone._backbone.parameters())


def test_a_backbone_of_another_architecture_is_refused(folders: dict[str, Path]) -> None:
    from transformers import TimmBackboneConfig, UperNetConfig, UperNetForSemanticSegmentation

    backbone = TimmBackboneConfig(backbone="test_convnext", out_indices=(0, 1, 2, 3))
    model = UperNetForSemanticSegmentation(UperNetConfig(backbone_config=backbone, hidden_size=16, num_labels=2,
                                                         use_auxiliary_head=False))  # fmt: skip
    with pytest.raises(ValueError, match="has no weights for"):
        load_backbone_weights(model, str(folders["test_resnet"]))
    with pytest.raises(ValueError, match="no timm feature extractor"):
        load_backbone_weights(torch.nn.Linear(2, 2), str(folders["test_resnet"]))


@pytest.mark.parametrize("backbone", ["test_resnet", "test_vit"])
def test_torchvision_faster_rcnn_over_the_published_backbone_trains(folders: dict[str, Path], backbone: str) -> None:
    fpn = TimmFPNBackbone(str(folders[backbone]), out_channels=32)
    published = timm.create_model(f"local-dir:{folders[backbone]}", pretrained=True).state_dict()
    body = {k.removeprefix("model."): v for k, v in fpn.body.state_dict().items()}
    shared = [k for k in body if k in published]
    assert len(shared) > 0.8 * len(body)
    assert all(torch.equal(body[k], published[k]) for k in shared)
    detector = FasterRCNN(fpn, num_classes=3, rpn_anchor_generator=fpn.anchor_generator(),
                          box_roi_pool=fpn.roi_pool(), min_size=64, max_size=96).train()  # fmt: skip
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 40.0]]), "labels": torch.tensor([1])}] * 2
    losses = detector([torch.rand(3, 64, 80), torch.rand(3, 48, 64)], targets)  # any image size, ViTs included
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())


def test_torchvision_mask_rcnn_runs_over_the_pyramid(folders: dict[str, Path]) -> None:
    fpn = TimmFPNBackbone(str(folders["test_resnet"]), out_channels=32)
    detector = MaskRCNN(fpn, num_classes=3, rpn_anchor_generator=fpn.anchor_generator(), box_roi_pool=fpn.roi_pool(),
                        mask_roi_pool=fpn.roi_pool(14), min_size=64, max_size=96).eval()  # fmt: skip
    with torch.no_grad():
        detections = detector([torch.rand(3, 64, 64)])
    assert set(detections[0]) == {"boxes", "labels", "scores", "masks"}
