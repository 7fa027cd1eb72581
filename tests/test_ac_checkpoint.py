"""V-JEPA 2-AC checkpoints (vjepa_pipeline.checkpoint.ac_checkpoint): the predictor from our runs, our native
files and official app/vjepa_droid files; the whole world model; `vjepa export` of an action-conditioned run.

The run checkpoint is written as the trainer writes it, without training: an ObjectiveModule around the
action-conditioned objective, its Lightning state_dict (``predictor.*``), its on_save_checkpoint additions
(the frozen ``encoder``, ``vjepa``), and the AdamW state of configure_optimizers after two steps."""

from __future__ import annotations

import copy
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from helpers import perturb_
from vjepa_pipeline.checkpoint.ac_checkpoint import (
    HF_REFUSAL,
    export_ac_run,
    load_ac_predictor_weights,
    load_world_model,
)
from vjepa_pipeline.checkpoint.ac_layout import load_official_ac_predictor
from vjepa_pipeline.checkpoint.export import export, load_training_checkpoint
from vjepa_pipeline.checkpoint.interop import NATIVE_FORMAT, load_part
from vjepa_pipeline.cli.main import main as vjepa_main
from vjepa_pipeline.config import dump_config, load_config
from vjepa_pipeline.errors import CheckpointError
from vjepa_pipeline.models.build import build_ac_predictor, build_encoder
from vjepa_pipeline.objectives import ActionConditionedObjective
from vjepa_pipeline.train.module import ObjectiveModule

STEP = 3
TINY = ["objective.kind=action_conditioned", "model.predictor.kind=action_conditioned", "data.source=shards",
        "data.path=x", "data.hflip=false", "data.crop_size=32", "model.patch_size=16", "model.embed_dim=32",
        "model.depth=1", "model.num_heads=2", "model.predictor.embed_dim=32", "model.predictor.depth=1",
        "model.predictor.num_heads=2", "world_model.action_dim=2", "world_model.state_dim=2"]
OFFICIAL_KEYS = {"encoder", "predictor", "target_encoder", "opt", "scaler", "epoch", "loss", "batch_size",
                 "world_size", "lr"}


# ----------------------------------------------------------------------------- helpers
def tiny_cfg(*overrides: str):
    return load_config(None, TINY + list(overrides))


def fresh_predictor(cfg, seed: int = 99) -> nn.Module:
    return perturb_(build_ac_predictor(cfg, embed_dim=cfg.model.embed_dim), seed).eval()


def trajectory(cfg, seed: int = 0, batch: int = 2, frames: int = 3):
    """Random per-frame tokens (B, T, N, D), actions and states."""
    g = torch.Generator().manual_seed(seed)
    n = (cfg.data.crop_size // cfg.model.patch_size) ** 2
    wm = cfg.world_model
    return (torch.randn(batch, frames, n, cfg.model.embed_dim, generator=g),
            torch.randn(batch, frames, wm.action_dim, generator=g),
            torch.randn(batch, frames, wm.state_dim, generator=g))


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def same_outputs(a: nn.Module, b: nn.Module, cfg) -> bool:
    x = trajectory(cfg, seed=5)
    with torch.no_grad():
        return torch.equal(a.eval()(*x), b.eval()(*x))


def trainer_checkpoint(cfg, seed: int = 0):
    """(Lightning checkpoint dict as trainer.save_checkpoint writes it for this module, module, optimizer)."""
    from importlib.metadata import version

    objective = ActionConditionedObjective.from_config(cfg)
    perturb_(objective.encoder, seed + 1)
    perturb_(objective.predictor, seed + 2)
    module = ObjectiveModule(cfg, objective=objective)
    opt = module.configure_optimizers()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(2):  # every predictor parameter gets distinct moments
        for p in module.parameters():
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    ckpt = {"epoch": 0, "global_step": STEP, "pytorch-lightning_version": version("lightning"),
            "state_dict": OrderedDict((k, v.detach().clone()) for k, v in module.state_dict().items()),
            "loops": {}, "callbacks": {}, "optimizer_states": [opt.state_dict()], "lr_schedulers": []}
    module.on_save_checkpoint(ckpt)  # + the frozen 'encoder' and 'vjepa' (config, format version)
    return ckpt, objective, opt


def write_run(root: Path, cfg, ckpt: dict) -> Path:
    """runs/<name>/{config.yaml, checkpoints/step_<n>/model.ckpt, last}, as vjepa pretrain lays it out."""
    run = root / "runs" / cfg.name
    step_dir = run / "checkpoints" / f"step_{STEP:010d}"
    step_dir.mkdir(parents=True)
    dump_config(cfg, run / "config.yaml")
    torch.save(ckpt, step_dir / "model.ckpt")
    (run / "last").write_text(step_dir.name + "\n")
    return run


@pytest.fixture(scope="module")
def ac_run(tmp_path_factory):
    cfg = tiny_cfg()
    ckpt, objective, opt = trainer_checkpoint(cfg)
    run = write_run(tmp_path_factory.mktemp("ac_run"), cfg, ckpt)
    return {"cfg": cfg, "run": run, "ckpt": ckpt, "encoder": objective.encoder,
            "predictor": objective.predictor, "opt": opt,
            "model_ckpt": run / "checkpoints" / f"step_{STEP:010d}" / "model.ckpt"}


# ----------------------------------------------------------------------------- the predictor
def test_the_trainer_layout_is_what_we_read(ac_run):
    ckpt = ac_run["ckpt"]
    assert all(k.startswith("predictor.") for k in ckpt["state_dict"])
    assert set(ckpt["encoder"]) == set(ac_run["encoder"].state_dict())
    assert ckpt["vjepa"]["config"]["objective"]["kind"] == "action_conditioned"


@pytest.mark.parametrize("which", ["run", "step_dir", "model_ckpt", "native", "official"])
def test_predictor_loads_from_every_source(ac_run, tmp_path, which):
    cfg, src = ac_run["cfg"], ac_run["predictor"]
    sources = {"run": ac_run["run"], "step_dir": ac_run["model_ckpt"].parent,
               "model_ckpt": ac_run["model_ckpt"]}
    if which in ("native", "official"):
        sources[which] = export_ac_run(ac_run["run"], tmp_path / f"{which}.pt", which).out
    target = fresh_predictor(cfg)
    assert not same_weights(target, src)
    kind = load_ac_predictor_weights(target, str(sources[which]))
    assert kind == {"step_dir": "run", "model_ckpt": "run"}.get(which, which)
    assert same_weights(target, src) and same_outputs(target, src, cfg)


def test_official_export_round_trips(ac_run, tmp_path):
    cfg, src = ac_run["cfg"], ac_run["predictor"]
    out = export_ac_run(ac_run["run"], tmp_path / "official.pt", "official").out
    raw = torch.load(out, map_location="cpu", weights_only=True)
    assert set(raw) == OFFICIAL_KEYS
    for part in ("encoder", "target_encoder", "predictor"):
        assert raw[part] and all(k.startswith("module.") for k in raw[part])
        assert not any(k.startswith("module.backbone.") for k in raw[part])  # DDP(model), no wrapper
    # the official class always has extrinsics_encoder (Linear(action_dim - 1, D)): zeros, never read
    assert torch.count_nonzero(raw["predictor"]["module.extrinsics_encoder.weight"]) == 0
    assert raw["predictor"]["module.extrinsics_encoder.weight"].shape == (32, 1)
    enc = ac_run["encoder"].state_dict()
    assert all(torch.equal(raw["encoder"][f"module.{k}"], v) for k, v in enc.items())
    assert all(torch.equal(raw["target_encoder"][f"module.{k}"], v) for k, v in enc.items())
    by_official = fresh_predictor(cfg)
    load_official_ac_predictor(by_official, raw)  # the official-layout loader
    by_ours = fresh_predictor(cfg, seed=7)
    assert load_ac_predictor_weights(by_ours, out) == "official"
    for loaded in (by_official, by_ours):
        assert same_weights(loaded, src) and same_outputs(loaded, src, cfg)
    # and back to the same official file
    again = export_ac_run(ac_run["run"], tmp_path / "again.pt", "official").out
    raw2 = torch.load(again, map_location="cpu", weights_only=True)
    assert raw2["predictor"].keys() == raw["predictor"].keys()
    assert all(torch.equal(raw2["predictor"][k], v) for k, v in raw["predictor"].items())


# ----------------------------------------------------------------------------- the official AC trainer
# A replica of what app/vjepa_droid does on resume (train.py L192-309, utils.py init_video_model L127-194,
# init_opt L197-253, load_checkpoint L69-124): module structure and registration order of
# src/models/vision_transformer.py (RoPE: no pos_embed) and src/models/ac_predictor.py (extrinsics_encoder
# always), the four AdamW groups, DDP wrapping (module. keys), then the loads, which we require to be exact.
class OfficialBlock(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.Module()
        self.attn.qkv, self.attn.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Module()
        self.mlp.fc1, self.mlp.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)


class OfficialEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        m, dim = cfg.model, cfg.model.embed_dim
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv3d(3, dim, (m.tubelet_size, m.patch_size, m.patch_size))
        self.blocks = nn.ModuleList([OfficialBlock(dim, 4 * dim) for _ in range(m.depth)])
        self.norm = nn.LayerNorm(dim)


class OfficialACPredictor(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        p, dim, a = cfg.model.predictor, cfg.model.embed_dim, cfg.world_model.action_dim
        self.predictor_embed = nn.Linear(dim, p.embed_dim)
        self.action_encoder = nn.Linear(a, p.embed_dim)
        self.state_encoder = nn.Linear(a, p.embed_dim)
        self.extrinsics_encoder = nn.Linear(a - 1, p.embed_dim)
        self.predictor_blocks = nn.ModuleList([OfficialBlock(p.embed_dim, 4 * p.embed_dim)
                                               for _ in range(p.depth)])
        self.predictor_norm = nn.LayerNorm(p.embed_dim)
        self.predictor_proj = nn.Linear(p.embed_dim, dim)


class DDP(nn.Module):  # DistributedDataParallel's state-dict view
    def __init__(self, module):
        super().__init__()
        self.module = module


def official_init_opt(encoder, predictor):
    groups = [
        {"params": (p for n, p in encoder.named_parameters() if ("bias" not in n) and (len(p.shape) != 1)),
         "lr_scale": 1.0},
        {"params": (p for n, p in predictor.named_parameters() if ("bias" not in n) and (len(p.shape) != 1))},
        {"params": (p for n, p in encoder.named_parameters() if ("bias" in n) or (len(p.shape) == 1)),
         "WD_exclude": True, "weight_decay": 0, "lr_scale": 1.0},
        {"params": (p for n, p in predictor.named_parameters() if ("bias" in n) or (len(p.shape) == 1)),
         "WD_exclude": True, "weight_decay": 0},
    ]
    return torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8)


def official_resume(path: Path, cfg):
    encoder, predictor = OfficialEncoder(cfg), OfficialACPredictor(cfg)
    target = copy.deepcopy(encoder)
    opt = official_init_opt(encoder, predictor)
    scaler = torch.amp.GradScaler("cpu")  # meta.dtype bfloat16 -> mixed_precision -> a GradScaler
    encoder, predictor, target = DDP(encoder), DDP(predictor), DDP(target)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # robust_checkpoint_loader
    epoch = checkpoint["epoch"]
    for module, key in ((encoder, "encoder"), (predictor, "predictor"), (target, "target_encoder")):
        msg = module.load_state_dict({k.replace("backbone.", ""): v for k, v in checkpoint[key].items()},
                                     strict=False)  # official: strict=False; we require an exact fit
        assert not msg.missing_keys and not msg.unexpected_keys, (key, msg)
    opt.load_state_dict(checkpoint["opt"])
    scaler.load_state_dict(checkpoint["scaler"])
    return encoder.module, predictor.module, target.module, opt, epoch


def test_official_export_opens_in_the_official_ac_resume(ac_run, tmp_path):
    cfg = ac_run["cfg"]
    result = export_ac_run(ac_run["run"], tmp_path / "official.pt", "official")
    encoder, predictor, target, opt, epoch = official_resume(result.out, cfg)
    assert epoch == 0  # step 3 // ipe 300
    ours_enc = ac_run["encoder"].state_dict()
    for module in (encoder, target):
        assert all(torch.equal(v, ours_enc[k]) for k, v in module.state_dict().items())
    ours_pred = ac_run["predictor"].state_dict()
    assert all(torch.equal(v, ours_pred[k]) for k, v in predictor.state_dict().items() if k in ours_pred)
    # each AdamW moment sits on the official parameter of the same name; the frozen encoder has none
    trained = ac_run["opt"]
    ours = {n: trained.state[p] for n, p in ac_run["predictor"].named_parameters()}
    for name, p in predictor.named_parameters():
        st = opt.state.get(p, {})
        if name.startswith("extrinsics_encoder."):
            assert not st
            continue
        assert torch.equal(st["exp_avg"], ours[name]["exp_avg"])
        assert torch.equal(st["exp_avg_sq"], ours[name]["exp_avg_sq"])
        assert float(st["step"]) == float(ours[name]["step"]) == 2.0
    assert not any(opt.state.get(p) for p in encoder.parameters())
    assert [bool(g.get("WD_exclude")) for g in opt.param_groups] == [False, False, True, True]
    for p in predictor.parameters():  # a training step: every moment has its parameter's shape
        p.grad = torch.ones_like(p)
    opt.step()
    assert "22 predictor parameters, mapped by name" in result.summary()


# ----------------------------------------------------------------------------- mismatches
@pytest.mark.parametrize("override, trained, fix", [
    ("world_model.action_dim=3", "2-D actions but world_model.action_dim=3", "set world_model.action_dim=2"),
    ("world_model.state_dim=4", "2-D states but world_model.state_dim=4", "set world_model.state_dim=2"),
    ("world_model.use_extrinsics=true", "no extrinsics but world_model.use_extrinsics=true",
     "set world_model.use_extrinsics=false"),
    ("model.predictor.depth=2", "1 blocks but model.predictor.depth=2", "set model.predictor.depth=1"),
    ("model.predictor.num_heads=4", "2 attention heads but model.predictor.num_heads=4",
     "set model.predictor.num_heads=2"),
])
def test_a_mismatch_is_one_line_naming_the_config_key(ac_run, override, trained, fix):
    target = fresh_predictor(tiny_cfg(override))
    before = copy.deepcopy(target.state_dict())
    with pytest.raises(CheckpointError) as err:
        load_ac_predictor_weights(target, str(ac_run["run"]))
    message = str(err.value)
    assert "\n" not in message
    assert message == (f"predictor checkpoint {ac_run['run']} was trained with {trained}: {fix}, "
                       "or start the predictor fresh")
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())  # nothing was loaded


def test_an_official_file_with_other_actions_is_one_line(ac_run, tmp_path):
    out = export_ac_run(ac_run["run"], tmp_path / "official.pt", "official").out
    with pytest.raises(CheckpointError) as err:
        load_ac_predictor_weights(fresh_predictor(tiny_cfg("world_model.action_dim=7",
                                                           "world_model.state_dim=7")), out)
    assert "\n" not in str(err.value)
    assert "2-D actions but world_model.action_dim=7" in str(err.value)
    assert "set world_model.action_dim=2 world_model.state_dim=2, or start the predictor fresh" \
        in str(err.value)


def test_a_vjepa_checkpoint_is_not_taken_for_a_world_model(tmp_path):
    """A V-JEPA (masked) run: the AC loaders refuse it, and its export is unchanged."""
    from test_export import build_parts, debug_cfg, lightning_checkpoint
    from test_export import write_run as write_vjepa_run

    cfg = debug_cfg()
    run = write_vjepa_run(tmp_path, cfg, lightning_checkpoint(cfg, *build_parts(cfg)))
    with pytest.raises(CheckpointError, match=r"objective.kind vjepa\).*not an action-conditioned") as err:
        load_ac_predictor_weights(fresh_predictor(tiny_cfg()), str(run))
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="not an action-conditioned one"):
        load_world_model(run)
    assert load_training_checkpoint(run).step == 7


def test_load_training_checkpoint_points_an_ac_run_at_load_world_model(ac_run, tmp_path):
    for call in (lambda: load_training_checkpoint(ac_run["run"]),
                 lambda: export(ac_run["run"], tmp_path / "x.pt")):
        with pytest.raises(CheckpointError) as err:
            call()
        assert "\n" not in str(err.value) and "load_world_model" in str(err.value)


# ----------------------------------------------------------------------------- the world model
@pytest.mark.parametrize("which", ["run", "native"])
def test_load_world_model(ac_run, tmp_path, which):
    cfg = ac_run["cfg"]
    source = ac_run["run"]
    if which == "native":
        source = export_ac_run(ac_run["run"], tmp_path / "n.pt", "native").out
    wm = load_world_model(source)
    assert wm.kind == which and wm.step == STEP and wm.config.world_model.action_dim == 2
    assert same_weights(wm.encoder, ac_run["encoder"]) and same_weights(wm.predictor, ac_run["predictor"])
    assert not wm.encoder.training and not wm.predictor.training
    assert not any(p.requires_grad for p in wm.encoder.parameters())
    clip = torch.randn(1, 3, cfg.model.tubelet_size, cfg.data.crop_size, cfg.data.crop_size)
    with torch.no_grad():
        assert torch.equal(wm.encoder(clip), ac_run["encoder"].eval()(clip))
    assert same_outputs(wm.predictor, ac_run["predictor"], cfg)


def test_native_export_holds_config_encoder_and_predictor(ac_run, tmp_path):
    cfg = ac_run["cfg"]
    out = export_ac_run(ac_run["run"], tmp_path / "n.pt", "native").out
    raw = torch.load(out, map_location="cpu", weights_only=True)
    assert raw["format"] == NATIVE_FORMAT and raw["step"] == STEP
    assert raw["config"]["objective"]["kind"] == "action_conditioned"
    assert {"encoder", "predictor"} <= set(raw) and "target_encoder" not in raw
    encoder = perturb_(build_encoder(cfg.model, cfg.model.tubelet_size, cfg.data.crop_size), 3)
    assert same_weights(load_part(out, encoder, "encoder"), ac_run["encoder"])  # the generic reader agrees


def test_a_stored_encoder_the_config_does_not_describe_is_one_line(ac_run, tmp_path):
    ckpt = dict(ac_run["ckpt"])
    bigger = build_encoder(tiny_cfg("model.depth=2").model, 2, 32)
    ckpt["encoder"] = {k: v.clone() for k, v in bigger.state_dict().items()}
    run = write_run(tmp_path, ac_run["cfg"], ckpt)
    with pytest.raises(CheckpointError) as err:
        load_world_model(run)
    assert "\n" not in str(err.value) and "depth 2" in str(err.value) and "depth 1" in str(err.value)
    assert load_world_model(run, model_overrides=["model.depth=2"]).encoder.state_dict().keys() == \
        bigger.state_dict().keys()


# ----------------------------------------------------------------------------- the CLI
@pytest.mark.parametrize("fmt", ["native", "official"])
def test_cli_exports_an_ac_run(ac_run, tmp_path, capsys, fmt):
    out = tmp_path / f"{fmt}.pt"
    assert vjepa_main(["export", str(ac_run["run"]), "--format", fmt, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"exported world model (step {STEP}" in text and f"format {fmt} -> {out}" in text
    target = fresh_predictor(ac_run["cfg"])
    assert load_ac_predictor_weights(target, out) == fmt
    assert same_weights(target, ac_run["predictor"])


@pytest.mark.parametrize("args, message", [
    (["--format", "hf"], HF_REFUSAL),
    (["--what", "encoder"], "--what encoder: an action-conditioned run exports its frozen encoder"),
    (["--ipe", "5"], "ipe (iterations per epoch) is a positive number for --format official only"),
])
def test_cli_refusals_exit_2_with_one_line(ac_run, tmp_path, capsys, args, message):
    out = tmp_path / "hf"
    assert vjepa_main(["export", str(ac_run["run"]), *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not out.exists()


def test_a_file_of_the_official_class_loads_and_reproduces_its_outputs(tmp_path):
    """tests/data/official_ac_predictor_tiny.pt (see tests/test_ac_predictor.py): weights of the official
    VisionTransformerPredictorAC, saved as app/vjepa_droid saves them, and its outputs."""
    from vjepa_pipeline.models.ac_predictor import ActionConditionedPredictor

    cases = torch.load(Path(__file__).parent / "data" / "official_ac_predictor_tiny.pt", weights_only=True)
    for name, case in cases.items():
        img_h, img_w, extr, heads, dim, enc_dim, depth, action_dim = case["config"].tolist()
        path = tmp_path / f"{name}.pt"
        torch.save({"predictor": case["predictor"], "epoch": 1, "loss": 0.5}, path)
        ours = ActionConditionedPredictor(enc_dim, dim, depth, heads, action_dim=action_dim,
                                          use_extrinsics=bool(extr), img_size=(img_h, img_w), patch_size=16).eval()
        assert load_ac_predictor_weights(ours, path) == "official"
        with torch.no_grad():
            got = ours(case["tokens"], case["actions"], case["states"], case["extrinsics"] if extr else None)
        assert torch.allclose(got, case["output"], atol=1e-6, rtol=0), name
