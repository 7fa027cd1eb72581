"""JEPA objective, EMA, schedules and collapse statistics."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vjepa_pipeline.config import load_config
from vjepa_pipeline.models.build import build_jepa
from vjepa_pipeline.models.collapse import collapse_stats, per_dim_std, rankme
from vjepa_pipeline.models.jepa import JEPA, ema_momentum, ema_update, jepa_forward, l1_latent_loss
from vjepa_pipeline.models.masks import MaskCollator, grid_for, specs_from_config
from vjepa_pipeline.models.predictor import Predictor
from vjepa_pipeline.models.vit import VisionTransformer, gather_tokens
from vjepa_pipeline.train.objective_run import run_objective
from vjepa_pipeline.models.optim import (learning_rate, param_groups, warmup_constant_cooldown_lr,
                                         warmup_cosine_lr, weight_decay)

DEBUG = "configs/pretrain/debug.yaml"


def tiny_jepa() -> JEPA:
    torch.manual_seed(0)
    enc = VisionTransformer(64, 2, 4, patch_size=8, num_frames=8, img_size=32)
    pred = Predictor(64, 32, 1, 4, patch_size=8, num_frames=8, img_size=32, zero_init_mask_tokens=False)
    return JEPA(enc, pred)


def tiny_masks(batch=2, seed=0):
    collator = MaskCollator(specs_from_config(load_config(DEBUG).masks), (4, 4, 4), seed=seed)
    return collator.sample(batch, step=0)


def test_l1_loss_hand_computed():
    pred = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    target = torch.tensor([[[0.0, 2.0], [5.0, 4.5]]])
    assert l1_latent_loss(pred, target).item() == pytest.approx((1 + 0 + 2 + 0.5) / 4)


def test_jepa_forward_matches_a_by_hand_recomputation():
    model = tiny_jepa()
    x = torch.randn(2, 3, 8, 32, 32)
    masks = tiny_masks()
    out = model(x, masks)
    with torch.no_grad():
        h = model.target_encoder(x)
        h = F.layer_norm(h, (64,))
        losses = []
        for i, (ctx, tgt) in enumerate(masks):
            z = model.encoder(x, ctx)
            p = model.predictor(z, ctx, tgt, (4, 4, 4), mask_index=i)
            losses.append((p - gather_tokens(h, tgt)).abs().mean())
    assert out.loss.item() == pytest.approx(sum(losses).item() / len(losses), rel=1e-5)
    assert [t.item() for t in out.per_mask_loss] == pytest.approx([t.item() for t in losses], rel=1e-5)
    # Targets are layer-normed without affine: zero mean, unit variance per token.
    assert out.targets.mean(-1).abs().max() < 1e-4
    assert out.targets.shape == (2, 64, 64)


def test_gradients_reach_context_encoder_and_predictor_only():
    model = tiny_jepa()
    out = model(torch.randn(2, 3, 8, 32, 32), tiny_masks())
    out.loss.backward()
    assert all(p.grad is not None for p in model.encoder.parameters())
    assert all(p.grad is None and not p.requires_grad for p in model.target_encoder.parameters())
    assert model.predictor.predictor_proj.weight.grad.abs().sum() > 0


def test_loss_depends_on_target_encoder_weights():
    model = tiny_jepa()
    x, masks = torch.randn(2, 3, 8, 32, 32), tiny_masks()
    before = model(x, masks).loss.item()
    with torch.no_grad():
        for p in model.target_encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert model(x, masks).loss.item() != pytest.approx(before, rel=1e-4)


def test_jepa_forward_needs_masks():
    model = tiny_jepa()
    with pytest.raises(ValueError, match="at least one"):
        jepa_forward(model.encoder, model.predictor, model.target_encoder, torch.randn(1, 3, 8, 32, 32), [])


def test_ema_update_math():
    target = [torch.zeros(3), torch.full((2, 2), 2.0)]
    online = [torch.ones(3), torch.zeros(2, 2)]
    ema_update(target, online, momentum=0.9)
    torch.testing.assert_close(target[0], torch.full((3,), 0.1))
    torch.testing.assert_close(target[1], torch.full((2, 2), 1.8))
    ema_update(target, online, momentum=0.9)
    torch.testing.assert_close(target[0], torch.full((3,), 0.19))


def test_fp32_target_moves_when_online_weights_are_bf16():
    m = 0.99925  # V-JEPA 2's constant momentum
    online = torch.full((1000,), 1.0).bfloat16()
    target32 = torch.full((1000,), 1.01)
    expected = m * 1.01 + (1 - m) * 1.0
    ema_update([target32], [online], m)
    assert target32[0].item() == pytest.approx(expected, abs=1e-7)
    assert target32[0].item() != pytest.approx(1.01, abs=1e-6)
    # The same update held in bf16 does not move at all: the failure mode an fp32 target avoids.
    target16 = torch.full((1000,), 1.01).bfloat16()
    before = target16.clone()
    ema_update([target16], [online], m)
    assert torch.equal(target16, before)


def test_model_ema_keeps_fp32_target_under_bf16_online_model():
    model = tiny_jepa()
    model.encoder.bfloat16()
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(0.5)
    before = [p.clone() for p in model.target_encoder.parameters()]
    model.update_target(0.99925)
    assert all(p.dtype == torch.float32 for p in model.target_encoder.parameters())
    moved = [(p - b).abs().max().item() for p, b in zip(model.target_encoder.parameters(), before)]
    assert min(moved) > 1e-5


def test_ema_momentum_schedules():
    assert ema_momentum(0, 100, 0.998, 1.0) == pytest.approx(0.998)
    assert ema_momentum(50, 100, 0.998, 1.0) == pytest.approx(0.999)
    assert ema_momentum(100, 100, 0.998, 1.0) == pytest.approx(1.0)
    assert ema_momentum(500, 100, 0.998, 1.0) == pytest.approx(1.0)
    assert ema_momentum(37, 100, 0.99925, 1.0, "constant") == 0.99925
    with pytest.raises(ValueError, match="unknown EMA schedule"):
        ema_momentum(0, 1, 0.9, 1.0, "cosine")


def test_param_groups_exclude_biases_and_norms_from_weight_decay():
    model = tiny_jepa()
    decay, no_decay = param_groups([model.encoder, model.predictor], 0.04)
    assert decay["weight_decay"] == 0.04 and no_decay["weight_decay"] == 0.0 and no_decay["wd_exclude"]
    assert all(p.ndim >= 2 for p in decay["params"])
    ids = {id(p) for p in no_decay["params"]}
    assert id(model.encoder.norm.weight) in ids and id(model.encoder.blocks[0].attn.qkv.bias) in ids
    n_trainable = sum(1 for _ in model.trainable_parameters())
    assert len(decay["params"]) + len(no_decay["params"]) == n_trainable


def test_learning_rate_and_weight_decay_schedules():
    # V-JEPA 1: warmup start -> ref, cosine ref -> final.
    assert warmup_cosine_lr(0, 100, 10, 2e-4, 6.25e-4, 1e-6) == pytest.approx(2e-4)
    assert warmup_cosine_lr(5, 100, 10, 2e-4, 6.25e-4, 1e-6) == pytest.approx(4.125e-4)
    assert warmup_cosine_lr(10, 100, 10, 2e-4, 6.25e-4, 1e-6) == pytest.approx(6.25e-4)
    assert warmup_cosine_lr(55, 100, 10, 2e-4, 6.25e-4, 1e-6) == pytest.approx((6.25e-4 + 1e-6) / 2)
    assert warmup_cosine_lr(100, 100, 10, 2e-4, 6.25e-4, 1e-6) == pytest.approx(1e-6)
    # V-JEPA 2: warmup, constant, linear cooldown over the last steps.
    f = lambda s: warmup_constant_cooldown_lr(s, 100, 10, 20, 1e-4, 5.25e-4, 1e-6)  # noqa: E731
    assert f(0) == pytest.approx(1e-4) and f(10) == f(79) == pytest.approx(5.25e-4)
    assert f(90) == pytest.approx((5.25e-4 + 1e-6) / 2) and f(100) == pytest.approx(1e-6)
    cfg = load_config(DEBUG, ["optim.weight_decay=0.04", "optim.final_weight_decay=0.4"]).optim
    assert weight_decay(cfg, 0, 10) == pytest.approx(0.04) and weight_decay(cfg, 10, 10) == pytest.approx(0.4)
    assert learning_rate(cfg, 0, 20) == pytest.approx(cfg.start_lr)


def test_collapse_statistics():
    assert rankme(torch.eye(16)) == pytest.approx(16, rel=1e-3)
    rank_one = torch.randn(32, 1) @ torch.randn(1, 16)
    assert rankme(rank_one) == pytest.approx(1.0, abs=0.01)
    assert per_dim_std(torch.ones(4, 5, 8)).abs().max() == 0
    stats = collapse_stats(torch.randn(8, 10, 16))
    assert 0.8 < stats["target_std_mean"] < 1.2 and stats["pooled_rankme"] > 4
    collapsed = collapse_stats(torch.ones(8, 10, 16) + 1e-3 * torch.randn(8, 10, 16))
    assert collapsed["target_std_mean"] < 0.01
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        rankme(torch.randn(2, 3, 4))


def test_build_jepa_from_config_both_position_modes():
    for pos in ("rope", "sincos"):
        cfg = load_config(DEBUG, [f"model.pos_embed={pos}"])
        model = build_jepa(cfg)
        grid = grid_for(cfg.data.num_frames, cfg.data.crop_size, cfg.model.patch_size, cfg.model.tubelet_size)
        masks = MaskCollator(specs_from_config(cfg.masks), grid).sample(2, 0)
        out = model(torch.randn(2, 3, 8, 32, 32), masks)
        assert math.isfinite(out.loss.item()) and len(out.per_mask_loss) == len(cfg.masks)


def test_objective_run_loss_falls_and_is_deterministic():
    cfg = load_config(DEBUG)
    a = [r.loss for r in run_objective(cfg, 20)]
    b = [r.loss for r in run_objective(cfg, 20)]
    assert a == b
    assert all(math.isfinite(x) for x in a)
    assert sum(a[-5:]) / 5 < 0.95 * sum(a[:5]) / 5  # measured: 0.760 -> 0.647


def test_objective_run_pins_its_thread_count_and_restores_it():
    before = torch.get_num_threads()
    threads = 1 if before != 1 else 2
    seen = []
    cfg = load_config(DEBUG, ["train.deterministic=true", f"train.num_threads={threads}"])
    run_objective(cfg, 2, on_step=lambda r: seen.append(torch.get_num_threads()))
    assert seen == [threads, threads] and torch.get_num_threads() == before
