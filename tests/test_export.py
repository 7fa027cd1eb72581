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
from vjepa_pipeline.models.vit import gather_tokens

ROOT = Path(__file__).resolve().parents[1]
DEBUG = ROOT / "configs/pretrain/debug.yaml"
STEP = 7


# ----------------------------------------------------------------------------- helpers
def debug_cfg(*overrides: str):
    return load_config(DEBUG, list(overrides))


@torch.no_grad()
def perturb_(module: nn.Module, seed: int, scale: float = 0.05) -> nn.Module:
    """Move every parameter (LayerNorm, biases, mask tokens included) so a swapped tensor shows."""
    gen = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(torch.randn(p.shape, generator=gen) * scale)
    return module


def build_parts(cfg, seed: int = 0):
    """encoder, predictor and a distinct target encoder (a perturbed copy, as after EMA steps)."""
    torch.manual_seed(seed)
    frames, crop = cfg.data.num_frames, cfg.data.crop_size
    enc = perturb_(build_encoder(cfg.model, frames, crop), seed + 1).eval()
    pred = perturb_(build_predictor(cfg.model, frames, crop), seed + 2).eval()
    target = perturb_(copy.deepcopy(enc), seed + 3, scale=0.01).eval()
    return enc, pred, target


def optimizer_states(enc: nn.Module, pred: nn.Module) -> list[dict]:
    """A real AdamW state dict (exp_avg, exp_avg_sq, step, param_groups), as Lightning stores it."""
    params = [p for m in (enc, pred) for p in m.parameters()]
    opt = torch.optim.AdamW([p.detach().clone().requires_grad_(True) for p in params], lr=1e-3)
    for p in opt.param_groups[0]["params"]:
        p.grad = torch.ones_like(p)
    opt.step()
    return [opt.state_dict()]


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
        "optimizer_states": optimizer_states(enc, pred),
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
    assert sorted(raw) == ["encoder", "predictor", "target_encoder"]
    assert all(k.startswith("module.backbone.") for part in raw.values() for k in part)
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


class Payload:  # a class a checkpoint could smuggle in; loading must never build it
    built = False

    def __reduce__(self):
        return (Payload._mark, ())

    @staticmethod
    def _mark():
        Payload.built = True
        return "pwned"


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
    export of that run reproduces the trained module's EMA target, context encoder and predictor."""
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
