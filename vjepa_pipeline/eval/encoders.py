"""Frozen encoders for evaluation, from any source the model core can read: a run directory or
training checkpoint (its fp32 EMA target), our exported files, official V-JEPA / V-JEPA 2
checkpoints (with the model described by config overrides) and Hugging Face VJEPA2 directories."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..checkpoint.interop import NATIVE_FORMAT, load_state_strict, read_checkpoint, select_state
from ..checkpoint.interop import apply_vjepa21_options, check_vjepa21_positions
from ..config import config_from_dict, load_config
from ..models.build import build_encoder
from ..models.vit import VisionTransformer


@dataclass
class LoadedEncoder:
    encoder: VisionTransformer
    kind: str  # run | native | official | hf
    source: str
    fingerprint: str
    num_frames: int
    crop_size: int

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.encoder.parameters())


def fingerprint(module: torch.nn.Module) -> str:
    """sha256 over parameter names and bytes: two encoders with the same weights match."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return "sha256:" + h.hexdigest()[:16]


def _hf_encoder(directory: Path) -> LoadedEncoder:
    cfg = json.loads((directory / "config.json").read_text())
    enc = VisionTransformer(
        embed_dim=cfg["hidden_size"], depth=cfg["num_hidden_layers"], num_heads=cfg["num_attention_heads"],
        mlp_ratio=cfg.get("mlp_ratio", 4.0), patch_size=cfg.get("patch_size", 16),
        tubelet_size=cfg.get("tubelet_size", 2), in_chans=cfg.get("in_chans", 3),
        num_frames=cfg.get("frames_per_clip", 16), img_size=cfg.get("crop_size", 256), pos_embed="rope",
        qkv_bias=cfg.get("qkv_bias", True), norm_eps=cfg.get("layer_norm_eps", 1e-6))
    load_state_strict(enc, select_state(read_checkpoint(directory), "encoder"), what="encoder")
    return LoadedEncoder(enc, "hf", str(directory), fingerprint(enc), cfg.get("frames_per_clip", 16),
                         cfg.get("crop_size", 256))


def load_encoder(source: str | Path, model_overrides: Sequence[str] = (), part: str = "target_encoder",
                 model_cfg=None) -> LoadedEncoder:
    """Build and strictly load a frozen encoder from ``source``.

    ``model_overrides`` (e.g. ``["model.size=large", "model.pos_embed=sincos", "data.crop_size=224"]``)
    describe the architecture for sources that do not carry it (official checkpoints); ``model_cfg`` (a
    ``ModelConfig``) does the same as a whole section and takes precedence."""
    path = Path(source)
    if not path.exists():
        raise CheckpointError(f"encoder source {path} does not exist")
    if path.is_dir() and (path / "config.json").exists():
        enc = _hf_encoder(path)
    elif path.is_dir() or path.name == "model.ckpt":
        from ..checkpoint.export import load_training_checkpoint

        ckpt = load_training_checkpoint(path)
        module = build_encoder(ckpt.config.model, ckpt.config.data.num_frames, ckpt.config.data.crop_size)
        load_state_strict(module, ckpt.target_sd if part == "target_encoder" else ckpt.encoder_sd, what=part)
        enc = LoadedEncoder(module, "run", str(path), fingerprint(module), ckpt.config.data.num_frames,
                            ckpt.config.data.crop_size)
    else:
        obj = read_checkpoint(path)
        if obj.get("format") == NATIVE_FORMAT and obj.get("config"):
            cfg = config_from_dict(obj["config"], validate=False)
            kind = "native"
        else:
            cfg = load_config(None, list(model_overrides))
            if model_cfg is not None:  # a copy: V-JEPA 2.1 options below must not edit the caller's config
                cfg.model = copy.deepcopy(model_cfg)
            kind = "official"
        available = [p for p in ("target_encoder", "encoder") if isinstance(obj.get(p), dict)]
        chosen = part if part in available else (available[0] if available else part)
        state = select_state(obj, chosen)
        if kind == "official":  # V-JEPA 2.1 weights describe their layout (docs/interop.md)
            apply_vjepa21_options(cfg.model, state, model_overrides)
        module = build_encoder(cfg.model, cfg.data.num_frames, cfg.data.crop_size)
        if kind == "official":
            check_vjepa21_positions(module, state, chosen)
        try:
            load_state_strict(module, state, what=chosen)
        except CheckpointError as exc:
            if kind == "official":
                raise CheckpointError(f"{exc}\n  describe the model with overrides, e.g. --model model.size=large "
                                      "model.pos_embed=sincos data.crop_size=224 data.num_frames=16") from None
            raise
        enc = LoadedEncoder(module, kind, str(path), fingerprint(module), cfg.data.num_frames, cfg.data.crop_size)
    enc.encoder.eval().requires_grad_(False)
    return enc


@dataclass
class LoadedPredictor:
    predictor: torch.nn.Module
    kind: str  # run | native | official | hf
    source: str
    num_frames: int
    crop_size: int
    num_mask_tokens: int


def _overridden(overrides: Sequence[str], key: str) -> bool:
    return any(o.split("=", 1)[0].strip() == key for o in overrides)


def load_predictor(source: str | Path, model_overrides: Sequence[str] = ()) -> LoadedPredictor:
    """Build and strictly load a frozen predictor from ``source``: a run directory or training
    checkpoint, our exported file, an official V-JEPA / V-JEPA 2 file (the model described by
    ``model_overrides`` as for :func:`load_encoder`) or a Hugging Face VJEPA2 directory.

    The number of mask tokens is read from the file (official V-JEPA 1 files carry 2, the released
    V-JEPA 2 files 10) unless ``model.predictor.num_mask_tokens`` is among the overrides; every
    other key must still match strictly."""
    import logging

    from ..checkpoint.interop import count_mask_tokens
    from ..models.build import build_predictor
    from ..models.predictor import Predictor

    log = logging.getLogger(__name__)
    path = Path(source)
    if not path.exists():
        raise CheckpointError(f"predictor source {path} does not exist")
    if path.is_dir() and (path / "config.json").exists():
        cfg = json.loads((path / "config.json").read_text())
        state = select_state(read_checkpoint(path), "predictor")
        if not state:
            raise CheckpointError(f"{path}: the Hugging Face model holds no predictor weights")
        frames, crop = cfg.get("frames_per_clip", 16), cfg.get("crop_size", 256)
        module = Predictor(
            embed_dim=cfg["hidden_size"], predictor_embed_dim=cfg["pred_hidden_size"],
            depth=cfg["pred_num_hidden_layers"], num_heads=cfg["pred_num_attention_heads"],
            mlp_ratio=cfg.get("pred_mlp_ratio", 4.0), num_mask_tokens=count_mask_tokens(state),
            patch_size=cfg.get("patch_size", 16), tubelet_size=cfg.get("tubelet_size", 2), num_frames=frames,
            img_size=crop, pos_embed="rope", qkv_bias=cfg.get("qkv_bias", True),
            norm_eps=cfg.get("layer_norm_eps", 1e-6))
        kind = "hf"
    elif path.is_dir() or path.name == "model.ckpt":
        from ..checkpoint.export import load_training_checkpoint

        ckpt = load_training_checkpoint(path)
        frames, crop = ckpt.config.data.num_frames, ckpt.config.data.crop_size
        module, state, kind = build_predictor(ckpt.config.model, frames, crop), ckpt.predictor_sd, "run"
    else:
        obj = read_checkpoint(path)
        if obj.get("format") == NATIVE_FORMAT and obj.get("config"):
            cfg, kind = config_from_dict(obj["config"], validate=False), "native"
        else:
            cfg, kind = load_config(None, list(model_overrides)), "official"
        state = select_state(obj, "predictor")
        stored = count_mask_tokens(state)
        configured = cfg.model.predictor.num_mask_tokens
        if stored and stored != configured and not _overridden(model_overrides, "model.predictor.num_mask_tokens"):
            log.info("predictor: %d mask tokens in %s (model.predictor.num_mask_tokens was %d)", stored, path,
                     configured)
            cfg.model.predictor.num_mask_tokens = stored
        frames, crop = cfg.data.num_frames, cfg.data.crop_size
        module = build_predictor(cfg.model, frames, crop)
    try:
        load_state_strict(module, state, what="predictor")
    except CheckpointError as exc:
        if kind == "official":
            raise CheckpointError(f"{exc}\n  describe the model with overrides, e.g. --model model.size=large "
                                  "model.predictor.depth=12 model.predictor.num_heads=12 data.crop_size=256") from None
        raise
    module.eval().requires_grad_(False)
    return LoadedPredictor(module, kind, str(path), frames, crop, len(module.mask_tokens))


class FrozenEncoder(torch.nn.Module):
    """Eval mode, no gradients, bf16 autocast on GPU; features of several blocks concatenated."""

    def __init__(self, encoder: VisionTransformer, layers: Sequence[int] = (-1,)):
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)
        self.layers = list(layers)

    @property
    def dim(self) -> int:
        return self.encoder.embed_dim * len(self.layers)

    @torch.no_grad()
    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        device_type = clips.device.type
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=device_type == "cuda"):
            if self.layers == [-1]:
                out = self.encoder(clips)
            else:
                out = torch.cat(self.encoder(clips, return_layers=self.layers), dim=-1)
        return out.float()
