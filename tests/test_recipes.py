"""The recipes under configs/pretrain: every one loads and validates, and the published ones
carry the official V-JEPA / V-JEPA 2 headline numbers (DESIGN.md section 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vjepa_pipeline.config import load_config
from vjepa_pipeline.models.build import build_encoder, build_predictor
from vjepa_pipeline.models.optim import learning_rate, weight_decay

REPO = Path(__file__).resolve().parents[1]
PRETRAIN = REPO / "configs" / "pretrain"
ALL_RECIPES = sorted(p.name for p in PRETRAIN.glob("*.yaml"))

OFFICIAL_GLOBAL_BATCH = 3072
OFFICIAL_MASKS = [
    # (num_blocks, spatial_scale, temporal_scale, aspect_ratio)
    (8, (0.15, 0.15), (1.0, 1.0), (0.75, 1.5)),
    (2, (0.7, 0.7), (1.0, 1.0), (0.75, 1.5)),
]

# recipe -> (size, crop px, frames, pos_embed, peak lr, ema, max_steps, strategy)
PUBLISHED = {
    "vjepa_vitl16.yaml": ("large", 224, 16, "sincos", 6.25e-4, (0.998, 1.0), 90_000, "ddp"),
    "vjepa_vith16.yaml": ("huge", 224, 16, "sincos", 6.25e-4, (0.998, 1.0), 90_000, "ddp"),
    "vjepa2_vitl16.yaml": ("large", 256, 16, "rope", 5.25e-4, (0.99925, 0.99925), 240_000, "ddp"),
    "vjepa2_vith16.yaml": ("huge", 256, 16, "rope", 5.25e-4, (0.99925, 0.99925), 240_000, "ddp"),
    "vjepa2_vitg16.yaml": (
        "giant_v2", 256, 16, "rope", 5.25e-4, (0.99925, 0.99925), 240_000, "deepspeed_stage_2"
    ),
    "vjepa2_vitl16_cooldown.yaml": (
        "large", 256, 64, "rope", 5.25e-4, (0.99925, 0.99925), 12_000, "ddp"
    ),
    "vjepa2_vitg16_cooldown.yaml": (
        "giant_v2", 384, 64, "rope", 5.25e-4, (0.99925, 0.99925), 12_000, "deepspeed_stage_2"
    ),
}
V1 = [name for name in PUBLISHED if name.startswith("vjepa_")]
V2_MAIN = ["vjepa2_vitl16.yaml", "vjepa2_vith16.yaml", "vjepa2_vitg16.yaml"]
COOLDOWNS = ["vjepa2_vitl16_cooldown.yaml", "vjepa2_vitg16_cooldown.yaml"]

# Encoder parameter counts (patch embed + blocks + final norm; no CLS token, positions are a
# buffer or RoPE): ViT-L ~304M, ViT-H ~632M, ViT-g ~1012M.
ENCODER_PARAMS_M = {"large": 304, "huge": 632, "giant_v2": 1012}


def _load(name: str):
    return load_config(PRETRAIN / name)


def _global_batch(cfg) -> int:
    t = cfg.train
    return cfg.data.batch_size * t.devices * t.num_nodes * t.accumulate_grad_batches


def test_published_recipes_exist():
    missing = set(PUBLISHED) - set(ALL_RECIPES)
    assert not missing, f"missing recipes: {sorted(missing)}"
    assert "demo.yaml" in ALL_RECIPES


@pytest.mark.parametrize("name", ALL_RECIPES)
def test_every_recipe_loads_and_validates(name):
    cfg = _load(name)  # load_config type-checks and runs the cross-field validation
    assert cfg.name == Path(name).stem
    assert cfg.optim.warmup_steps + cfg.optim.cooldown_steps <= cfg.train.max_steps


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_headline_numbers(name):
    size, crop, frames, pos, lr, ema, steps, strategy = PUBLISHED[name]
    cfg = _load(name)
    m, d, o, t = cfg.model, cfg.data, cfg.optim, cfg.train
    assert (m.size, m.embed_dim, m.depth, m.num_heads, m.mlp_ratio) == (size, None, None, None, None)
    assert (m.patch_size, m.tubelet_size) == (16, 2)
    assert (d.crop_size, d.num_frames, m.pos_embed) == (crop, frames, pos)
    assert o.lr == pytest.approx(lr)
    assert o.ema_momentum == pytest.approx(ema)
    assert t.max_steps == steps
    assert t.strategy == strategy
    assert t.precision == "bf16-mixed"
    assert m.activation_checkpointing
    assert _global_batch(cfg) == OFFICIAL_GLOBAL_BATCH
    # the SLURM shape matches the trainer's
    assert (cfg.launch.nodes, cfg.launch.gpus_per_node) == (t.num_nodes, t.devices)
    assert [
        (k.num_blocks, k.spatial_scale, k.temporal_scale, k.aspect_ratio) for k in cfg.masks
    ] == OFFICIAL_MASKS
    assert (m.predictor.embed_dim, m.predictor.depth) == (384, 12)
    assert o.betas == pytest.approx((0.9, 0.999)) and o.eps == pytest.approx(1e-8)
    assert d.crop_scale == pytest.approx((0.3, 1.0))
    assert d.crop_ratio == pytest.approx((0.75, 1.35))
    assert d.hflip
    assert d.source == "shards" and (d.path or d.sources)  # V-JEPA 2: the official mixture (test_mixtures.py)


@pytest.mark.parametrize("name", V1)
def test_vjepa1_recipe(name):
    cfg = _load(name)
    m, d, o = cfg.model, cfg.data, cfg.optim
    assert m.uniform_power
    assert d.frame_step == 4 and d.target_fps is None
    # official V-JEPA 1: predictor uses the encoder's head count, one mask token per generator
    assert m.predictor.num_heads == m.resolved_size()[2] == 16
    assert m.predictor.num_mask_tokens == len(cfg.masks) == 2
    assert (o.start_lr, o.final_lr, o.warmup_steps) == (pytest.approx(2e-4), pytest.approx(1e-6), 12_000)
    assert o.lr_schedule == "cosine" and o.ema_schedule == "linear"
    assert (o.weight_decay, o.final_weight_decay) == (pytest.approx(0.04), pytest.approx(0.4))
    assert o.clip_grad == pytest.approx(10.0)
    total = cfg.train.max_steps
    assert learning_rate(o, 0, total) == pytest.approx(2e-4)
    assert learning_rate(o, 12_000, total) == pytest.approx(6.25e-4)
    assert learning_rate(o, total, total) == pytest.approx(1e-6)
    assert weight_decay(o, total, total) == pytest.approx(0.4)


@pytest.mark.parametrize("name", V2_MAIN)
def test_vjepa2_main_phase_is_warmup_then_constant(name):
    cfg = _load(name)
    m, d, o = cfg.model, cfg.data, cfg.optim
    assert d.target_fps == 4
    assert m.predictor.num_heads == 12
    assert (o.start_lr, o.warmup_steps) == (pytest.approx(1e-4), 12_000)
    assert o.lr_schedule == "constant_cooldown" and o.cooldown_steps == 0
    assert o.clip_grad is None
    assert o.ema_schedule == "constant"
    assert o.weight_decay == o.final_weight_decay == pytest.approx(0.04)
    total = cfg.train.max_steps
    assert learning_rate(o, 0, total) == pytest.approx(1e-4)
    assert learning_rate(o, 6_000, total) == pytest.approx((1e-4 + 5.25e-4) / 2)
    for step in (12_000, total // 2, total - 1, total):
        assert learning_rate(o, step, total) == pytest.approx(5.25e-4)
        assert weight_decay(o, step, total) == pytest.approx(0.04)


@pytest.mark.parametrize("name", COOLDOWNS)
def test_cooldown_is_a_pure_linear_decay(name):
    cfg = _load(name)
    o, total = cfg.optim, cfg.train.max_steps
    assert total == 12_000
    assert o.warmup_steps == 0 and o.cooldown_steps == total
    start, end = 5.25e-4, 1e-6
    for step in (0, total // 4, total // 2, 3 * total // 4, total):
        expected = start + (end - start) * step / total
        assert learning_rate(o, step, total) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # what it inherits from its main phase is unchanged
    main = _load(name.replace("_cooldown", ""))
    assert cfg.model == main.model
    assert cfg.masks == main.masks
    assert (o.ema_momentum, o.ema_schedule, o.clip_grad) == (
        main.optim.ema_momentum, main.optim.ema_schedule, main.optim.clip_grad
    )
    assert o.weight_decay == o.final_weight_decay == pytest.approx(0.04)
    assert cfg.data.target_fps == main.data.target_fps == 4


def test_vjepa2_total_is_252k_iterations():
    for size in ("vitl16", "vitg16"):
        main, cool = _load(f"vjepa2_{size}.yaml"), _load(f"vjepa2_{size}_cooldown.yaml")
        assert main.train.max_steps + cool.train.max_steps == 252_000


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_encoder_parameter_count(name):
    cfg = _load(name)
    with torch.device("meta"):
        encoder = build_encoder(cfg.model, cfg.data.num_frames, cfg.data.crop_size)
        predictor = build_predictor(cfg.model, cfg.data.num_frames, cfg.data.crop_size)
    n_enc = sum(p.numel() for p in encoder.parameters())
    n_pred = sum(p.numel() for p in predictor.parameters())
    assert n_enc / 1e6 == pytest.approx(ENCODER_PARAMS_M[cfg.model.size], abs=1.0)
    assert 21e6 < n_pred < 23e6  # 384-wide, 12-deep predictor (~22M) for every size


def test_demo_recipe_is_cpu_sized():
    cfg = _load("demo.yaml")
    m, d, t = cfg.model, cfg.data, cfg.train
    assert d.source == "shards" and d.path == "runs/demo/shards"
    assert (d.num_frames, d.frame_step, d.crop_size, d.batch_size, d.num_workers) == (8, 2, 64, 8, 2)
    assert t.precision == "32" and t.devices == t.num_nodes == 1
    assert cfg.logging.wandb_mode == "disabled"
    assert 100 <= t.max_steps <= 2000  # ~0.1 s per step on 2 cores, 3 seeds in make demo's 15 minutes
    dim, depth, heads, _ = m.resolved_size()
    assert 96 <= dim <= 192 and 4 <= depth <= 6 and 4 <= heads <= 6
    assert m.predictor.embed_dim == dim  # a narrower predictor never learned positions in the budget
    assert m.predictor.depth == 1  # a deeper one does the motion itself (docs/benchmarks.md, Demo)
    assert all(mask.max_temporal_keep == 0.5 for mask in cfg.masks)  # predict the second half
    with torch.device("meta"):
        n_enc = sum(p.numel() for p in build_encoder(m, d.num_frames, d.crop_size).parameters())
    assert n_enc < 3e6
