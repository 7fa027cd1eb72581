"""Parity with the official V-JEPA / V-JEPA 2 code (issue "Checkpoint interop, second round"):
released V-JEPA 2 files with a stored ``pos_embed`` load into RoPE models, the mask-token rule
(V-JEPA 1: token i per generator; V-JEPA 2: token 0), the official step alignment of the LR / WD /
EMA schedules, and the number of mask tokens read from a predictor file."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from vjepa_pipeline.checkpoint.interop import (
    CheckpointError,
    count_mask_tokens,
    load_part,
    load_state_strict,
    save_official,
)
from vjepa_pipeline.config import ConfigError, load_config
from vjepa_pipeline.eval.encoders import load_encoder, load_predictor
from vjepa_pipeline.models.build import build_encoder, build_jepa, build_predictor
from vjepa_pipeline.models.jepa import JEPA, ema_momentum, jepa_forward, mask_token_index, used_mask_tokens
from vjepa_pipeline.models.masks import MaskCollator, specs_from_config
from vjepa_pipeline.models.optim import apply_schedules, build_adamw, learning_rate, weight_decay
from vjepa_pipeline.models.vit import gather_tokens
from vjepa_pipeline.objectives import build_objective

REPO = Path(__file__).resolve().parents[1]
DEBUG = REPO / "configs" / "pretrain" / "debug.yaml"
PRETRAIN = REPO / "configs" / "pretrain"
INTEROP_LOG = "vjepa_pipeline.checkpoint.interop"

# A small RoPE model described by config overrides (as one describes an official file).
SMALL = ["model.size=tiny", "model.depth=2", "model.predictor.embed_dim=96", "model.predictor.depth=2",
         "model.predictor.num_heads=4", "data.num_frames=8", "data.crop_size=64"]


def cfg_of(*overrides):
    return load_config(DEBUG, ["logging.wandb_mode=disabled", *overrides])


@torch.no_grad()
def randomize_(module: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return module.eval()


def small_parts(num_mask_tokens: int = 10, seed: int = 0):
    cfg = load_config(None, SMALL + [f"model.predictor.num_mask_tokens={num_mask_tokens}"])
    frames, crop = cfg.data.num_frames, cfg.data.crop_size
    torch.manual_seed(seed)
    enc = randomize_(build_encoder(cfg.model, frames, crop), seed)
    pred = randomize_(build_predictor(cfg.model, frames, crop), seed + 1)
    return cfg, enc, pred


def interop_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == INTEROP_LOG]


# ============================================================================ 1. released V-JEPA 2 files
def vjepa2_release(enc: nn.Module, pred: nn.Module, tokens: int, dim: int, pdim: int) -> dict:
    """A dict laid out like the released V-JEPA 2 files: ``module.backbone.`` keys, plus the
    ``pos_embed`` / ``predictor_pos_embed`` tables their RoPE models never read."""
    gen = torch.Generator().manual_seed(7)
    wrap = lambda sd: {f"module.backbone.{k}": v.clone() for k, v in sd.items()}
    encoder = wrap(enc.state_dict()) | {"module.backbone.pos_embed": torch.randn(1, tokens, dim, generator=gen)}
    predictor = wrap(pred.state_dict()) | {
        "module.backbone.predictor_pos_embed": torch.randn(1, tokens, pdim, generator=gen)}
    return {"encoder": encoder, "predictor": predictor, "target_encoder": dict(encoder), "epoch": 3}


def test_released_vjepa2_file_loads_into_rope_model_and_says_so_once(tmp_path, caplog):
    cfg, enc, pred = small_parts()
    assert enc.use_rope and not any("pos_embed" in k for k in enc.state_dict())
    path = tmp_path / "vitl.pt"
    torch.save(vjepa2_release(enc, pred, 64, 192, 96), path)

    x = torch.randn(2, 3, 8, 64, 64, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    perm = torch.stack([torch.randperm(64, generator=gen) for _ in range(2)])
    ctx, tgt = perm[:, :40], perm[:, 40:56]
    for part in ("encoder", "target_encoder", "predictor"):
        fresh = randomize_(build_predictor(cfg.model, 8, 64) if part == "predictor"
                           else build_encoder(cfg.model, 8, 64), 99)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger=INTEROP_LOG):
            load_part(path, fresh, part)
        lines = interop_lines(caplog)
        table = "predictor_pos_embed" if part == "predictor" else "pos_embed"
        assert len(lines) == 1, lines
        assert f"'{table}'" in lines[0] and "RoPE" in lines[0] and "model.pos_embed=sincos" in lines[0]
        with torch.no_grad():
            if part == "predictor":
                z = gather_tokens(enc(x), ctx)
                assert torch.equal(fresh(z, ctx, tgt, (4, 4, 4), mask_index=1), pred(z, ctx, tgt, (4, 4, 4), mask_index=1))
            else:
                assert torch.equal(fresh(x), enc(x))

    # the eval loader reads the same file with the model described by overrides
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=INTEROP_LOG):
        loaded = load_encoder(path, SMALL)
    assert len(interop_lines(caplog)) == 1
    with torch.no_grad():
        assert torch.equal(loaded.encoder(x), enc(x))


def test_every_other_strictness_rule_stays_with_a_stored_table():
    cfg, enc, pred = small_parts()
    ckpt = vjepa2_release(enc, pred, 64, 192, 96)
    missing = {k: v for k, v in ckpt["encoder"].items() if not k.endswith("blocks.1.mlp.fc2.bias")}
    with pytest.raises(CheckpointError, match=r"missing \(1\)"):
        load_state_strict(build_encoder(cfg.model, 8, 64), missing, "encoder")
    extra = ckpt["encoder"] | {"module.backbone.head.weight": torch.zeros(3)}
    with pytest.raises(CheckpointError, match=r"unexpected \(1\)"):
        load_state_strict(build_encoder(cfg.model, 8, 64), extra, "encoder")
    shaped = ckpt["predictor"] | {"module.backbone.mask_tokens.0": torch.zeros(1, 1, 7)}
    with pytest.raises(CheckpointError, match=r"shape mismatch \(1\)"):
        load_state_strict(build_predictor(cfg.model, 8, 64), shaped, "predictor")


def test_sincos_models_still_check_their_stored_table():
    cfg = load_config(None, SMALL + ["model.pos_embed=sincos"])
    enc = build_encoder(cfg.model, 8, 64)
    sd = enc.state_dict() | {"pos_embed": enc.pos_embed + 0.01}
    with pytest.raises(CheckpointError, match="uniform_power"):
        load_state_strict(build_encoder(cfg.model, 8, 64), sd, "encoder")


# ============================================================================ 2. mask-token rule
def tiny_jepa(rule: str):
    cfg = cfg_of(f"model.predictor.mask_token_rule={rule}")
    torch.manual_seed(0)
    model = build_jepa(cfg)
    with torch.no_grad():  # distinct tokens: token 1 differs from token 0
        for i, tok in enumerate(model.predictor.mask_tokens):
            tok.copy_(torch.randn(tok.shape, generator=torch.Generator().manual_seed(50 + i)))
    masks = MaskCollator(specs_from_config(cfg.masks), (4, 4, 4), seed=0).sample(2, step=0)
    return model, masks


def by_hand(model, x, masks, token_of):
    """Predictions and loss recomputed with an explicit mask token per generator."""
    with torch.no_grad():
        h = torch.nn.functional.layer_norm(model.target_encoder(x), (64,))
        preds, losses = [], []
        for i, (ctx, tgt) in enumerate(masks):
            p = model.predictor(model.encoder(x, ctx), ctx, tgt, (4, 4, 4), mask_index=token_of(i))
            preds.append(p)
            losses.append((p - gather_tokens(h, tgt)).abs().mean())
    return preds, torch.stack(losses).mean()


@pytest.mark.parametrize("rule,token_of", [("per_generator", lambda i: i), ("shared", lambda i: 0)])
def test_mask_token_rule_picks_the_token(rule, token_of):
    model, masks = tiny_jepa(rule)
    assert len(masks) == 2
    x = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model(x, masks)
    preds, loss = by_hand(model, x, masks, token_of)
    for ours, expected in zip(out.predictions, preds):
        torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
    assert out.loss.item() == pytest.approx(loss.item(), rel=1e-6)
    # the other rule's token for generator 1 gives a different prediction and loss
    other = (lambda i: 0) if rule == "per_generator" else (lambda i: i)
    other_preds, other_loss = by_hand(model, x, masks, other)
    torch.testing.assert_close(out.predictions[0], other_preds[0], rtol=0, atol=1e-6)
    assert (out.predictions[1] - other_preds[1]).abs().max() > 1e-3
    assert abs(out.loss.item() - other_loss.item()) > 1e-5


def test_shared_rule_equals_per_generator_when_tokens_agree():
    model, masks = tiny_jepa("shared")
    with torch.no_grad():
        for tok in model.predictor.mask_tokens:
            tok.copy_(model.predictor.mask_tokens[0])
    x = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        shared = jepa_forward(model.encoder, model.predictor, model.target_encoder, x, masks, "shared").loss
        per = jepa_forward(model.encoder, model.predictor, model.target_encoder, x, masks, "per_generator").loss
    assert shared.item() == per.item()


def test_mask_token_index_and_used_tokens():
    assert [mask_token_index(i) for i in range(3)] == [0, 1, 2]
    assert [mask_token_index(i, "shared") for i in range(3)] == [0, 0, 0]
    assert used_mask_tokens(2, 10) == {0, 1} and used_mask_tokens(2, 10, "shared") == {0}
    assert used_mask_tokens(3, 2) == {0, 1}  # wraps like the predictor
    with pytest.raises(ValueError, match="per_generator"):
        mask_token_index(0, "by_clip_length")
    model = cfg_of().model
    with pytest.raises(ValueError, match="shared"):
        JEPA(build_encoder(model, 8, 32), build_predictor(model, 8, 32), mask_token_rule="x")


@pytest.mark.parametrize("rule,trainable", [("per_generator", [True, True] + [False] * 8),
                                            ("shared", [True] + [False] * 9)])
def test_only_the_used_tokens_train(rule, trainable):
    """The objective freezes the tokens its rule never uses (DDP must see no unused parameters),
    and a backward pass reaches exactly the trainable ones."""
    cfg = cfg_of(f"model.predictor.mask_token_rule={rule}")
    obj = build_objective(cfg)
    tokens = obj.trainable_networks()["predictor"].mask_tokens
    assert [t.requires_grad for t in tokens] == trainable
    from vjepa_pipeline.data.synthetic import SyntheticClips
    from vjepa_pipeline.train.data import synthetic_batch

    out = obj.step(synthetic_batch(SyntheticClips(8, 32, seed=0), 0, 2))
    out.loss.backward()
    assert [t.grad is not None for t in tokens] == trainable
    # AdamW only ever sees the trainable tokens
    opt = build_adamw(list(obj.trainable_networks().values()), cfg.optim)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert [id(t) in in_opt for t in tokens] == trainable


def test_mask_token_rule_config():
    assert cfg_of().model.predictor.mask_token_rule == "per_generator"  # default: V-JEPA 1, unchanged
    cfg_of("model.predictor.mask_token_rule=shared", "model.predictor.num_mask_tokens=1")  # 2 generators, 1 token
    with pytest.raises(ConfigError, match="num_mask_tokens"):
        cfg_of("model.predictor.num_mask_tokens=1")
    with pytest.raises(ConfigError, match="shared"):
        cfg_of("model.predictor.mask_token_rule=by_clip")


@pytest.mark.parametrize("name", sorted(p.name for p in PRETRAIN.glob("vjepa*.yaml")))
def test_official_recipes_use_the_official_rules(name):
    cfg = load_config(PRETRAIN / name)
    expected = "shared" if name.startswith("vjepa2_") else "per_generator"
    assert cfg.model.predictor.mask_token_rule == expected
    assert cfg.optim.schedule_alignment == "official"
    if expected == "shared":
        assert used_mask_tokens(len(cfg.masks), cfg.model.predictor.num_mask_tokens, "shared") == {0}


# ============================================================================ 3. step alignment
class OfficialSchedules:
    """The official trainers' schedule objects as they behave (src/utils/schedulers.py and the
    momentum generator of app/vjepa/train.py, ipe_scale 1): ``step()`` is called once BEFORE each
    optimizer step, the momentum generator is advanced once AFTER it."""

    def __init__(self, o, total: int):
        self.o, self.total, self._step = o, total, 0
        self._momentum = (o.ema_momentum[0] + i * (o.ema_momentum[1] - o.ema_momentum[0]) / total
                          for i in range(total + 1))

    def step(self) -> tuple[float, float]:
        o, s = self.o, self._step + 1
        self._step = s
        if s < o.warmup_steps:
            lr = o.start_lr + s / max(1, o.warmup_steps) * (o.lr - o.start_lr)
        else:
            progress = (s - o.warmup_steps) / max(1, self.total - o.warmup_steps)
            lr = max(o.final_lr, o.final_lr + (o.lr - o.final_lr) * 0.5 * (1 + math.cos(math.pi * progress)))
        wd = o.final_weight_decay + (o.weight_decay - o.final_weight_decay) * 0.5 * (1 + math.cos(math.pi * s / self.total))
        wd = min(o.final_weight_decay, wd) if o.final_weight_decay > o.weight_decay else max(o.final_weight_decay, wd)
        return lr, wd

    def momentum(self) -> float:
        return next(self._momentum)


def test_official_alignment_reproduces_the_official_schedules():
    total = 12
    cfg = cfg_of("optim.schedule_alignment=official", "optim.warmup_steps=3", "optim.weight_decay=0.04",
                 "optim.final_weight_decay=0.4", "optim.ema_momentum=[0.99,1.0]", f"train.max_steps={total}")
    obj = build_objective(cfg, total_steps=total)
    opt = build_adamw(list(obj.trainable_networks().values()), cfg.optim)
    official = OfficialSchedules(cfg.optim, total)
    for k in range(total):  # k = optimizer steps already taken
        ref_lr, ref_wd = official.step()
        lr, wd = apply_schedules(opt, cfg.optim, k, total)
        assert (lr, wd) == (pytest.approx(ref_lr, rel=1e-12), pytest.approx(ref_wd, rel=1e-12)), k
        assert opt.param_groups[0]["lr"] == lr and opt.param_groups[0]["weight_decay"] == wd
        assert obj.after_optimizer_step(k + 1)["ema_momentum"] == pytest.approx(official.momentum(), rel=1e-12)


def test_pipeline_alignment_is_unchanged():
    total = 12
    cfg = cfg_of("optim.warmup_steps=3", "optim.final_weight_decay=0.4", f"train.max_steps={total}")
    assert cfg.optim.schedule_alignment == "pipeline"
    obj = build_objective(cfg, total_steps=total)
    opt = build_adamw(list(obj.trainable_networks().values()), cfg.optim)
    o = cfg.optim
    for k in range(total):
        assert apply_schedules(opt, o, k, total) == (learning_rate(o, k, total), weight_decay(o, k, total))
        assert obj.after_optimizer_step(k + 1)["ema_momentum"] == ema_momentum(k + 1, total, *o.ema_momentum)
    assert apply_schedules(opt, o, 0, total)[0] == pytest.approx(o.start_lr)


# ============================================================================ 3b. mask tokens read from the file
def test_count_mask_tokens():
    _, _, pred = small_parts(num_mask_tokens=2)
    assert count_mask_tokens({f"module.backbone.{k}": v for k, v in pred.state_dict().items()}) == 2
    assert count_mask_tokens({"predictor_embed.weight": torch.zeros(1)}) == 0
    with pytest.raises(CheckpointError, match="mask_tokens.0"):
        count_mask_tokens({"mask_tokens.0": torch.zeros(1), "mask_tokens.2": torch.zeros(1)})


def test_load_predictor_reads_the_mask_token_count_from_the_file(tmp_path, caplog):
    """The default of 10 tokens meets a 2-token (V-JEPA 1 style) file: the count is taken from the
    file, and the predictions equal those of the saved predictor for every token."""
    tokens, other = 2, 10
    _, enc, pred = small_parts(num_mask_tokens=tokens, seed=10)
    path = tmp_path / "official.pt"
    save_official(path, {"encoder": enc, "predictor": pred, "target_encoder": enc})
    assert load_config(None, SMALL).model.predictor.num_mask_tokens == other
    with caplog.at_level(logging.INFO, logger="vjepa_pipeline.eval.encoders"):
        loaded = load_predictor(path, SMALL)
    assert loaded.kind == "official" and loaded.num_mask_tokens == tokens
    assert any("2 mask tokens" in r.getMessage() for r in caplog.records)
    x = torch.randn(1, 3, 8, 64, 64, generator=torch.Generator().manual_seed(5))
    ctx, tgt = torch.arange(40).unsqueeze(0), torch.arange(40, 60).unsqueeze(0)
    with torch.no_grad():
        z = gather_tokens(enc(x), ctx)
        for i in range(tokens):
            assert torch.equal(loaded.predictor(z, ctx, tgt, (4, 4, 4), mask_index=i), pred(z, ctx, tgt, (4, 4, 4), mask_index=i))
    # an explicit override is obeyed (and the strict error names the fix)
    with pytest.raises(CheckpointError, match=f"num_mask_tokens={tokens}"):
        load_predictor(path, SMALL + [f"model.predictor.num_mask_tokens={other}"])


def test_load_predictor_of_a_released_vjepa2_file(tmp_path, caplog):
    _, enc, pred = small_parts(num_mask_tokens=10, seed=12)
    path = tmp_path / "vitl.pt"
    torch.save(vjepa2_release(enc, pred, 64, 192, 96), path)
    with caplog.at_level(logging.INFO, logger=INTEROP_LOG):
        loaded = load_predictor(path, SMALL)
    assert loaded.num_mask_tokens == 10 and len(interop_lines(caplog)) == 1
    with torch.no_grad():
        z, ctx, tgt = torch.randn(1, 40, 192), torch.arange(40).unsqueeze(0), torch.arange(40, 60).unsqueeze(0)
        assert torch.equal(loaded.predictor(z, ctx, tgt, (4, 4, 4), mask_index=7), pred(z, ctx, tgt, (4, 4, 4), mask_index=7))


def test_both_trainer_loops_apply_the_alignment(tmp_path):
    """The plain loop (``vjepa objective``) and the Lightning module read the schedules through
    ``apply_schedules`` / ``after_optimizer_step``: their first step logs the official values."""
    from vjepa_pipeline.train.objective_run import run_objective

    cfg = cfg_of(*cfg_overrides(tmp_path))
    first = run_objective(cfg)[0]
    o = cfg.optim
    assert first.lr == pytest.approx(learning_rate(o, 1, 2)) and first.lr != pytest.approx(o.start_lr)
    assert first.ema_momentum == pytest.approx(0.99)

    import json

    from vjepa_pipeline.train.pretrain import pretrain

    pretrain(cfg_of(*cfg_overrides(tmp_path)), progress=False)
    rows = [json.loads(line) for line in (tmp_path / "debug" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["lr"] == pytest.approx(learning_rate(o, 1, 2)) and rows[0]["ema"] == pytest.approx(0.99)
    assert rows[1]["lr"] == pytest.approx(learning_rate(o, 2, 2)) and rows[1]["ema"] == pytest.approx(0.995)


def cfg_overrides(tmp_path) -> list[str]:
    return ["optim.schedule_alignment=official", "optim.ema_momentum=[0.99,1.0]", "train.max_steps=2",
            "data.batch_size=2", f"train.run_dir={tmp_path}", "logging.log_every_steps=1",
            "train.checkpoint_every_steps=2"]
