"""I-JEPA: the loss against the paper's / official formula (float64 loops), multi-block masking (scales, exclusion,
seeds), the predictor, the method's loss on its own blocks, the target encoder's linear EMA in a real Trainer run and
the hub round trip of the published target encoder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from masked_image_reference import Capture, sincos_reference
from teacher_method_checks import check_hub_round_trip, transform_views
from teacher_state_checks import check_ema_follows

import ssl_hub
from ssl_hub.losses import IJEPALoss
from ssl_hub.methods import IJEPA, IJEPAPredictor
from ssl_hub.modules import MaskingRNG, UnsupportedBackboneError, multi_block_mask
from ssl_hub.training import linear_schedule, training_arguments
from ssl_hub.transforms import IJEPATransform

SMALL = {"predictor_dim": 32, "predictor_depth": 1, "predictor_num_heads": 2}


def layer_norm(values: list[float], eps: float = 1e-5) -> list[float]:
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / len(values)
    return [(v - mean) / math.sqrt(var + eps) for v in values]


def ijepa_reference(predictions: torch.Tensor, targets: torch.Tensor, loss_type: str) -> float:
    """Official train.py: h = layer_norm(target features) over the feature dim, no affine; loss = mean over all
    elements of smooth_l1(z, h) (beta 1: 0.5 d^2 if |d| < 1 else |d| - 0.5), or of (z - h)^2 (the paper's L2)."""
    total, count = 0.0, 0
    for z, h in zip(
        predictions.reshape(-1, predictions.shape[-1]), targets.reshape(-1, targets.shape[-1]), strict=True
    ):
        for zi, hi in zip(z.tolist(), layer_norm(h.tolist()), strict=True):
            d = zi - hi
            total += (0.5 * d * d if abs(d) < 1 else abs(d) - 0.5) if loss_type == "smooth_l1" else d * d
            count += 1
    return total / count


@pytest.mark.parametrize("loss_type", ["smooth_l1", "l2"])
def test_loss_matches_the_formula(loss_type: str) -> None:
    generator = torch.Generator().manual_seed(0)
    predictions = torch.randn(2, 3, 4, 6, generator=generator, dtype=torch.float64)
    targets = 3 * torch.randn(2, 3, 4, 6, generator=generator, dtype=torch.float64) + 1
    loss = IJEPALoss(loss_type=loss_type)(predictions, targets)
    assert loss.item() == pytest.approx(ijepa_reference(predictions, targets, loss_type), rel=1e-10)
    with pytest.raises(ValueError, match="loss_type"):
        IJEPALoss(loss_type="l1")
    with pytest.raises(ValueError, match="differ"):
        IJEPALoss()(predictions, targets[..., :5])


def rectangle(indices: torch.Tensor, width: int) -> tuple[int, int]:
    """(rows, cols) of the full rectangle the raster indices form; fails if they form none."""
    rows, cols = sorted(set((indices // width).tolist())), sorted(set((indices % width).tolist()))
    assert rows == list(range(rows[0], rows[-1] + 1))
    assert cols == list(range(cols[0], cols[-1] + 1))
    assert len(indices) == len(rows) * len(cols)
    return len(rows), len(cols)


def fits(
    shape: tuple[int, int], grid: tuple[int, int], scale: tuple[float, float], aspect: tuple[float, float]
) -> bool:
    """Whether ``shape`` is sqrt(s N r) x sqrt(s N / r), each rounded and at most the grid, for some s in ``scale``
    and r in ``aspect``."""
    num_patches = grid[0] * grid[1]

    def side(length: int, exact: float, limit: int) -> bool:
        return abs(length - exact) <= 0.5 + 1e-9 or (length == limit and exact > limit)

    steps = [i / 60 for i in range(61)]
    return any(
        side(shape[0], math.sqrt(s * num_patches * r), grid[0])
        and side(shape[1], math.sqrt(s * num_patches / r), grid[1])
        for s in (scale[0] + (scale[1] - scale[0]) * a for a in steps)
        for r in (aspect[0] + (aspect[1] - aspect[0]) * b for b in steps)
    )


@pytest.mark.parametrize("grid", [(14, 14), (28, 28), (12, 16)])
def test_blocks_keep_their_scales_and_the_context_excludes_the_targets(grid: tuple[int, int]) -> None:
    width = grid[1]
    shapes = set()
    for seed in range(8):
        blocks = multi_block_mask(6, grid, generator=torch.Generator().manual_seed(seed))
        assert blocks.targets.shape[:2] == (6, 4)
        target_shapes = {rectangle(block, width) for image in blocks.targets for block in image}
        assert len(target_shapes) == 1  # one target shape per batch, as the official collator
        shape = target_shapes.pop()
        assert fits(shape, grid, (0.15, 0.2), (0.75, 1.5)), shape
        shapes.add(shape)
        untrimmed = []
        for b in range(6):
            block = blocks.context_block[b].nonzero().flatten()
            side = rectangle(block, width)
            assert fits(side, grid, (0.85, 1.0), (1.0, 1.0)), side
            targets = set(blocks.targets[b].flatten().tolist())
            context = blocks.context[b].tolist()
            assert context == sorted(context)
            assert not targets & set(context)  # the context never sees a target patch
            assert set(context) <= set(block.tolist())
            untrimmed.append([i for i in block.tolist() if i not in targets])
            assert context == untrimmed[-1][: len(context)]  # trimmed: the last patches in raster order go
        assert blocks.context.shape[1] == min(len(c) for c in untrimmed) >= 10  # the official min_keep
    assert len(shapes) > 1  # the target shape is drawn each batch


def test_blocks_are_reproducible_under_a_seed() -> None:
    first = multi_block_mask(4, (14, 14), generator=torch.Generator().manual_seed(7))
    again = multi_block_mask(4, (14, 14), generator=torch.Generator().manual_seed(7))
    other = multi_block_mask(4, (14, 14), generator=torch.Generator().manual_seed(8))
    assert torch.equal(first.context, again.context)
    assert torch.equal(first.targets, again.targets)
    assert not (torch.equal(first.context, other.context) and torch.equal(first.targets, other.targets))
    rng, replay = MaskingRNG(seed=3), MaskingRNG(seed=3)
    drawn = multi_block_mask(4, (14, 14), generator=rng.next_generator())
    torch.testing.assert_close(multi_block_mask(4, (14, 14), generator=replay.next_generator()).targets, drawn.targets)


def test_tiny_grids_keep_some_context_and_too_tiny_ones_fail() -> None:
    for seed in range(20):
        blocks = multi_block_mask(8, (2, 2), generator=torch.Generator().manual_seed(seed))
        assert blocks.context.shape[1] >= 1
        for b in range(8):
            assert not set(blocks.targets[b].flatten().tolist()) & set(blocks.context[b].tolist())
    with pytest.raises(ValueError, match="no context patch"):
        multi_block_mask(2, (1, 1))
    with pytest.raises(ValueError, match="target_scale"):
        multi_block_mask(2, (4, 4), target_scale=(0.3, 0.2))


def test_predictor_runs_each_target_block_on_the_context() -> None:
    torch.manual_seed(0)
    predictor = IJEPAPredictor(input_dim=8, num_prefix_tokens=1, dim=16, depth=2, num_heads=2).double().eval()
    tokens = torch.randn(2, 4, 8, dtype=torch.float64)  # class token + 3 context patches
    context = torch.tensor([[0, 1, 5], [2, 3, 4]])
    targets = torch.tensor([[[2, 3], [3, 4]], [[0, 1], [1, 5]]])  # 2 blocks of 2 patches each
    with torch.no_grad():
        out = predictor(tokens, context, targets, (2, 3))
        assert out.shape == (2, 2, 2, 8)
        position = sincos_reference(2, 3, 16)  # (6, 16), fixed
        for b in range(2):
            for t in range(2):
                x = predictor.embed(tokens[b])
                sequence = torch.cat(
                    [x[:1], x[1:] + position[context[b]], predictor.mask_token[0] + position[targets[b, t]]]
                )
                expected = predictor.projection(predictor.norm(predictor.blocks(sequence[None]))[0, -2:])
                torch.testing.assert_close(out[b, t], expected)


def test_predictor_defaults_and_initialisation() -> None:
    method = IJEPA("test_vit")
    predictor = method.predictor
    assert len(predictor.blocks) == 12
    assert predictor.embed.out_features == 384
    assert predictor.blocks[0].attn.num_heads == method.backbone.blocks[0].attn.num_heads  # the encoder's heads
    # The official fix_init_weight: block l's residual projections start at std 0.02 / sqrt(2 l).
    ratio = predictor.blocks[0].attn.proj.weight.std() / predictor.blocks[3].attn.proj.weight.std()
    assert ratio.item() == pytest.approx(2.0, rel=0.05)
    with pytest.raises(ValueError, match="predictor_num_heads"):
        IJEPA("test_vit", predictor_num_heads=5)


def test_encoders_start_with_the_official_scaled_block_outputs(tmp_path: Path) -> None:
    """Official vision_transformer.py: fix_init_weight divides block l's ``attn.proj`` and ``mlp.fc2`` weights by
    sqrt(2 l) (timm's ``fix_init``, an initialisation the published config.json leaves out)."""
    torch.manual_seed(0)
    method = IJEPA("vit_tiny_patch16_224", backbone_kwargs={"depth": 4, "img_size": 32}, **SMALL)
    for vit in (method.backbone, method.teacher_backbone):
        for layer in ("attn.proj", "mlp.fc2"):
            first, fourth = (vit.blocks[i].get_submodule(layer).weight.std().item() for i in (0, 3))
            assert first / fourth == pytest.approx(2.0, rel=0.05)  # sqrt(2 * 4) / sqrt(2 * 1)
    method.save_pretrained(tmp_path)
    assert "fix_init" not in json.loads((tmp_path / "config.json").read_text()).get("model_args", {})


def test_method_loss_is_the_formula_on_its_own_blocks() -> None:
    torch.manual_seed(0)
    method = IJEPA("test_vit", **SMALL).double()
    images = torch.randn(3, 3, 64, 64, dtype=torch.float64)  # 4 x 4 patches of 16 px
    replay = MaskingRNG(method.mask_rng.seed)
    replay.step = method.mask_rng.step
    encoder, predictor = Capture(method.encoder), Capture(method.predictor)
    with torch.no_grad():
        loss = method(views=[images]).loss
    blocks = multi_block_mask(3, (4, 4), generator=replay.next_generator())  # the blocks the method drew
    assert torch.equal(encoder.kwargs["keep"], blocks.context)
    assert torch.equal(predictor.inputs[1], blocks.context)
    assert torch.equal(predictor.inputs[2], blocks.targets)
    with torch.no_grad():
        features = method.teacher_backbone.forward_features(images)[:, 1:]  # (B, N, D): the target encoder's
    targets = torch.stack([features[b, blocks.targets[b]] for b in range(3)])  # (B, T, M, D)
    assert loss.item() == pytest.approx(ijepa_reference(predictor.output, targets, "smooth_l1"), rel=1e-9)
    assert method.mask_rng.step == replay.step


def test_target_encoder_follows_the_linear_momentum_schedule(tmp_path: Path) -> None:
    method = IJEPA("test_vit", **SMALL, momentum_start=0.9)
    check_ema_follows(
        method, tmp_path, lambda step, steps: linear_schedule(step, steps, 0.9, 1.0), publishes_teacher=True
    )


def test_published_backbone_is_the_target_encoder_and_load_method_restores_the_predictor(tmp_path: Path) -> None:
    method = IJEPA("test_vit", **SMALL)
    restored = check_hub_round_trip(method, tmp_path, transform_views(method), ["predictor.", "backbone.", "mask_rng."])
    assert restored.mask_rng.step == method.mask_rng.step > 0


def test_transform_is_one_crop_without_augmentation() -> None:
    from PIL import Image

    transform = IJEPATransform(input_size=24)
    views = transform(Image.new("RGB", (40, 30), color=(200, 30, 90)))
    assert len(views) == 1
    assert views[0].shape == (3, 24, 24)
    crop, flip = transform.transforms[0].transforms[:2]
    assert crop.scale == (0.3, 1.0)
    assert flip.p == 0.0


def test_defaults_are_the_official_recipe() -> None:
    config = IJEPA.config_class()
    assert (config.num_targets, config.target_scale_min, config.target_scale_max) == (4, 0.15, 0.2)
    assert (config.target_aspect_ratio_min, config.target_aspect_ratio_max) == (0.75, 1.5)
    assert (config.context_scale_min, config.context_scale_max, config.min_context_patches) == (0.85, 1.0, 10)
    assert (config.predictor_dim, config.predictor_depth, config.loss_type) == (384, 12, "smooth_l1")
    assert (config.momentum_start, config.momentum_end) == (0.996, 1.0)
    args = training_arguments(IJEPA("test_vit", **SMALL), output_dir="unused", report_to="none")
    assert args.learning_rate == pytest.approx(1e-3 * 64 / 2048)
    assert args.weight_decay == 0.04
    assert IJEPA.published_backbone == "teacher_backbone"
    assert "2301.08243" in IJEPA.paper.url


def test_a_cnn_backbone_or_bad_values_fail_at_construction() -> None:
    with pytest.raises(UnsupportedBackboneError, match="Vision Transformer"):
        ssl_hub.create_method("ijepa", backbone="test_resnet")
    with pytest.raises(ValueError, match="loss_type"):
        ssl_hub.create_method("ijepa", backbone="test_vit", loss_type="cosine")
    with pytest.raises(ValueError, match="target_scale_min"):
        ssl_hub.create_method("ijepa", backbone="test_vit", target_scale_min=0.5)
    with pytest.raises(ValueError, match="1 views"):
        IJEPA("test_vit", **SMALL)(views=[torch.randn(2, 3, 32, 32)] * 2)
