"""Encoder / predictor / position tests: shapes for every size, both position modes, images,
variable resolution, activation checkpointing, and the official RoPE / sin-cos layouts."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from vjepa_pipeline.models.positions import RotaryTables, resize_table, rope_axis_dim, sincos_3d_table
from vjepa_pipeline.models.predictor import Predictor
from vjepa_pipeline.config.sizes import VIT_SIZES
from vjepa_pipeline.models.vit import VisionTransformer

TINY = dict(embed_dim=64, depth=2, num_heads=4, patch_size=8, tubelet_size=2, num_frames=8, img_size=32)


def tiny_pair(pos: str = "rope", **kw):
    torch.manual_seed(0)
    enc = VisionTransformer(**{**TINY, **kw}, pos_embed=pos)
    pred = Predictor(64, 32, 2, 4, patch_size=8, tubelet_size=2, num_frames=8, img_size=32, pos_embed=pos,
                     zero_init_mask_tokens=False)
    return enc, pred


def random_indices(batch: int, n: int, k: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(n, generator=g)[:k].sort().values for _ in range(batch)])


@pytest.mark.parametrize("pos", ["rope", "sincos"])
@pytest.mark.parametrize("size", sorted(VIT_SIZES))
def test_every_size_forward_backward_on_meta(size, pos):
    s = VIT_SIZES[size]
    with torch.device("meta"):
        enc = VisionTransformer(s.embed_dim, s.depth, s.num_heads, s.mlp_ratio, pos_embed=pos)
        pred = Predictor(s.embed_dim, pos_embed=pos)
        x = torch.empty(2, 3, 16, 224, 224)
        ctx, tgt = torch.zeros(2, 200, dtype=torch.long), torch.zeros(2, 900, dtype=torch.long)
        full = enc(x)
        out = pred(enc(x, ctx), ctx, tgt, (8, 14, 14))
        out.sum().backward()
    assert full.shape == (2, 1568, s.embed_dim)
    assert out.shape == (2, 900, s.embed_dim)
    assert enc.blocks[0].attn.qkv.weight.grad is not None
    assert pred.predictor_blocks[-1].mlp.fc2.weight.grad is not None


def test_published_parameter_counts():
    counts = {}
    for name in ("base", "large", "huge", "giant"):
        s = VIT_SIZES[name]
        with torch.device("meta"):
            enc = VisionTransformer(s.embed_dim, s.depth, s.num_heads, s.mlp_ratio)
        counts[name] = sum(p.numel() for p in enc.parameters()) / 1e6
    # ViT-B ~86M, ViT-L ~300M, ViT-H ~630M, ViT-g ~1B (tubelet 2x16x16 embedding included).
    assert 85 < counts["base"] < 88 and 300 < counts["large"] < 306
    assert 625 < counts["huge"] < 640 and 1000 < counts["giant"] < 1020
    assert VIT_SIZES["giant_v2"].embed_dim // VIT_SIZES["giant_v2"].num_heads == 64


@pytest.mark.parametrize("pos", ["rope", "sincos"])
def test_tiny_forward_backward_every_parameter_gets_gradient(pos):
    enc, pred = tiny_pair(pos)
    x = torch.randn(2, 3, 8, 32, 32)
    ctx, tgt = random_indices(2, 64, 20), random_indices(2, 64, 30, seed=1)
    out = pred(enc(x, ctx), ctx, tgt, enc.grid_of(x))
    out.pow(2).mean().backward()
    for name, p in [*enc.named_parameters(), *pred.named_parameters()]:
        if name.startswith("mask_tokens.") and name != "mask_tokens.0":
            assert p.grad is None  # only the token of mask config 0 was used
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("pos", ["rope", "sincos"])
def test_image_input_equals_static_clip(pos):
    enc, _ = tiny_pair(pos)
    img = torch.randn(2, 3, 32, 32)
    clip = img.unsqueeze(2).repeat(1, 1, 2, 1, 1)
    torch.testing.assert_close(enc(img), enc(clip))
    assert enc(img).shape == (2, 16, 64)


@pytest.mark.parametrize("pos", ["rope", "sincos"])
def test_variable_resolution_and_clip_length(pos):
    enc, pred = tiny_pair(pos)
    x = torch.randn(1, 3, 16, 48, 40)  # 8 x 6 x 5 tokens, not the 4x4x4 reference grid
    out = enc(x)
    assert out.shape == (1, 240, 64) and torch.isfinite(out).all()
    ctx, tgt = random_indices(1, 240, 50), random_indices(1, 240, 60, seed=3)
    assert pred(enc(x, ctx), ctx, tgt, enc.grid_of(x)).shape == (1, 60, 64)


def test_bad_input_shapes_give_clear_errors():
    enc, _ = tiny_pair()
    with pytest.raises(ValueError, match="divisible by 2"):
        enc(torch.randn(1, 3, 7, 32, 32))
    with pytest.raises(ValueError, match="height/width by 8"):
        enc(torch.randn(1, 3, 8, 30, 32))
    with pytest.raises(ValueError, match="expected a clip"):
        enc(torch.randn(3, 32, 32))


def test_masked_forward_shares_the_embedding_and_lists_work():
    enc, _ = tiny_pair()
    x = torch.randn(2, 3, 8, 32, 32)
    m1, m2 = random_indices(2, 64, 10), random_indices(2, 64, 25, seed=5)
    outs = enc(x, [m1, m2])
    torch.testing.assert_close(outs[0], enc(x, m1))
    assert outs[1].shape == (2, 25, 64)
    # A context of every token in order is the unmasked forward.
    torch.testing.assert_close(enc(x, torch.arange(64).expand(2, -1)), enc(x))


def test_return_layers_gives_normed_intermediate_outputs():
    enc, _ = tiny_pair()
    x = torch.randn(1, 3, 8, 32, 32)
    layers = enc(x, return_layers=[0, -1])
    assert len(layers) == 2
    torch.testing.assert_close(layers[1], enc(x))
    assert not torch.allclose(layers[0], layers[1])


@pytest.mark.parametrize("pos", ["rope", "sincos"])
def test_activation_checkpointing_matches_plain_forward_backward(pos):
    plain, pred = tiny_pair(pos)
    ckpt, _ = tiny_pair(pos, activation_checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 8, 32, 32)
    ctx = random_indices(2, 64, 30)
    grads = []
    for enc in (plain, ckpt):
        enc.train()
        enc(x, ctx).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in enc.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


def test_predictor_mask_index_selects_the_learned_token():
    enc, pred = tiny_pair()
    x = torch.randn(1, 3, 8, 32, 32)
    ctx, tgt = random_indices(1, 64, 20), random_indices(1, 64, 10, seed=2)
    z = enc(x, ctx)
    a, b = pred(z, ctx, tgt, (4, 4, 4), mask_index=0), pred(z, ctx, tgt, (4, 4, 4), mask_index=1)
    assert not torch.allclose(a, b)
    torch.testing.assert_close(pred(z, ctx, tgt, (4, 4, 4), mask_index=10), a)  # wraps like the official code


# ---- positions -------------------------------------------------------------------------------
def test_sincos_table_hand_values_and_axis_split():
    grid = (3, 4, 5)
    table = sincos_3d_table(192, grid, uniform_power=True)  # 64 dims per axis: 32 sin + 32 cos
    assert table.shape == (60, 192)
    idx = lambda t, h, w: t * 20 + h * 5 + w  # noqa: E731
    # Frequency 0 of each axis is 1 rad per step: sin(pos) then cos(pos) 32 dims later.
    assert math.isclose(table[idx(2, 0, 0), 0].item(), math.sin(2), abs_tol=1e-6)
    assert math.isclose(table[idx(2, 0, 0), 32].item(), math.cos(2), abs_tol=1e-6)
    assert math.isclose(table[idx(0, 3, 0), 64].item(), math.sin(3), abs_tol=1e-6)
    assert math.isclose(table[idx(0, 0, 4), 128].item(), math.sin(4), abs_tol=1e-6)
    # The time block depends only on t.
    torch.testing.assert_close(table[idx(1, 0, 0), :64], table[idx(1, 3, 4), :64])
    # Non-uniform split: time gets D/2, height and width D/4 each.
    alt = sincos_3d_table(192, grid, uniform_power=False)
    torch.testing.assert_close(alt[idx(1, 0, 0), :96], alt[idx(1, 2, 3), :96])
    assert not torch.allclose(alt, table)
    # Odd shares are truncated to D, as in the official table (1024 -> 3 x 342 = 1026 -> 1024).
    assert sincos_3d_table(1024, (2, 2, 2)).shape == (8, 1024)


def test_resize_table_is_identity_on_the_reference_grid_and_resamples_otherwise():
    table = sincos_3d_table(64, (4, 4, 4))
    assert resize_table(table, (4, 4, 4), (4, 4, 4)) is table
    bigger = resize_table(table, (4, 4, 4), (8, 6, 5))
    assert bigger.shape == (240, 64)
    # Corner tokens stay close to the original corners (trilinear, align_corners=False).
    assert (bigger[0] - table[0]).abs().max() < 0.6


def naive_official_rope(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Loop transcription of the official formula for one axis chunk: x (N, d), pos (N,)."""
    n, d = x.shape
    out = torch.empty_like(x)
    for i in range(n):
        for j in range(d):
            freq = 1.0 / 10000 ** ((j % (d // 2)) / (d / 2))  # frequencies repeated, not interleaved
            angle = pos[i].item() * freq
            partner = -x[i, j + 1] if j % 2 == 0 else x[i, j - 1]
            out[i, j] = x[i, j] * math.cos(angle) + partner * math.sin(angle)
    return out


def test_rope_matches_a_loop_transcription_of_the_official_layout():
    grid = (3, 4, 5)
    head_dim = 32  # axis dim 10 -> 30 rotated + 2 untouched dims
    assert rope_axis_dim(head_dim) == 10
    ids = torch.tensor([0, 7, 23, 59, 41])
    x = torch.randn(1, 1, 5, head_dim)
    got = RotaryTables(ids, grid, head_dim, torch.float32).apply(x)[0, 0]
    t, h, w = ids // 20, (ids % 20) // 5, ids % 5
    want = torch.cat([naive_official_rope(x[0, 0, :, 0:10], t), naive_official_rope(x[0, 0, :, 10:20], h),
                      naive_official_rope(x[0, 0, :, 20:30], w), x[0, 0, :, 30:]], dim=1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # Position 0 is the identity.
    zero = RotaryTables(torch.zeros(5, dtype=torch.long), grid, head_dim, torch.float32).apply(x)
    torch.testing.assert_close(zero, x)


def test_rope_rejects_head_dims_too_small_for_three_axes():
    with pytest.raises(ValueError, match="head dim of at least 6"):
        RotaryTables(torch.arange(4), (1, 2, 2), 4, torch.float32)


def test_model_package_imports_no_training_frameworks():
    code = ("import sys, vjepa_pipeline.models.build, vjepa_pipeline.models.flops, vjepa_pipeline.checkpoint.interop;"
            "bad = [m for m in ('lightning', 'pytorch_lightning', 'deepspeed', 'submitit', 'wandb') if m in sys.modules];"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
