"""Publishing through the local Hub server, and loading what was published in fresh processes."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import timm
import torch
from hub_server import HubState
from huggingface_hub import HfApi, ModelCard
from test_methods import train_a_few_steps

import ssl_hub
from ssl_hub.hub.card import card_is_generated
from ssl_hub.hub.push import HubPushError, push_folder

TOKEN = "hf_ssl_hub_test_secret_token_0123456789"


def run_python(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          env=environment, timeout=600)  # fmt: skip


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def folder_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.fixture(scope="module")
def pretrained_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hub folder from `ssl-hub pretrain` on the demo set (with its kNN results), test_resnet, 2 steps."""
    out = tmp_path_factory.mktemp("pretrained") / "run"
    command = [sys.executable, "-m", "ssl_hub.cli", "pretrain", "--method", "simclr", "--backbone", "test_resnet",
               "--output-dir", str(out), "--max_steps", "2", "--per_device_train_batch_size", "16",
               "--disable_tqdm", "true"]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return out


@pytest.fixture
def pretrained(pretrained_once: Path, tmp_path: Path) -> Path:
    """A private copy of that folder for one test."""
    return Path(shutil.copytree(pretrained_once, tmp_path / "run"))


def test_pretrain_push_then_load_everywhere_in_a_fresh_process(hub: HubState, tmp_path: Path) -> None:
    repo = "alice/test-resnet-simclr"
    out = tmp_path / "run"
    command = [sys.executable, "-m", "ssl_hub.cli", "pretrain", "--method", "simclr", "--backbone", "test_resnet",
               "--output-dir", str(out), "--max_steps", "2", "--per_device_train_batch_size", "16",
               "--disable_tqdm", "true", "--push-to-hub", repo]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert {"config.json", "model.safetensors", "README.md", "ssl/model.safetensors"} <= set(hub.files(repo))
    assert not any(name.startswith("checkpoint-") for name in hub.files(repo))

    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = timm.create_model(f"local-dir:{out}", pretrained=True).eval()(images)
    torch.save({"images": images, "expected": expected}, tmp_path / "expected.pt")

    consumer = run_python(
        f"""
        import json, torch, timm
        from PIL import Image
        data = torch.load({str(tmp_path / "expected.pt")!r})
        result = {{}}
        model = timm.create_model("hf-hub:{repo}", pretrained=True).eval()
        with torch.no_grad():
            result["timm_max_diff"] = (model(data["images"]) - data["expected"]).abs().max().item()

        from transformers import AutoImageProcessor, AutoModelForImageClassification, Trainer, TrainingArguments
        processor = AutoImageProcessor.from_pretrained("{repo}")
        pixels = processor([Image.new("RGB", (40, 30), (i * 30, 90, 200)) for i in range(4)], return_tensors="pt")
        result["pixel_shape"] = list(pixels["pixel_values"].shape)
        classifier = AutoModelForImageClassification.from_pretrained("{repo}", num_labels=3)
        with torch.no_grad():
            pooled = classifier.eval().timm_model.forward_head(
                classifier.timm_model.forward_features(data["images"]), pre_logits=True)
        result["transformers_max_diff"] = (pooled - data["expected"]).abs().max().item()
        rows = [{{"pixel_values": p, "labels": i % 3}} for i, p in enumerate(pixels["pixel_values"])]
        args = TrainingArguments(output_dir={str(tmp_path / "finetune")!r}, max_steps=2, per_device_train_batch_size=2,
                                 use_cpu=True, save_strategy="no", report_to="none", disable_tqdm=True)
        head = classifier.timm_model.get_classifier().weight
        head_before = head.detach().clone()
        finetuned = Trainer(model=classifier.train(), args=args, train_dataset=rows).train()
        result["finetune_loss"], result["finetune_steps"] = finetuned.training_loss, finetuned.global_step
        result["finetune_moved_head"] = not torch.equal(head_before, head.detach())

        from transformers import DetrConfig, DetrForObjectDetection
        from ssl_hub.hub.downstream import TimmFPNBackbone, load_backbone_weights
        detr = DetrForObjectDetection(DetrConfig(
            backbone="hf-hub:{repo}", use_timm_backbone=True, num_labels=3, d_model=32, encoder_layers=1,
            decoder_layers=1, encoder_ffn_dim=32, decoder_ffn_dim=32, num_queries=4, encoder_attention_heads=2,
            decoder_attention_heads=2))
        result["detr_filled"] = load_backbone_weights(detr, "hf-hub:{repo}")
        published = timm.create_model("hf-hub:{repo}", pretrained=True, features_only=True,
                                      out_indices=tuple(detr.model.backbone.model.feature_info.out_indices))
        reference, loaded = published.state_dict(), detr.model.backbone.model.state_dict()
        result["detr_equal"] = all(torch.equal(loaded[k], reference[k]) for k in loaded)
        labels = [{{"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}}] * 2
        loss = detr(pixel_values=torch.randn(2, 3, 64, 64), labels=labels).loss
        loss.backward()
        result["detr_loss"] = loss.item()
        result["detr_backbone_grad"] = any(
            p.grad is not None and p.grad.abs().sum().item() > 0 for p in detr.model.backbone.parameters())

        from torchvision.models.detection import FasterRCNN
        backbone = TimmFPNBackbone("hf-hub:{repo}", out_channels=32)
        detector = FasterRCNN(backbone, num_classes=3, rpn_anchor_generator=backbone.anchor_generator(),
                              box_roi_pool=backbone.roi_pool(), min_size=64, max_size=96).train()
        targets = [{{"boxes": torch.tensor([[4.0, 4.0, 30.0, 40.0]]), "labels": torch.tensor([1])}}] * 2
        losses = detector([torch.rand(3, 64, 80), torch.rand(3, 64, 80)], targets)
        sum(losses.values()).backward()
        result["faster_rcnn_losses"] = {{k: v.item() for k, v in losses.items()}}
        result["faster_rcnn_backbone_grad"] = any(
            p.grad is not None and p.grad.abs().sum().item() > 0 for p in backbone.parameters())
        print(json.dumps(result))
        """,
        HF_HOME=str(tmp_path / "consumer-home"),
    )
    assert consumer.returncode == 0, consumer.stderr[-3000:]
    result = json.loads(consumer.stdout.strip().splitlines()[-1])
    assert result["timm_max_diff"] == 0.0
    assert result["transformers_max_diff"] < 1e-5  # same weights; float32 rounding of other memory alignment
    assert result["pixel_shape"] == [4, 3, 32, 32]
    assert math.isfinite(result["finetune_loss"])
    assert result["finetune_steps"] == 2
    assert result["finetune_moved_head"] is True
    assert result["detr_filled"] == ["model.backbone.model"]
    assert result["detr_equal"] is True
    assert math.isfinite(result["detr_loss"])
    assert result["detr_backbone_grad"] is True  # the loaded backbone is trained, not frozen
    assert set(result["faster_rcnn_losses"]) == {"loss_classifier", "loss_box_reg", "loss_objectness",
                                                 "loss_rpn_box_reg"}  # fmt: skip
    assert all(math.isfinite(value) for value in result["faster_rcnn_losses"].values())
    assert result["faster_rcnn_backbone_grad"] is True


def test_pushed_card_parses_shows_eval_results_and_no_token(hub: HubState, pretrained: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    hub.token = TOKEN
    url = push_folder(pretrained, "bob/resnet-simclr", token=TOKEN)
    assert url.startswith(os.environ["HF_ENDPOINT"])
    files = hub.files("bob/resnet-simclr")
    card_text = files["README.md"].decode()
    card = ModelCard(card_text)
    results = card.data.eval_results
    assert results is not None
    assert results[0].metric_type == "accuracy"
    assert results[0].dataset_type == "zalando-datasets/fashion_mnist"
    assert 'timm.create_model("hf-hub:bob/resnet-simclr", pretrained=True)' in card_text
    assert card_is_generated(card_text)
    assert all(TOKEN.encode() not in data for data in files.values())
    assert all(TOKEN.encode() not in p.read_bytes() for p in pretrained.rglob("*") if p.is_file())
    assert TOKEN not in caplog.text


def test_second_push_updates_weights_and_keeps_a_hand_edited_card(hub: HubState, tmp_path: Path) -> None:
    repo = "carol/resnet-simclr"
    method = ssl_hub.create_method("simclr", backbone="test_resnet")
    method.push_to_hub(repo)
    first_weights = hub.files(repo)["model.safetensors"]
    with torch.no_grad():
        next(method.backbone.parameters()).add_(1.0)
    method.push_to_hub(repo, commit_message="Second round")
    assert hub.files(repo)["model.safetensors"] != first_weights
    assert len(hub.repos[repo].history) == 3  # creation + one commit per push

    edited = hub.files(repo)["README.md"].decode().replace("## How to use", "## How to use\n\nOur notes.", 1)
    HfApi().upload_file(path_or_fileobj=edited.encode(), path_in_repo="README.md", repo_id=repo)
    method.push_to_hub(repo)
    assert hub.files(repo)["README.md"].decode() == edited
    method.push_to_hub(repo, overwrite_card=True)
    assert "Our notes." not in hub.files(repo)["README.md"].decode()


def test_push_to_a_branch_creates_it(hub: HubState) -> None:
    method = ssl_hub.create_method("simclr", backbone="test_resnet")
    method.push_to_hub("dave/resnet-simclr", revision="experiment")
    assert "config.json" in hub.files("dave/resnet-simclr", "experiment")
    assert "config.json" not in hub.files("dave/resnet-simclr", "main")


def test_refused_credentials_fail_clearly_and_commit_nothing(hub: HubState, pretrained: Path) -> None:
    hub.token = TOKEN
    before = folder_digest(pretrained)
    with pytest.raises(HubPushError, match="refused the credentials") as error:
        push_folder(pretrained, "erin/resnet-simclr", token="hf_wrong_token_value")
    assert "hf_wrong_token_value" not in str(error.value)
    assert "is unchanged" in str(error.value)
    assert hub.repos == {}
    assert folder_digest(pretrained) == before


def test_server_error_during_commit_leaves_no_partial_state(hub: HubState, pretrained: Path) -> None:
    repo = "frank/resnet-simclr"
    push_folder(pretrained, repo)
    history = list(hub.repos[repo].history)
    before = folder_digest(pretrained)
    hub.fail_commits.append(500)
    with pytest.raises(HubPushError, match=r"answered with an error \(500\)"):
        push_folder(pretrained, repo, commit_message="will fail")
    assert hub.repos[repo].history == history
    assert folder_digest(pretrained) == before
    push_folder(pretrained, repo, commit_message="works again")
    assert len(hub.repos[repo].history) == len(history) + 1


def test_unreachable_hub_fails_clearly_from_the_command_line(pretrained: Path) -> None:
    before = folder_digest(pretrained)
    run = subprocess.run(
        [sys.executable, "-m", "ssl_hub.cli", "push", str(pretrained), "--repo-id", "gina/x", "--token", TOKEN],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_ENDPOINT": closed_port_url(), "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert run.returncode == 1
    assert "could not be reached" in run.stderr
    assert "Traceback" not in run.stderr
    assert TOKEN not in run.stderr + run.stdout
    assert folder_digest(pretrained) == before


def test_load_method_from_the_hub_and_offline_from_the_cache(hub: HubState, tmp_path: Path) -> None:
    repo = "hana/resnet-simclr"
    method = ssl_hub.create_method("simclr", backbone="test_resnet")
    train_a_few_steps(method, tmp_path / "run", steps=1)
    method.push_to_hub(repo)
    restored = ssl_hub.load_method(f"hf-hub:{repo}")
    for key, value in method.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[key], value, rtol=0, atol=0, msg=key)

    script = f"""
        import timm, torch, ssl_hub
        from transformers import AutoModelForImageClassification
        timm.create_model("hf-hub:{repo}", pretrained=True)
        AutoModelForImageClassification.from_pretrained("{repo}", num_labels=2)
        ssl_hub.load_method("hf-hub:{repo}")
        print("loaded")
        """
    home = str(tmp_path / "home")
    online = run_python(script, HF_HOME=home)
    assert online.returncode == 0, online.stderr[-3000:]
    offline = run_python(script, HF_HOME=home, HF_HUB_OFFLINE="1", HF_ENDPOINT=closed_port_url())
    assert offline.returncode == 0, offline.stderr[-3000:]
    assert offline.stdout.strip().endswith("loaded")
