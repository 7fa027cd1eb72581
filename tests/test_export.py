"""`vjepa export`: training checkpoints (Lightning files, DeepSpeed directories) -> native, official
and Hugging Face weights (vjepa_pipeline.checkpoint.export, vjepa_pipeline.cli.export_cmd)."""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import textwrap
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from payloads import Payload

from helpers import perturb_
from vjepa_pipeline.errors import CheckpointError
from vjepa_pipeline.checkpoint.export import (
    FORMATS,
    WHATS,
    check_request,
    clean_key,
    export,
    load_training_checkpoint,
    resolve_checkpoint,
)
from vjepa_pipeline.checkpoint.interop import NATIVE_FORMAT, load_part, read_checkpoint
from vjepa_pipeline.cli import export_cmd
from vjepa_pipeline.cli.main import main as vjepa_main
from vjepa_pipeline.config import config_to_dict, dump_config, load_config
from vjepa_pipeline.models.build import build_encoder, build_predictor
from vjepa_pipeline.models.optim import build_adamw
from vjepa_pipeline.models.vit import gather_tokens

ROOT = Path(__file__).resolve().parents[1]
DEBUG = ROOT / "configs/pretrain/debug.yaml"
STEP = 7


# ----------------------------------------------------------------------------- helpers
def debug_cfg(*overrides: str):
    return load_config(DEBUG, list(overrides))


def build_parts(cfg, seed: int = 0):
    """encoder, predictor and a distinct target encoder (a perturbed copy, as after EMA steps)."""
    torch.manual_seed(seed)
    frames, crop = cfg.data.num_frames, cfg.data.crop_size
    enc = perturb_(build_encoder(cfg.model, frames, crop), seed + 1).eval()
    pred = perturb_(build_predictor(cfg.model, frames, crop), seed + 2).eval()
    target = perturb_(copy.deepcopy(enc), seed + 3, scale=0.01).eval()
    return enc, pred, target


def trained_optimizer(cfg, enc: nn.Module, pred: nn.Module, steps: int = 2, seed: int = 0,
                      freeze_unused_tokens: bool = True):
    """Our trainer's AdamW (models.optim.build_adamw over copies of [encoder, predictor], as
    configure_optimizers builds it; the objective freezes the mask tokens no generator uses) after
    ``steps`` steps on random gradients, so that every parameter's moments differ; and its
    per-parameter state keyed by ('encoder' | 'predictor', name)."""
    copies = {"encoder": copy.deepcopy(enc).train(), "predictor": copy.deepcopy(pred).train()}
    if freeze_unused_tokens:
        for i, token in enumerate(copies["predictor"].mask_tokens):
            token.requires_grad_(i < len(cfg.masks))
    opt = build_adamw(list(copies.values()), cfg.optim)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for m in copies.values():
            for p in m.parameters():
                p.grad = torch.randn(p.shape, generator=gen) if p.requires_grad else None
        opt.step()
    by_name = {(part, n): opt.state[p] for part, m in copies.items() for n, p in m.named_parameters() if opt.state.get(p)}
    return opt, by_name


def optimizer_states(cfg, enc: nn.Module, pred: nn.Module) -> list[dict]:
    """A real AdamW state dict (exp_avg, exp_avg_sq, step, param_groups), as Lightning stores it."""
    return [trained_optimizer(cfg, enc, pred, steps=1)[0].state_dict()]


def lightning_checkpoint(cfg, enc, pred, target, prefix: str = "", **extra) -> dict:
    """A dict shaped like Lightning's ``trainer.save_checkpoint`` output for our ObjectiveModule."""
    from importlib.metadata import version

    state = OrderedDict()
    for name, module in (("encoder", enc), ("predictor", pred)):
        for k, v in module.state_dict().items():
            state[f"{prefix}{name}.{k}"] = v.detach().clone()
    ckpt = {
        "epoch": 0,
        "global_step": STEP,
        "pytorch-lightning_version": version("lightning"),
        "state_dict": state,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 1, "completed": 0}}}},
        "callbacks": {},
        "optimizer_states": optimizer_states(cfg, enc, pred),
        "lr_schedulers": [],
        "target_encoder": {k: v.detach().clone().float() for k, v in target.state_dict().items()},
        "vjepa": {"format_version": 1, "config": config_to_dict(cfg)},
    }
    ckpt.update(extra)
    return ckpt


def write_run(root: Path, cfg, ckpt: dict, step: int = STEP, with_last: bool = True) -> Path:
    """runs/<name>/{config.yaml, checkpoints/step_<n>/model.ckpt, last} as vjepa pretrain lays it out."""
    run = root / "runs" / cfg.name
    step_dir = run / "checkpoints" / f"step_{step:010d}"
    step_dir.mkdir(parents=True)
    dump_config(cfg, run / "config.yaml")
    torch.save(ckpt, step_dir / "model.ckpt")
    if with_last:
        (run / "last").write_text(step_dir.name + "\n")
    return run


def random_clip(cfg, seed: int = 0, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, cfg.data.num_frames, cfg.data.crop_size, cfg.data.crop_size, generator=g)


def fresh(cfg, kind: str) -> nn.Module:
    build = build_predictor if kind == "predictor" else build_encoder
    return perturb_(build(cfg.model, cfg.data.num_frames, cfg.data.crop_size), 99).eval()  # != the source


def max_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return (a(x) - b(x)).abs().max().item()


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A fake run directory holding a Lightning-style checkpoint of the debug recipe (RoPE)."""
    cfg = debug_cfg()
    enc, pred, target = build_parts(cfg)
    root = tmp_path_factory.mktemp("lightning_run")
    run = write_run(root, cfg, lightning_checkpoint(cfg, enc, pred, target))
    return {"cfg": cfg, "run": run, "enc": enc, "pred": pred, "target": target}


# ----------------------------------------------------------------------------- resolving
def test_resolve_checkpoint_accepts_run_step_file_and_last(source):
    run = source["run"]
    ckpt = run / "checkpoints" / f"step_{STEP:010d}" / "model.ckpt"
    assert resolve_checkpoint(run) == ckpt
    assert resolve_checkpoint(ckpt.parent) == ckpt
    assert resolve_checkpoint(ckpt) == ckpt
    assert resolve_checkpoint(run / "last") == ckpt


def test_load_training_checkpoint_gives_fp32_native_state(source):
    tc = load_training_checkpoint(source["run"])
    assert tc.step == STEP and tc.kind == "lightning"
    assert tc.config.model.embed_dim == 64 and tc.config.data.crop_size == 32
    for sd, module in ((tc.encoder_sd, source["enc"]), (tc.predictor_sd, source["pred"]),
                       (tc.target_sd, source["target"])):
        assert sd.keys() == module.state_dict().keys()
        assert all(v.dtype == torch.float32 and v.device.type == "cpu" for v in sd.values())
        assert all(torch.equal(sd[k], v) for k, v in module.state_dict().items())


# ----------------------------------------------------------------------------- native
@pytest.mark.parametrize("what", WHATS)
def test_native_export_reloads_exactly(source, tmp_path, what):
    cfg, out = source["cfg"], tmp_path / "export.pt"
    result = export(source["run"], out, what=what, fmt="native")
    assert result.out == out and result.step == STEP
    stored = read_checkpoint(out)
    assert stored["format"] == NATIVE_FORMAT and stored["step"] == STEP
    assert stored["config"]["model"]["pos_embed"] == "rope"  # load_part checks the position mode from it
    expected = {"target_encoder": ["target_encoder"], "encoder": ["encoder"], "predictor": ["predictor"],
                "all": ["encoder", "predictor", "target_encoder"]}[what]
    assert sorted(k for k in ("encoder", "predictor", "target_encoder") if k in stored) == expected
    x = random_clip(cfg, seed=1)
    for part in expected:
        src = {"encoder": source["enc"], "predictor": source["pred"],
               "target_encoder": source["target"]}[part]
        loaded = load_part(out, fresh(cfg, part), part)
        assert same_weights(loaded, src)
        if part != "predictor":
            assert max_diff(loaded, src, x) == 0.0
    if what == "target_encoder":  # the target really is distinct from the context encoder
        assert max_diff(source["enc"], source["target"], x) > 1e-4
        with pytest.raises(CheckpointError, match="no 'encoder' weights"):
            load_part(out, fresh(cfg, "encoder"), "encoder")


# ----------------------------------------------------------------------------- official
@pytest.mark.parametrize("what", ["target_encoder", "encoder", "all"])
def test_official_export_has_all_three_parts(source, tmp_path, what):
    cfg, out = source["cfg"], tmp_path / "official.pt"
    export(source["run"], out, what=what, fmt="official")
    raw = torch.load(out, weights_only=True)
    assert sorted(raw) == sorted(OFFICIAL_TOP_LEVEL)
    assert all(k.startswith("module.backbone.") for part in PARTS for k in raw[part])
    chosen = source["enc"] if what == "encoder" else source["target"]
    expected = {"encoder": source["enc"] if what == "all" else chosen, "target_encoder": chosen,
                "predictor": source["pred"]}
    x = random_clip(cfg, seed=2)
    for part, src in expected.items():
        loaded = load_part(out, fresh(cfg, part), part)
        assert same_weights(loaded, src), part
        if part != "predictor":
            assert max_diff(loaded, src, x) == 0.0


def test_official_sincos_export_carries_the_position_table(tmp_path):
    cfg = debug_cfg("model.pos_embed=sincos")
    enc, pred, target = build_parts(cfg, seed=5)
    run = write_run(tmp_path, cfg, lightning_checkpoint(cfg, enc, pred, target))
    out = tmp_path / "official.pt"
    export(run, out, fmt="official")
    raw = torch.load(out, weights_only=True)
    assert "module.backbone.pos_embed" in raw["target_encoder"]
    assert "module.backbone.predictor_pos_embed" in raw["predictor"]
    loaded = load_part(out, fresh(cfg, "target_encoder"), "target_encoder")
    assert max_diff(loaded, target, random_clip(cfg, seed=3)) == 0.0


# ----------------------------------------------------------------------------- the official tools
# Minimal replicas of what the official code does with an exported file. Module structure and
# parameter registration order follow src/models/vision_transformer.py and src/models/predictor.py
# (facebookresearch/jepa and /vjepa2: own nn.Parameter pos_embed with requires_grad=False for
# sin-cos models, none for RoPE), the optimizer grouping app/vjepa/utils.py init_opt, and the load
# sequences app/vjepa/utils.py load_checkpoint (V-JEPA 1 wraps it in a try that silently restarts
# from epoch 0 on any error: here every step must succeed), the frozen evals' load_pretrained /
# modelcustom init_module and the V-JEPA 2 hub loader. docs/interop.md lists the keys per script.
PARTS = ("encoder", "predictor", "target_encoder")
OFFICIAL_TOP_LEVEL = {  # every key the official train / eval scripts read (or their trainer writes), and its type
    "encoder": dict, "predictor": dict, "target_encoder": dict, "opt": dict, "scaler": dict, "epoch": int,
    "loss": float, "batch_size": int, "world_size": int, "lr": float,
}


class OfficialMLP(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)


class OfficialAttention(nn.Module):
    def __init__(self, dim, qkv_bias):
        super().__init__()
        self.qkv, self.attn_drop, self.proj = nn.Linear(dim, 3 * dim, bias=qkv_bias), nn.Dropout(0.0), nn.Linear(dim, dim)


class OfficialBlock(nn.Module):
    def __init__(self, dim, hidden, qkv_bias):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = OfficialAttention(dim, qkv_bias)
        self.drop_path = nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = OfficialMLP(dim, hidden)


class OfficialPatchEmbed3D(nn.Module):
    def __init__(self, patch, tubelet, in_chans, dim):
        super().__init__()
        self.proj = nn.Conv3d(in_chans, dim, (tubelet, patch, patch), stride=(tubelet, patch, patch))


def official_sizes(cfg) -> dict:
    m, p = cfg.model, cfg.model.predictor
    dim, depth, _, ratio = m.resolved_size()
    tokens = (cfg.data.num_frames // m.tubelet_size) * (cfg.data.crop_size // m.patch_size) ** 2
    return dict(dim=dim, depth=depth, hidden=int(dim * ratio), tokens=tokens, sincos=m.pos_embed == "sincos",
                pdim=p.embed_dim, pdepth=p.depth, phidden=int(p.embed_dim * p.mlp_ratio), ntok=p.num_mask_tokens)


class OfficialVisionTransformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        s, m = official_sizes(cfg), cfg.model
        self.patch_embed = OfficialPatchEmbed3D(m.patch_size, m.tubelet_size, m.in_chans, s["dim"])
        self.pos_embed = (nn.Parameter(torch.zeros(1, s["tokens"], s["dim"]), requires_grad=False)
                          if s["sincos"] else None)
        self.blocks = nn.ModuleList([OfficialBlock(s["dim"], s["hidden"], m.qkv_bias) for _ in range(s["depth"])])
        self.norm = nn.LayerNorm(s["dim"])


class OfficialPredictor(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        s, m = official_sizes(cfg), cfg.model
        self.predictor_embed = nn.Linear(s["dim"], s["pdim"])
        self.mask_tokens = nn.ParameterList([nn.Parameter(torch.zeros(1, 1, s["pdim"])) for _ in range(s["ntok"])])
        self.predictor_pos_embed = (nn.Parameter(torch.zeros(1, s["tokens"], s["pdim"]), requires_grad=False)
                                    if s["sincos"] else None)
        self.predictor_blocks = nn.ModuleList([OfficialBlock(s["pdim"], s["phidden"], m.qkv_bias)
                                               for _ in range(s["pdepth"])])
        self.predictor_norm = nn.LayerNorm(s["pdim"])
        self.predictor_proj = nn.Linear(s["pdim"], s["dim"])


class Wrapped(nn.Module):  # MultiMaskWrapper (V-JEPA 1) / MultiSeqWrapper (V-JEPA 2): self.backbone
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone


class DDP(nn.Module):  # DistributedDataParallel's state-dict view: self.module
    def __init__(self, module):
        super().__init__()
        self.module = module


def official_init_opt(encoder, predictor, betas=(0.9, 0.999), eps=1e-8):
    """app/vjepa/utils.py init_opt's groups (both repos), called on the wrapped models before DDP."""
    groups = [
        {"params": (p for n, p in encoder.named_parameters() if ("bias" not in n) and (len(p.shape) != 1))},
        {"params": (p for n, p in predictor.named_parameters() if ("bias" not in n) and (len(p.shape) != 1))},
        {"params": (p for n, p in encoder.named_parameters() if ("bias" in n) or (len(p.shape) == 1)),
         "WD_exclude": True, "weight_decay": 0},
        {"params": (p for n, p in predictor.named_parameters() if ("bias" in n) or (len(p.shape) == 1)),
         "WD_exclude": True, "weight_decay": 0},
    ]
    return torch.optim.AdamW(groups, betas=betas, eps=eps)


def official_cosine_wd_step(optimizer, new_wd):
    """src/utils/schedulers.py CosineWDSchedule.step's update (the value aside)."""
    for group in optimizer.param_groups:
        if ("WD_exclude" not in group) or not group["WD_exclude"]:
            group["weight_decay"] = new_wd


def official_trainer_state(cfg):
    """app/vjepa/train.py up to the checkpoint load: models, init_opt, GradScaler (bf16), DDP."""
    encoder, predictor = Wrapped(OfficialVisionTransformer(cfg)), Wrapped(OfficialPredictor(cfg))
    target = copy.deepcopy(encoder)
    opt = official_init_opt(encoder, predictor)
    scaler = torch.amp.GradScaler("cpu")  # meta.dtype bfloat16 -> mixed_precision -> a GradScaler
    encoder, predictor, target = DDP(encoder), DDP(predictor), DDP(target)
    for p in target.parameters():
        p.requires_grad = False
    return encoder, predictor, target, opt, scaler


def official_load_checkpoint(path, encoder, predictor, target_encoder, opt, scaler, is_anneal=False):
    """app/vjepa/utils.py load_checkpoint (V-JEPA 2's; V-JEPA 1's is the same with is_anneal=False,
    inside a try that turns any error into a silent restart at epoch 0)."""
    checkpoint = torch.load(path, map_location=torch.device("cpu"), weights_only=True)
    epoch = 0
    if not is_anneal:
        epoch = checkpoint["epoch"]
    encoder.load_state_dict(checkpoint["encoder"])  # strict, as the official call
    predictor.load_state_dict(checkpoint["predictor"])
    if target_encoder is not None:
        target_encoder.load_state_dict(checkpoint["target_encoder"])
    opt.load_state_dict(checkpoint["opt"])
    if scaler is not None:
        scaler.load_state_dict(checkpoint["scaler"])
    return encoder, predictor, target_encoder, opt, scaler, epoch


def official_load_pretrained(encoder, path, checkpoint_key="target_encoder"):
    """evals/video_classification_frozen/eval.py load_pretrained (V-JEPA 1; V-JEPA 2's modelcustom
    init_module reads checkpoint[checkpoint_key] the same way, without 'epoch')."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    try:
        pretrained_dict = checkpoint[checkpoint_key]
    except Exception:
        pretrained_dict = checkpoint["encoder"]
    pretrained_dict = {k.replace("module.", ""): v for k, v in pretrained_dict.items()}
    pretrained_dict = {k.replace("backbone.", ""): v for k, v in pretrained_dict.items()}
    msg = encoder.load_state_dict(pretrained_dict, strict=False)
    return msg, checkpoint["epoch"]


def stripped(sd: dict) -> dict:
    return {k.replace("module.", "").replace("backbone.", ""): v for k, v in sd.items()}


def check_official_file(out: Path, cfg) -> dict:
    """Every key the official scripts read is there with its type; returns the weights-only load."""
    raw = torch.load(out, map_location="cpu", weights_only=True)
    assert set(raw) == set(OFFICIAL_TOP_LEVEL), sorted(raw)
    for key, kind in OFFICIAL_TOP_LEVEL.items():
        assert type(raw[key]) is kind, (key, type(raw[key]))
    assert raw["epoch"] >= 0 and raw["batch_size"] == cfg.data.batch_size * cfg.train.accumulate_grad_batches
    assert raw["world_size"] == cfg.train.devices * cfg.train.num_nodes and raw["lr"] == cfg.optim.lr
    assert set(raw["opt"]) == {"state", "param_groups"} and len(raw["opt"]["param_groups"]) == 4
    assert [bool(g.get("WD_exclude")) for g in raw["opt"]["param_groups"]] == [False, False, True, True]
    assert set(raw["scaler"]) >= {"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"}
    return raw


def check_official_resume(out: Path, cfg, expected: dict, by_name: dict | None, is_anneal: bool = False):
    """Run the official resume / cooldown load on ``out``; check weights, per-parameter AdamW moments
    (``by_name``: our state by (part, name); None = an empty state) and that training can step."""
    encoder, predictor, target, opt, scaler, epoch = official_load_checkpoint(
        out, *official_trainer_state(cfg), is_anneal=is_anneal)
    assert isinstance(epoch, int)
    for part, module in (("encoder", encoder), ("predictor", predictor), ("target_encoder", target)):
        got = stripped(module.state_dict())
        want = expected[part].state_dict()
        assert set(want) <= set(got) and all(torch.equal(got[k], v) for k, v in want.items()), part
    # the optimizer's state sits on the official parameter of the same name
    moved = 0
    for part, module in (("encoder", encoder), ("predictor", predictor)):
        for name, p in module.module.backbone.named_parameters():
            st = opt.state.get(p, {})
            ours = (by_name or {}).get((part, name))
            if ours is None:
                assert not st, (part, name)
                continue
            assert torch.equal(st["exp_avg"], ours["exp_avg"]) and torch.equal(st["exp_avg_sq"], ours["exp_avg_sq"])
            assert float(st["step"]) == float(ours["step"])
            moved += 1
    assert moved == len(by_name or {})
    groups = opt.param_groups
    assert groups[2]["WD_exclude"] and groups[3]["WD_exclude"] and "WD_exclude" not in groups[0]
    official_cosine_wd_step(opt, 0.123)
    assert [g["weight_decay"] for g in groups] == [0.123, 0.123, 0, 0]
    for module in (encoder, predictor):  # one training step: every moment has its parameter's shape
        for p in module.parameters():
            if p.requires_grad:
                p.grad = torch.ones_like(p)
    opt.step()
    return opt, scaler


@pytest.mark.parametrize("pos_embed", ["sincos", "rope"])
def test_official_export_opens_in_the_official_resume_cooldown_and_evals(tmp_path, pos_embed):
    """sincos = a V-JEPA 1 model (V-JEPA 1 resume and frozen eval; V-JEPA 2 with use_rope false),
    rope = a V-JEPA 2 model (V-JEPA 2 resume, cooldown, frozen evals, hub loader)."""
    cfg = debug_cfg(f"model.pos_embed={pos_embed}")
    enc, pred, target = build_parts(cfg, seed=21)
    opt, by_name = trained_optimizer(cfg, enc, pred, steps=2)
    run = write_run(tmp_path, cfg, lightning_checkpoint(cfg, enc, pred, target, optimizer_states=[opt.state_dict()]))
    out = tmp_path / "official.pt"
    result = export(run, out, what="all", fmt="official")
    raw = check_official_file(out, cfg)
    assert raw["epoch"] == 0  # step 7 // ipe 300
    assert len(raw["opt"]["state"]) == len(by_name) and ("predictor", "mask_tokens.2") not in by_name
    text = result.summary()
    assert "epoch: 0 = step 7 // ipe 300" in text and f"{len(by_name)} of {len(by_name)} trainable" in text

    expected = {"encoder": enc, "predictor": pred, "target_encoder": target}
    check_official_resume(out, cfg, expected, by_name)  # train resume (V-JEPA 1 and 2)
    check_official_resume(out, cfg, expected, by_name, is_anneal=True)  # V-JEPA 2 cooldown start

    # frozen evaluation: target_encoder (fallback encoder), 'epoch' read after the load
    model = OfficialVisionTransformer(cfg)
    msg, epoch = official_load_pretrained(model, out)
    assert not msg.missing_keys and not msg.unexpected_keys and epoch == 0
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in stripped(model.state_dict()).items()
               if k in target.state_dict())
    # V-JEPA 2 action anticipation: checkpoint['predictor']; hub: checkpoint['encoder'] / ['predictor']
    for key, module in (("predictor", OfficialPredictor(cfg)), ("encoder", OfficialVisionTransformer(cfg))):
        module.load_state_dict(stripped(raw[key]), strict=True)

    # and our own loader reads the same file back unchanged
    for part in PARTS:
        assert same_weights(load_part(out, fresh(cfg, part), part), expected[part]), part


def test_official_export_epoch_follows_ipe(source, tmp_path, capsys):
    out = tmp_path / "o.pt"
    result = export(source["run"], out, what="all", fmt="official", ipe=3)
    assert torch.load(out, weights_only=True)["epoch"] == 2  # step 7 // 3
    assert "epoch: 2 = step 7 // ipe 3 (--ipe)" in result.summary()
    assert "restarts epoch 2 at its step 6, 1 steps before" in result.summary()
    cfg = debug_cfg("data.batches_per_epoch=4", "train.accumulate_grad_batches=2")  # 2 optimizer steps per epoch
    enc, pred, target = build_parts(cfg, seed=22)
    run = write_run(tmp_path / "bpe", cfg, lightning_checkpoint(cfg, enc, pred, target))
    result = export(run, out, what="all", fmt="official")
    assert torch.load(out, weights_only=True)["epoch"] == 3 and "ipe 2 (data.batches_per_epoch" in result.summary()
    with pytest.raises(ValueError, match="ipe"):
        export(source["run"], tmp_path / "n.pt", fmt="native", ipe=3)
    assert vjepa_main(["export", str(source["run"]), "--format", "official", "--what", "all", "--ipe", "7",
                       "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "epoch: 1 = step 7 // ipe 7" in text and "opt: AdamW state" in text and "scaler:" in text
    assert vjepa_main(["export", str(source["run"]), "--ipe", "7", "--out", str(tmp_path / "n.pt")]) == 2
    assert vjepa_main(["export", str(source["run"]), "--format", "official", "--ipe", "0", "--out", str(out)]) == 2


def test_official_export_without_a_usable_optimizer_state_still_loads(tmp_path):
    """No optimizer state (or one that does not map): the official groups with an empty state, which
    the official load accepts (AdamW restarts its moments); the summary says so."""
    cfg = debug_cfg("model.pos_embed=sincos")
    enc, pred, target = build_parts(cfg, seed=23)
    expected = {"encoder": enc, "predictor": pred, "target_encoder": target}
    ckpt = lightning_checkpoint(cfg, enc, pred, target)
    del ckpt["optimizer_states"]
    run = write_run(tmp_path / "none", cfg, ckpt)
    out = tmp_path / "o.pt"
    result = export(run, out, what="all", fmt="official")
    raw = check_official_file(out, cfg)
    assert raw["opt"]["state"] == {}
    assert "EMPTY state: the checkpoint holds no optimizer state" in result.summary()
    check_official_resume(out, cfg, expected, None)

    # a state from another grouping (one group over every parameter) is not guessed at
    flat = torch.optim.AdamW([p.detach().clone().requires_grad_(True) for m in (enc, pred) for p in m.parameters()])
    for p in flat.param_groups[0]["params"]:
        p.grad = torch.ones_like(p)
    flat.step()
    run = write_run(tmp_path / "flat", cfg, lightning_checkpoint(cfg, enc, pred, target,
                                                                  optimizer_states=[flat.state_dict()]))
    result = export(run, out, what="all", fmt="official")
    assert torch.load(out, weights_only=True)["opt"]["state"] == {}
    assert "does not map onto the official groups exactly" in result.summary()
    check_official_resume(out, cfg, expected, None)


def test_official_export_maps_a_name_keyed_optimizer_state(tmp_path):
    """FSDP's full optimizer state dict keys the state by parameter name: mapped by name as well
    (here from an optimizer over every parameter, unused mask tokens included)."""
    cfg = debug_cfg()
    enc, pred, target = build_parts(cfg, seed=24)
    opt, by_name = trained_optimizer(cfg, enc, pred, freeze_unused_tokens=False)
    sd = opt.state_dict()
    names = [f"_forward_module.{part}.{n}" for g in opt.param_groups for p in g["params"]
             for part, n in [next(k for k, v in by_name.items() if v is opt.state[p])]]
    sd = {"state": {names[i]: v for i, v in sd["state"].items()},
          "param_groups": [dict(g, params=[names[i] for i in g["params"]]) for g in sd["param_groups"]]}
    expected = {"encoder": enc, "predictor": pred, "target_encoder": target}
    for name, states in (("by_name", [sd]), ("by_index", [opt.state_dict()])):
        run = write_run(tmp_path / name, cfg, lightning_checkpoint(cfg, enc, pred, target, optimizer_states=states))
        out = tmp_path / f"{name}.pt"
        export(run, out, what="all", fmt="official")
        check_official_resume(out, cfg, expected, by_name)


# ----------------------------------------------------------------------------- Hugging Face
@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


@pytest.mark.parametrize("what", ["target_encoder", "encoder"])
def test_hf_export_matches_the_source_encoder(source, tmp_path, transformers, what):
    cfg, out = source["cfg"], tmp_path / "hf"
    export(source["run"], out, what=what, fmt="hf")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((out / "config.json").read_text())["crop_size"] == cfg.data.crop_size
    model, info = transformers.VJEPA2Model.from_pretrained(out, attn_implementation="eager",
                                                           output_loading_info=True)
    model.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    src = source["enc"] if what == "encoder" else source["target"]
    x = random_clip(cfg, seed=4)
    with torch.no_grad():
        hf_feats = model.get_vision_features(x.permute(0, 2, 1, 3, 4))  # HF takes (B, T, C, H, W)
        ours = src(x)
    assert hf_feats.shape == ours.shape
    assert (hf_feats - ours).abs().max().item() <= 1e-5
    # the predictor travels along unchanged, and the HF predictor runs on our encoder's features
    assert same_weights(load_part(out, fresh(cfg, "predictor"), "predictor"), source["pred"])
    n = ours.shape[1]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    ctx = perm[: n // 2].expand(2, -1).contiguous()
    tgt = perm[n // 2: n // 2 + n // 4].expand(2, -1).contiguous()
    with torch.no_grad():
        hf_pred = model(pixel_values_videos=x.permute(0, 2, 1, 3, 4), context_mask=[ctx],
                        target_mask=[tgt]).predictor_output.last_hidden_state
        side = cfg.data.crop_size // cfg.model.patch_size
        grid = (cfg.data.num_frames // cfg.model.tubelet_size, side, side)
        candidates = [source["pred"](gather_tokens(ours, ctx), ctx, tgt, grid, mask_index=i)
                      for i in range(len(source["pred"].mask_tokens))]
    assert min((hf_pred - c).abs().max().item() for c in candidates) <= 1e-5


def test_hf_export_of_a_sincos_model_is_refused(tmp_path):
    cfg = debug_cfg("model.pos_embed=sincos")
    enc, pred, target = build_parts(cfg, seed=6)
    run = write_run(tmp_path, cfg, lightning_checkpoint(cfg, enc, pred, target))
    with pytest.raises(CheckpointError, match="RoPE models only"):
        export(run, tmp_path / "hf", fmt="hf")
    assert not (tmp_path / "hf").exists()
    assert vjepa_main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 1


# ----------------------------------------------------------------------------- key handling and safety
def test_wrapper_prefixes_are_stripped(tmp_path):
    """Lightning < 2 wrapped the module in `_forward_module`; torch.compile adds `_orig_mod`."""
    key = "_forward_module.encoder._orig_mod.blocks.0.norm1.weight"
    assert clean_key(key) == "encoder.blocks.0.norm1.weight"
    assert clean_key("module.predictor.mask_tokens.0") == "predictor.mask_tokens.0"
    cfg = debug_cfg()
    enc, pred, target = build_parts(cfg, seed=7)
    ckpt = lightning_checkpoint(cfg, enc, pred, target, prefix="_forward_module.")
    ckpt["state_dict"] = OrderedDict((k.replace("encoder.", "encoder._orig_mod.", 1), v)
                                     for k, v in ckpt["state_dict"].items())
    ckpt["target_encoder"] = {f"_orig_mod.{k}": v for k, v in ckpt["target_encoder"].items()}
    run = write_run(tmp_path, cfg, ckpt)
    out = tmp_path / "all.pt"
    export(run, out, what="all")
    for part, src in (("encoder", enc), ("predictor", pred), ("target_encoder", target)):
        assert same_weights(load_part(out, fresh(cfg, part), part), src)


def test_lightning_hyperparameters_are_read_without_unpickling_objects(tmp_path):
    """save_hyperparameters() stores an AttributeDict (a dict subclass weights_only cannot build):
    it is read as a plain dict."""
    from lightning.fabric.utilities.data import AttributeDict

    cfg = debug_cfg()
    enc, pred, target = build_parts(cfg, seed=8)
    ckpt = lightning_checkpoint(cfg, enc, pred, target, hyper_parameters=AttributeDict(lr=1e-3, name="x"),
                                hparams_name="kwargs")
    run = write_run(tmp_path, cfg, ckpt)
    export(run, tmp_path / "t.pt")
    assert same_weights(load_part(tmp_path / "t.pt", fresh(cfg, "target_encoder")), target)


def test_pickled_objects_are_refused_and_never_built(tmp_path):
    cfg = debug_cfg()
    enc, pred, target = build_parts(cfg, seed=9)
    run = write_run(tmp_path, cfg, lightning_checkpoint(cfg, enc, pred, target, callbacks={"cb": Payload()}))
    with pytest.raises(CheckpointError, match="not accepted for safety"):
        load_training_checkpoint(run)
    assert not Payload.built


def test_errors_are_clear(tmp_path):
    cfg = debug_cfg()
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        resolve_checkpoint(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="no such file"):
        resolve_checkpoint(tmp_path / "missing")

    enc, pred, target = build_parts(cfg, seed=10)
    ckpt = lightning_checkpoint(cfg, enc, pred, target)
    run = write_run(tmp_path / "nolast", cfg, ckpt, with_last=False)
    with pytest.raises(CheckpointError, match=r"no 'last' file.*step_0000000007"):
        resolve_checkpoint(run)
    (run / "last").write_text("step_0000000099\n")
    with pytest.raises(CheckpointError, match="'last' names checkpoint 'step_0000000099'"):
        resolve_checkpoint(run)
    with pytest.raises(CheckpointError, match="a checkpoints folder"):
        resolve_checkpoint(run / "checkpoints")

    no_target = {k: v for k, v in ckpt.items() if k != "target_encoder"}
    run = write_run(tmp_path / "notarget", cfg, no_target)
    with pytest.raises(CheckpointError, match="no 'target_encoder' entry"):
        load_training_checkpoint(run)

    other = dict(ckpt, state_dict=OrderedDict(ckpt["state_dict"], **{"probe.weight": torch.zeros(2)}))
    run = write_run(tmp_path / "other", cfg, other)
    with pytest.raises(CheckpointError, match="neither encoder nor predictor.*probe.weight"):
        load_training_checkpoint(run)

    exported = tmp_path / "exported.pt"  # an export is not a training checkpoint
    torch.save({"format": NATIVE_FORMAT, "target_encoder": target.state_dict()}, exported)
    with pytest.raises(CheckpointError, match="no 'state_dict' entry.*load_part"):
        load_training_checkpoint(exported)

    # a stored config that does not fit the weights: the strict load names the problem
    wrong = dict(ckpt, vjepa={"format_version": 1, "config": config_to_dict(debug_cfg("model.depth=3"))})
    run = write_run(tmp_path / "wrong", cfg, wrong)
    with pytest.raises(CheckpointError, match=r"missing \(\d+\): blocks\.2\."):
        export(run, tmp_path / "w.pt")

    newer = dict(ckpt, vjepa={"format_version": 2, "config": config_to_dict(cfg)})
    run = write_run(tmp_path / "newer", cfg, newer)
    with pytest.raises(CheckpointError, match="format_version 2"):
        load_training_checkpoint(run)


def test_request_combinations():
    check_request("all", "native")
    for what, fmt in (("predictor", "official"), ("all", "hf"), ("predictor", "hf"), ("x", "native"),
                      ("encoder", "onnx")):
        with pytest.raises(ValueError):
            check_request(what, fmt)
    assert export_cmd.WHATS == WHATS and export_cmd.FORMATS == FORMATS  # the CLI repeats them


def test_export_refuses_wrong_kind_of_output_path(source, tmp_path):
    with pytest.raises(CheckpointError, match="is a directory"):
        export(source["run"], tmp_path, fmt="native")
    (tmp_path / "f").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        export(source["run"], tmp_path / "f", fmt="hf")


# ----------------------------------------------------------------------------- CLI
def test_cli_export_prints_a_summary(source, tmp_path, capsys):
    out = tmp_path / "cli.pt"
    assert vjepa_main(["export", str(source["run"]), "--what", "all", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"step {STEP}" in text and "native" in text and str(out) in text and "target_encoder" in text
    assert same_weights(load_part(out, fresh(source["cfg"], "encoder"), "encoder"), source["enc"])


def test_cli_errors_exit_1_or_2_with_one_line(source, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert vjepa_main(["export", str(tmp_path / "empty"), "--out", str(tmp_path / "x.pt")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("vjepa export: checkpoint error:") and len(err.strip().splitlines()) == 1
    assert vjepa_main(["export", str(source["run"]), "--what", "predictor", "--format", "official",
                       "--out", str(tmp_path / "p.pt")]) == 2
    err = capsys.readouterr().err
    assert "vjepa export: error:" in err and "--what all" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exc:  # argparse: missing --out
        vjepa_main(["export", str(source["run"])])
    assert exc.value.code == 2


def test_cli_subprocess_has_no_traceback(tmp_path):
    (tmp_path / "empty").mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "vjepa_pipeline", "export", str(tmp_path / "empty"), "--out",
                          str(tmp_path / "x.pt")], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    help_out = subprocess.run([sys.executable, "-m", "vjepa_pipeline", "export", "--help"],
                              capture_output=True, text=True, env=env, timeout=120)
    assert help_out.returncode == 0 and "target_encoder" in help_out.stdout and "official" in help_out.stdout


# ----------------------------------------------------------------------------- a real Lightning run
@pytest.mark.slow
def test_export_from_a_real_pretrain_run(tmp_path):
    """`vjepa pretrain` (Lightning Trainer.fit, debug recipe, 3 steps) writes the run directory; the
    export of that run reproduces the trained module's EMA target, context encoder and predictor, and
    its official export carries the trainer's AdamW moments onto the official parameters."""
    import lightning as L

    from vjepa_pipeline.train.pretrain import pretrain

    class Keep(L.Callback):
        def on_train_end(self, trainer, pl_module):
            self.module = pl_module

    cfg = debug_cfg("train.max_steps=3", "train.checkpoint_every_steps=3",
                    f"train.run_dir={tmp_path / 'runs'}")
    keep = Keep()
    summary = pretrain(cfg, extra_callbacks=[keep], progress=False)
    assert summary["global_step"] == 3
    run = Path(summary["run_dir"])
    assert resolve_checkpoint(run) == run / "checkpoints" / "step_0000000003" / "model.ckpt"

    module = keep.module
    x = random_clip(cfg, seed=11)
    target, encoder = module.target_encoder.eval(), module.encoder.eval()
    assert max_diff(target, encoder, x) > 0  # three EMA steps: the target lags the context encoder
    out = tmp_path / "all.pt"
    result = export(run, out, what="all")
    assert result.step == 3 and result.kind == "lightning"
    assert max_diff(load_part(out, fresh(cfg, "target_encoder")), target, x) == 0.0
    assert max_diff(load_part(out, fresh(cfg, "encoder"), "encoder"), encoder, x) == 0.0
    assert same_weights(load_part(out, fresh(cfg, "predictor"), "predictor"), module.predictor)

    opt = module._optimizer()
    by_name = {(part, n): opt.state[p] for part, m in (("encoder", encoder), ("predictor", module.predictor))
               for n, p in m.named_parameters() if opt.state.get(p)}  # unused mask tokens never get a state
    assert len(by_name) > 20 and all(float(st["step"]) == 3 for st in by_name.values())
    official = tmp_path / "official.pt"
    export(run, official, what="all", fmt="official")
    check_official_file(official, cfg)
    check_official_resume(official, cfg, {"encoder": encoder, "predictor": module.predictor,
                                          "target_encoder": target}, by_name)


# ----------------------------------------------------------------------------- DeepSpeed (ZeRO-2, CPU, gloo)
DEEPSPEED_SCRIPT = textwrap.dedent('''
    import copy, os, sys, torch
    out, port = sys.argv[1], sys.argv[2]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK="0", WORLD_SIZE="1", LOCAL_RANK="0",
                      DS_ACCELERATOR="cpu")
    import deepspeed
    # Single process: DeepSpeed's shared-memory allreduce op is useless, and building it is a ~30 s
    # C++ compile on first use; skip it.
    sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None
    from deepspeed.utils import safe_get_full_fp32_param
    from vjepa_pipeline.config import config_to_dict, load_config
    from vjepa_pipeline.models.build import build_encoder, build_predictor

    cfg = load_config(sys.argv[3])
    torch.manual_seed(0)

    class Module(torch.nn.Module):  # what Lightning (2.x) hands to deepspeed.initialize: our LightningModule
        def __init__(self):
            super().__init__()
            self.encoder = build_encoder(cfg.model, cfg.data.num_frames, cfg.data.crop_size)
            self.predictor = build_predictor(cfg.model, cfg.data.num_frames, cfg.data.crop_size)

    model = Module()
    target = copy.deepcopy(model.encoder).float()
    with torch.no_grad():
        for p in target.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    model = model.to(torch.bfloat16)  # Lightning's DeepSpeed bf16 precision casts the module
    deepspeed.init_distributed(dist_backend="gloo")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    engine, opt, _, _ = deepspeed.initialize(model=model, optimizer=opt, config={
        "train_batch_size": 1, "train_micro_batch_size_per_gpu": 1, "bf16": {"enabled": True},
        "zero_optimization": {"stage": 2}, "zero_allow_untested_optimizer": True, "gradient_clipping": 10.0})
    x = torch.randn(1, 3, cfg.data.num_frames, cfg.data.crop_size, cfg.data.crop_size, dtype=torch.bfloat16)
    h = model.encoder(x)
    n = h.shape[1]
    ctx, tgt = torch.arange(n // 2)[None], torch.arange(n // 2, n)[None]
    side = cfg.data.crop_size // cfg.model.patch_size
    grid = (cfg.data.num_frames // cfg.model.tubelet_size, side, side)
    p = model.predictor(h[:, : n // 2], ctx, tgt, grid, mask_index=0)
    loss = p.float().abs().mean()
    engine.backward(loss)
    engine.step()
    expected = {"target_encoder": {k: v.clone() for k, v in target.state_dict().items()}}
    for name in ("encoder", "predictor"):
        mod = getattr(model, name)
        expected[name] = {k: safe_get_full_fp32_param(p).detach().clone() for k, p in mod.named_parameters()}
        expected[name + "_bf16"] = {k: v.detach().clone() for k, v in mod.state_dict().items()}
    client_state = {  # what Lightning passes: its checkpoint dict minus state_dict / optimizer_states
        "epoch": 0, "global_step": 1, "pytorch-lightning_version": "2.6.0", "loops": {}, "callbacks": {},
        "lr_schedulers": [], "target_encoder": expected["target_encoder"],
        "vjepa": {"format_version": 1, "config": config_to_dict(cfg)}}
    engine.save_checkpoint(os.path.join(out, "model.ckpt"), client_state=client_state, tag="checkpoint")
    torch.save(expected, os.path.join(out, "expected.pt"))
''')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_export_from_a_deepspeed_zero2_checkpoint(tmp_path):
    """deepspeed.initialize (ZeRO-2, bf16 module, fp32 master weights) on CPU with gloo, in a
    subprocess (process group, accelerator globals); the export takes the encoder / predictor from
    the fp32 ZeRO shards and the target from the fp32 client-state copy."""
    pytest.importorskip("deepspeed")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "", "DS_ACCELERATOR": "cpu"}
    args = [sys.executable, "-c", DEEPSPEED_SCRIPT, str(tmp_path), str(free_port()), str(DEBUG)]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ds_dir = tmp_path / "model.ckpt"
    assert (ds_dir / "latest").read_text().strip() == "checkpoint"
    assert (ds_dir / "checkpoint" / "mp_rank_00_model_states.pt").is_file()
    assert list((ds_dir / "checkpoint").glob("*zero_pp_rank_0_mp_rank_00_optim_states.pt"))
    expected = torch.load(tmp_path / "expected.pt", weights_only=True)

    # a run directory around it, as vjepa pretrain lays it out
    run = tmp_path / "runs" / "debug"
    (run / "checkpoints" / "step_0000000001").mkdir(parents=True)
    ds_dir.rename(run / "checkpoints" / "step_0000000001" / "model.ckpt")
    (run / "last").write_text("step_0000000001\n")
    assert resolve_checkpoint(run) == run / "checkpoints" / "step_0000000001" / "model.ckpt"

    tc = load_training_checkpoint(run)
    assert tc.kind == "deepspeed" and tc.step == 1
    moved = False
    for name, sd in (("encoder", tc.encoder_sd), ("predictor", tc.predictor_sd)):
        assert sd.keys() == expected[name].keys()
        for k, v in sd.items():
            assert v.dtype == torch.float32 and torch.equal(v, expected[name][k]), (name, k)
            moved |= not torch.equal(v, expected[name + "_bf16"][k].float())
    assert moved  # the fp32 master weights, not the bf16 module copy
    assert all(torch.equal(tc.target_sd[k], v) for k, v in expected["target_encoder"].items())

    out = tmp_path / "all.pt"
    cfg = debug_cfg()
    export(run, out, what="all")
    for part in ("encoder", "predictor", "target_encoder"):
        loaded = load_part(out, fresh(cfg, part), part).state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in expected[part].items()), part
    assert vjepa_main(["export", str(run), "--format", "official", "--out", str(tmp_path / "o.pt")]) == 0
    # ZeRO shards keep the AdamW moments: the official file gets the groups with an empty state
    result = export(run, tmp_path / "o.pt", what="all", fmt="official")
    assert "EMPTY state: DeepSpeed keeps the AdamW moments ZeRO-sharded" in result.summary()
    check_official_file(tmp_path / "o.pt", cfg)


def test_deepspeed_directory_without_client_state_is_refused(tmp_path):
    """A DeepSpeed layout whose model states lack our entries: clear error, DeepSpeed never called."""
    tag = tmp_path / "model.ckpt" / "checkpoint"
    tag.mkdir(parents=True)
    (tmp_path / "model.ckpt" / "latest").write_text("checkpoint")
    states = {"module": {"encoder.x": torch.zeros(1)}, "global_steps": 3}
    torch.save(states, tag / "mp_rank_00_model_states.pt")
    assert resolve_checkpoint(tmp_path) == tmp_path / "model.ckpt"
    with pytest.raises(CheckpointError, match="no 'target_encoder' entry"):
        load_training_checkpoint(tmp_path)


def test_deepspeed_shards_are_vetted_before_deepspeed_unpickles_them(tmp_path):
    """DeepSpeed's converter loads with weights_only=False: a shard referencing any other global is
    refused before it runs."""
    cfg = debug_cfg()
    enc, pred, target = build_parts(cfg, seed=12)
    tag = tmp_path / "model.ckpt" / "checkpoint"
    tag.mkdir(parents=True)
    (tmp_path / "model.ckpt" / "latest").write_text("checkpoint")
    client = lightning_checkpoint(cfg, enc, pred, target)
    module = client.pop("state_dict")
    client.pop("optimizer_states")
    torch.save({"module": module, "buffer_names": [], **client}, tag / "mp_rank_00_model_states.pt")
    optim = {"optimizer_state_dict": {"loss_scaler": Payload()}}
    torch.save(optim, tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    with pytest.raises(CheckpointError, match=r"optim_states\.pt: holds pickled objects .*Payload"):
        load_training_checkpoint(tmp_path)
    assert not Payload.built
