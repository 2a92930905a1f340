"""The masked-ViT adapter and the masking functions, checked against timm's own forward and by explicit loops."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from masked_image_reference import sincos_reference
from test_aim import SMALL_HEAD
from test_ijepa import SMALL as SMALL_PREDICTOR
from test_mae import SMALL_DECODER
from test_methods import train_a_few_steps
from timm.models.vision_transformer import VisionTransformer

import ssl_hub
from ssl_hub.modules import (
    MaskedVisionTransformer,
    MaskingRNG,
    UnsupportedBackboneError,
    block_mask,
    ema_copy,
    fix_sincos_position_embedding,
    inverse_block_mask,
    mask_to_indices,
    num_masked,
    patchify,
    prefix_causal_attention_mask,
    random_mask,
    random_prefix_lengths,
    sincos_position_embedding,
)
from ssl_hub.modules import masked_vit as masked_vit_module
from ssl_hub.modules.backbone import fit_input_size

# timm ViTs of every prefix layout, all built offline: class token; registers without class token; class +
# distillation tokens; registers with position embeddings that skip the prefix; a fixed-size ViT.
VITS = {
    "test_vit": ("test_vit", {}),
    "registers_no_class_token": (
        "vit_tiny_patch16_224",
        {"reg_tokens": 4, "class_token": False, "global_pool": "avg", "depth": 2, "img_size": 32},
    ),
    "deit_distilled": ("deit_tiny_distilled_patch16_224", {"depth": 2, "img_size": 32}),
    "no_embed_class": ("vit_tiny_patch16_224", {"reg_tokens": 2, "no_embed_class": True, "depth": 2, "img_size": 32}),
    "map_pool": ("test_vit3", {"img_size": 32}),
}


def make_vit(key: str) -> torch.nn.Module:
    torch.manual_seed(0)
    name, kwargs = VITS[key]
    return timm.create_model(name, num_classes=0, **kwargs).eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("key", VITS)
def test_nothing_masked_reproduces_timm_forward_features_exactly(key: str, images: torch.Tensor) -> None:
    vit = make_vit(key)
    adapter = MaskedVisionTransformer(vit, mask_token=True)
    with torch.no_grad():
        output = adapter(images)
        torch.testing.assert_close(output.tokens, vit.forward_features(images), rtol=0, atol=0)
        torch.testing.assert_close(adapter.pool(output), vit(images), rtol=0, atol=0)
        no_mask = torch.zeros(3, 4, dtype=torch.bool)  # a mask with nothing masked changes nothing either
        torch.testing.assert_close(adapter(images, mask=no_mask).tokens, output.tokens, rtol=0, atol=0)
    assert output.prefix_tokens.shape == (3, vit.num_prefix_tokens, vit.embed_dim)
    assert output.patch_tokens.shape == (3, 4, vit.embed_dim)
    if vit.cls_token is None:
        assert output.class_token is None
    else:
        torch.testing.assert_close(output.class_token, output.tokens[:, 0], rtol=0, atol=0)


def test_gradient_checkpointing_gives_the_same_tokens_and_gradients(
    images: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    vit = make_vit("test_vit")
    adapter = MaskedVisionTransformer(vit)
    causal = prefix_causal_attention_mask(torch.tensor([1, 2, 3]), 4, num_prefix_tokens=1)

    def tokens_and_gradient(attn_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        vit.zero_grad()
        tokens = adapter(images, attn_mask=attn_mask).tokens
        tokens.square().sum().backward()
        return tokens.detach(), vit.patch_embed.proj.weight.grad.clone()

    expected = [tokens_and_gradient(None), tokens_and_gradient(causal)]
    checkpointed: list[str] = []  # which of timm's helpers ran: the whole sequence, or block by block with a mask

    def counted(name: str) -> Callable[..., torch.Tensor]:
        helper = getattr(masked_vit_module, name)

        def run(*args: Any, **kwargs: Any) -> torch.Tensor:
            checkpointed.append(name)
            return helper(*args, **kwargs)

        return run

    for name in ("checkpoint", "checkpoint_seq"):
        monkeypatch.setattr(masked_vit_module, name, counted(name))
    vit.set_grad_checkpointing(True)
    vit.train()  # no dropout in test_vit: training mode only switches checkpointing on
    for attn_mask, (tokens, gradient) in zip([None, causal], expected, strict=True):
        got_tokens, got_gradient = tokens_and_gradient(attn_mask)
        torch.testing.assert_close(got_tokens, tokens)
        torch.testing.assert_close(got_gradient, gradient)
    assert checkpointed == ["checkpoint_seq"] + ["checkpoint"] * len(vit.blocks)


@pytest.mark.parametrize("key", ["test_vit", "registers_no_class_token", "deit_distilled"])
def test_dropping_patches_equals_attending_only_to_the_kept_ones(key: str, images: torch.Tensor) -> None:
    """Each token's output depends only on the tokens it attends to: dropping patches = masking their keys."""
    vit = make_vit(key)
    adapter = MaskedVisionTransformer(vit)
    prefix = vit.num_prefix_tokens
    keep = torch.tensor([[3, 0], [1, 2], [2, 3]])  # (B, K), any order
    dropped = adapter(images, keep=keep)
    visible = torch.zeros(3, prefix + 4, dtype=torch.bool)
    visible[:, :prefix] = True
    visible[torch.arange(3)[:, None], prefix + keep] = True
    attn_mask = visible[:, None, None, :]  # (B, 1, 1, L): every query sees the prefix and the kept patches
    full = adapter(images, attn_mask=attn_mask).tokens  # (B, P + N, D)
    assert dropped.tokens.shape == (3, prefix + 2, vit.embed_dim)
    torch.testing.assert_close(dropped.prefix_tokens, full[:, :prefix], rtol=1e-5, atol=1e-5)
    for b in range(3):
        for k in range(2):
            torch.testing.assert_close(dropped.patch_tokens[b, k], full[b, prefix + keep[b, k]], rtol=1e-5, atol=1e-5)


def test_mask_token_hides_the_masked_pixels(images: torch.Tensor) -> None:
    adapter = MaskedVisionTransformer(make_vit("test_vit"), mask_token=True)
    mask = torch.tensor([[True, False, False, True]] * 3)  # patches 0 and 3: top-left and bottom-right 16 px
    changed = images.clone()
    changed[:, :, :16, :16] += 5.0  # inside masked patch 0
    changed[:, :, 16:, 16:] -= 5.0  # inside masked patch 3
    with torch.no_grad():
        torch.testing.assert_close(adapter(changed, mask=mask).tokens, adapter(images, mask=mask).tokens)
        visible_change = images.clone()
        visible_change[:, :, :16, 16:] += 5.0  # inside visible patch 1
        assert not torch.allclose(adapter(visible_change, mask=mask).tokens, adapter(images, mask=mask).tokens)
    adapter(images, mask=mask).tokens.sum().backward()
    assert adapter.mask_token is not None
    assert adapter.mask_token.grad is not None
    assert adapter.mask_token.grad.abs().sum() > 0  # the masked patches' tokens reach the output


def test_prefix_causal_attention_matches_its_definition() -> None:
    prefix_lengths, num_tokens, extra = torch.tensor([1, 3, 0]), 5, 2
    mask = prefix_causal_attention_mask(prefix_lengths, num_tokens, num_prefix_tokens=extra)
    assert mask.shape == (3, 1, 7, 7)
    assert mask.dtype == torch.bool
    for b, length in enumerate(prefix_lengths.tolist()):
        for i in range(7):
            for j in range(7):
                assert bool(mask[b, 0, i, j]) == (j <= i or j < extra + length), (b, i, j)


def test_prefix_causal_encoder_never_sees_later_patches(images: torch.Tensor) -> None:
    adapter = MaskedVisionTransformer(make_vit("test_vit"))
    attn_mask = prefix_causal_attention_mask(torch.tensor([1, 1, 1]), 4, num_prefix_tokens=1)
    changed = images.clone()
    changed[:, :, 16:, 16:] += 5.0  # patch 3, the last in raster order, outside the prefix
    with torch.no_grad():
        before, after = adapter(images, attn_mask=attn_mask).tokens, adapter(changed, attn_mask=attn_mask).tokens
    torch.testing.assert_close(after[:, :4], before[:, :4])  # class token and patches 0-2 do not see patch 3
    assert not torch.allclose(after[:, 4], before[:, 4])


def test_adapter_follows_the_backbone_grid_after_set_input_size() -> None:
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=0, depth=2).eval()  # fixed 224 px input
    adapter = MaskedVisionTransformer(vit)
    assert adapter.grid_size((224, 224)) == (14, 14)
    with pytest.raises(ValueError, match="fit_input_size"):
        adapter.grid_size((64, 64))
    fit_input_size(vit, 64)
    assert adapter.grid_size((64, 64)) == (4, 4)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(adapter(x).tokens, vit.forward_features(x), rtol=0, atol=0)
    dynamic = MaskedVisionTransformer(make_vit("test_vit"))  # dynamic image size: any multiple of the patch
    assert dynamic.grid_size((48, 64)) == (3, 4)


def test_sincos_position_embedding_is_maes_on_any_grid() -> None:
    """Column half first, as MAE's / I-JEPA's / AIM's get_2d_sincos_pos_embed (timm's own puts the row half first)."""
    for grid, dim in [((4, 4), 32), ((3, 5), 16), ((5, 2), 8)]:
        embedding = sincos_position_embedding(grid, dim, dtype=torch.float64)
        torch.testing.assert_close(embedding, sincos_reference(*grid, dim), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="multiple of 4"):
        sincos_position_embedding((2, 2), 6)


@pytest.mark.parametrize("key", VITS)
def test_fixed_position_embedding_is_the_sincos_one_after_the_prefix(key: str) -> None:
    vit = make_vit(key)
    fix_sincos_position_embedding(vit)
    height, width = vit.patch_embed.grid_size
    prefix = vit.pos_embed.shape[1] - height * width  # 0 where the prefix tokens take no position
    expected = torch.cat(
        [torch.zeros(prefix, vit.embed_dim, dtype=torch.float64), sincos_reference(height, width, vit.embed_dim)]
    )
    torch.testing.assert_close(vit.pos_embed[0].double(), expected, atol=1e-6, rtol=0)
    assert not vit.pos_embed.requires_grad


# The methods whose ViTs hold the fixed sine-cosine position embedding, with their tests' small heads.
SINCOS_METHODS = {"mae": SMALL_DECODER, "ijepa": SMALL_PREDICTOR, "aim": SMALL_HEAD}


@pytest.mark.parametrize("name", SINCOS_METHODS)
def test_methods_freeze_their_vits_at_the_sincos_position_embedding(name: str) -> None:
    """MAE's, I-JEPA's and AIM's official ViTs: ``pos_embed`` holds the 2D sine-cosine embedding,
    ``requires_grad=False``, in every ViT of the method (I-JEPA's target encoder too); it stays so when pretrain resizes
    them, and the optimizer never sees it. ``fixed_position_embedding=False`` leaves the ViT's own, trainable."""
    method = ssl_hub.create_method(name, "vit_tiny_patch16_224", backbone_kwargs={"depth": 1}, **SINCOS_METHODS[name])
    for image_size in (None, 32):
        if image_size:
            method.fit_input_size(image_size)  # as ssl_hub.pretrain does: a 2 x 2 grid, a resampled embedding
        vits = [module for module in method.modules() if isinstance(module, VisionTransformer)]
        assert len(vits) == (2 if name == "ijepa" else 1)
        trained = {id(p) for group in method.parameter_groups(0.05) for p in group["params"]}
        for vit in vits:
            height, width = vit.patch_embed.grid_size
            expected = torch.cat([torch.zeros(1, 192, dtype=torch.float64), sincos_reference(height, width, 192)])
            torch.testing.assert_close(vit.pos_embed[0].double(), expected, atol=1e-6, rtol=0)
            assert not vit.pos_embed.requires_grad
            assert id(vit.pos_embed) not in trained
    torch.manual_seed(0)
    learned = ssl_hub.create_method(name, "test_vit", fixed_position_embedding=False, **SINCOS_METHODS[name])
    torch.manual_seed(0)
    own = timm.create_model("test_vit", num_classes=0, **type(learned).backbone_defaults).pos_embed
    torch.testing.assert_close(learned.backbone.pos_embed, own)
    trained = {id(p) for group in learned.parameter_groups(0.05) for p in group["params"]}
    assert learned.backbone.pos_embed.requires_grad
    assert id(learned.backbone.pos_embed) in trained
    narrow = {"depth": 1, "embed_dim": 18, "num_heads": 1}  # no sine-cosine embedding fits a width of 18
    with pytest.raises(ValueError, match="multiple of 4"):
        ssl_hub.create_method(name, "vit_tiny_patch16_224", backbone_kwargs=narrow, **SINCOS_METHODS[name])


def test_bad_inputs_fail_clearly(images: torch.Tensor) -> None:
    adapter = MaskedVisionTransformer(make_vit("test_vit"))
    with pytest.raises(ValueError, match="mask_token=True"):
        adapter(images, mask=torch.zeros(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(B, K\) long"):
        adapter(images, keep=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="mask must be"):
        MaskedVisionTransformer(make_vit("test_vit"), mask_token=True)(images, mask=torch.zeros(3, 5, dtype=torch.bool))


@pytest.mark.parametrize("backbone", ["test_resnet", "test_convnext"])
def test_non_vit_backbones_are_refused_naming_those_that_fit(backbone: str) -> None:
    with pytest.raises(UnsupportedBackboneError, match=r"test_resnet|test_convnext") as error:
        MaskedVisionTransformer(timm.create_model(backbone, num_classes=0))
    assert "vit_" in str(error.value)
    assert "deit" in str(error.value)


@pytest.mark.parametrize("name", ["mae", "simmim", "aim", "ijepa"])
def test_masked_image_methods_refuse_non_vit_backbones_at_construction(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert ssl_hub.get_method_class(name).requires_vit
    with pytest.raises(UnsupportedBackboneError, match=r"needs a timm Vision Transformer.*'test_resnet'.*vit_"):
        ssl_hub.create_method(name, backbone="test_resnet")
    # The error is all the user sees: no warning first about the ViT defaults (weight_init...) the CNN refused.
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


def test_the_adapter_does_not_own_the_vit() -> None:
    vit = make_vit("test_vit")
    adapter = MaskedVisionTransformer(vit, mask_token=True)
    assert list(adapter.state_dict()) == ["mask_token"]  # the ViT's weights are saved once, by its holder
    with pytest.raises(RuntimeError, match="ema_copy"):
        copy.deepcopy(adapter)
    holder = torch.nn.ModuleDict({"vit": vit, "adapter": adapter})
    duplicate = copy.deepcopy(holder)  # copying both keeps them together
    assert duplicate["adapter"].vit is duplicate["vit"]
    assert duplicate["vit"] is not vit
    teacher = MaskedVisionTransformer(ema_copy(vit))  # a teacher: its own adapter around its own copy
    assert teacher.vit is not vit


def test_patchify_matches_explicit_indexing() -> None:
    images = torch.randn(2, 3, 8, 12, dtype=torch.float64)
    patches = patchify(images, 4)  # grid 2 x 3, 4 * 4 * 3 pixels per patch
    assert patches.shape == (2, 6, 48)
    for b in range(2):
        for row in range(2):
            for col in range(3):
                expected = [
                    images[b, c, 4 * row + y, 4 * col + x] for y in range(4) for x in range(4) for c in range(3)
                ]
                torch.testing.assert_close(patches[b, 3 * row + col], torch.stack(expected), rtol=0, atol=0)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        patchify(images, 5)


@pytest.mark.parametrize(
    ("num_tokens", "ratio", "expected"), [(196, 0.75, 147), (4, 0.75, 3), (6, 0.75, 5), (9, 0.6, 5)]
)
def test_num_masked_rounds_the_ratio(num_tokens: int, ratio: float, expected: int) -> None:
    assert num_masked(num_tokens, ratio) == expected


@pytest.mark.parametrize(("num_tokens", "ratio"), [(196, 0.75), (49, 0.6), (10, 0.9), (7, 0.3), (5, 0.0), (5, 1.0)])
def test_random_mask_keeps_the_ratio_exactly_and_is_seeded(num_tokens: int, ratio: float) -> None:
    mask = random_mask(16, num_tokens, ratio, generator=torch.Generator().manual_seed(3))
    assert mask.shape == (16, num_tokens)
    assert mask.dtype == torch.bool
    assert mask.sum(dim=1).tolist() == [round(ratio * num_tokens)] * 16
    again = random_mask(16, num_tokens, ratio, generator=torch.Generator().manual_seed(3))
    assert torch.equal(mask, again)
    if 0 < ratio < 1:
        other = random_mask(16, num_tokens, ratio, generator=torch.Generator().manual_seed(4))
        assert not torch.equal(mask, other)
        assert len({tuple(row.tolist()) for row in mask}) > 1  # every image its own mask


def has_no_isolated_patch(mask: torch.Tensor) -> bool:
    """Every masked patch has a masked 4-neighbour: true of unions of rectangles of >= 2 patches."""
    padded = torch.nn.functional.pad(mask.int(), (1, 1, 1, 1))
    neighbours = padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]
    return bool((neighbours[mask] > 0).all())


@pytest.mark.parametrize("function", [block_mask, inverse_block_mask])
@pytest.mark.parametrize(("grid", "ratio"), [((14, 14), 0.4), ((6, 9), 0.5), ((4, 4), 0.75), ((3, 3), 0.1)])
def test_block_masks_keep_the_ratio_exactly_and_are_seeded(function, grid: tuple[int, int], ratio: float) -> None:
    mask = function(8, grid, ratio, generator=torch.Generator().manual_seed(5))
    assert mask.shape == (8, math.prod(grid))
    assert mask.dtype == torch.bool
    assert mask.sum(dim=1).tolist() == [num_masked(math.prod(grid), ratio)] * 8
    assert torch.equal(mask, function(8, grid, ratio, generator=torch.Generator().manual_seed(5)))
    assert not torch.equal(mask, function(8, grid, ratio, generator=torch.Generator().manual_seed(6)))


def test_block_mask_masks_rectangles() -> None:
    masks = block_mask(32, (14, 14), 0.4, min_block_patches=16, generator=torch.Generator().manual_seed(0))
    blocky = [has_no_isolated_patch(m.view(14, 14)) for m in masks]
    assert sum(blocky) >= 28  # BEiT's rectangles (a 1-patch block may end one: the exact count comes first)
    inverse = inverse_block_mask(32, (14, 14), 0.6, min_block_patches=16, generator=torch.Generator().manual_seed(0))
    assert sum(has_no_isolated_patch(~m.view(14, 14)) for m in inverse) >= 28  # the kept parts are rectangles


def test_mask_to_indices_splits_kept_and_masked_in_order() -> None:
    mask = torch.tensor([[True, False, True, False], [False, False, True, True]])
    keep, masked = mask_to_indices(mask)
    assert keep.tolist() == [[1, 3], [0, 1]]
    assert masked.tolist() == [[0, 2], [2, 3]]
    assert torch.equal(mask_to_indices(mask, 2)[0], keep)
    with pytest.raises(ValueError, match="same number of masked tokens"):
        mask_to_indices(torch.tensor([[True, False], [True, True]]))


def test_random_prefix_lengths_cover_the_range_and_are_seeded() -> None:
    lengths = random_prefix_lengths(2000, 10, generator=torch.Generator().manual_seed(0))
    assert set(lengths.tolist()) == set(range(1, 10))  # AIM's [1, N - 1]
    again = random_prefix_lengths(2000, 10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(lengths, again)
    assert set(random_prefix_lengths(500, 10, min_length=3, max_length=4).tolist()) == {3, 4}
    with pytest.raises(ValueError, match="min_length <= max_length"):
        random_prefix_lengths(2, 4, min_length=3, max_length=2)


def test_masking_rng_is_reproducible_and_saved_with_its_state() -> None:
    rng = MaskingRNG(seed=7)
    first = [random_mask(4, 16, 0.5, generator=rng.next_generator()) for _ in range(3)]
    assert not torch.equal(first[0], first[1])  # every step its own masks
    replay = MaskingRNG(seed=7)
    assert all(torch.equal(m, random_mask(4, 16, 0.5, generator=replay.next_generator())) for m in first)

    restored = MaskingRNG(seed=123)
    restored.load_state_dict(rng.state_dict())  # the state goes into state_dict(), hence into ssl/
    assert (restored.seed, restored.step) == (7, 3)
    next_original = random_mask(4, 16, 0.5, generator=rng.next_generator())
    assert torch.equal(random_mask(4, 16, 0.5, generator=restored.next_generator()), next_original)

    torch.manual_seed(0)
    seed = MaskingRNG().seed
    torch.manual_seed(0)
    assert MaskingRNG().seed == seed  # drawn from torch's generator: torch.manual_seed fixes it


def hub_method(name: str) -> ssl_hub.SSLMethod:
    small = {"mae": {"decoder_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2}, "simmim": {"mask_patch_size": 16}}
    small["aim"] = {"head_hidden_dim": 32, "head_num_blocks": 2}
    return ssl_hub.create_method(name, backbone="test_vit", **small[name])


@pytest.mark.parametrize("name", ["mae", "simmim", "aim"])
def test_trained_encoder_loads_in_timm_and_transformers_and_load_method_restores_the_rest(
    name: str, tmp_path: Path, images: torch.Tensor
) -> None:
    from transformers import AutoModel

    method = hub_method(name)
    train_a_few_steps(method, tmp_path / "run", steps=2)
    folder = method.save_pretrained(tmp_path / "hub")
    method.eval()
    with torch.no_grad():
        expected = method.backbone(images)
        timm_model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
        torch.testing.assert_close(timm_model(images), expected, rtol=0, atol=0)
        encoder = AutoModel.from_pretrained(folder).eval()
        torch.testing.assert_close(encoder(pixel_values=images).pooler_output, expected, rtol=1e-5, atol=1e-6)
    assert not any(key.startswith(("encoder.", "decoder.", "prediction_head.")) for key in timm_model.state_dict())

    restored = ssl_hub.load_method(folder)
    extra = {k: v for k, v in method.state_dict().items() if not k.startswith("backbone.")}
    assert {"mask_rng._extra_state"} < set(extra)  # and the decoder / head / mask token
    restored_state = restored.state_dict()
    for key, value in extra.items():
        torch.testing.assert_close(restored_state[key], value, rtol=0, atol=0, msg=key)
    assert restored.mask_rng.step == method.mask_rng.step > 0
