"""Read and write encoder / predictor weights in our, the official and the Hugging Face formats.

Every load is strict: a missing, unexpected or mis-shaped key is an error that lists them (silent
partial loads are a known pain of the official code). Files are read with
``torch.load(weights_only=True)``; nothing pickled is executed.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from ..config.sizes import VIT_SIZES
from ..errors import CheckpointError
from ..utils.atomic import atomic_path, atomic_torch_save, write_json
from .layouts import (POSITION_TABLE_KEYS, StateDict, detect_layout, hf_to_native, native_to_hf,
                      split_position_tables, strip_prefixes)

NATIVE_FORMAT = "vjepa_pipeline"
NATIVE_FORMAT_VERSION = 1
PARTS = ("encoder", "target_encoder", "predictor")


# ---- reading ---------------------------------------------------------------------------------
def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint file (or an HF model directory) as a dict of plain tensors/containers."""
    path = Path(path)
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).exists():
                return read_checkpoint(path / name)
        raise CheckpointError(f"{path}: directory has no model.safetensors or pytorch_model.bin")
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # SafetensorError on a truncated / corrupt header
            raise CheckpointError(f"{path}: cannot be read as safetensors ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError ... by case
        raise CheckpointError(
            f"{path}: cannot be read as a weights-only torch checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}). Files holding arbitrary pickled objects are refused."
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, found {type(obj).__name__}")
    return obj


def select_state(ckpt: dict, part: str) -> StateDict:
    """The state dict of ``part`` ('encoder', 'target_encoder' or 'predictor') in our layout.

    Accepts our files, official V-JEPA / V-JEPA 2 files (dicts with those entries, ``module.`` /
    ``backbone.`` prefixes), bare state dicts and HF VJEPA2Model state dicts (whose single encoder
    serves as both encoder and target_encoder)."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    if any(isinstance(ckpt.get(p), dict) for p in PARTS):
        if not isinstance(ckpt.get(part), dict):
            found = [p for p in PARTS if isinstance(ckpt.get(p), dict)]
            raise CheckpointError(f"checkpoint has no '{part}' weights; it has {found}")
        return strip_prefixes(ckpt[part])
    tensors = {k: v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"checkpoint holds no tensors; top-level keys: {list(ckpt)[:10]}")
    try:
        layout = detect_layout(tensors)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    if layout == "hf":
        try:
            encoder, predictor = hf_to_native(tensors)
        except KeyError as exc:  # leftover keys (e.g. a classification head): report, don't traceback
            raise CheckpointError(str(exc.args[0]) if exc.args else repr(exc)) from None
        return predictor if part == "predictor" else encoder
    sd = strip_prefixes(tensors)
    is_predictor = any(k.startswith("predictor_") or k.startswith("mask_tokens.") for k in sd)
    if is_predictor != (part == "predictor"):
        raise CheckpointError(f"bare state dict holds {'predictor' if is_predictor else 'encoder'} weights, "
                              f"not {part}")
    return sd


def describe_encoder_state(sd: StateDict) -> dict:
    """Architecture facts readable from encoder weights, with the matching published size names."""
    sd = strip_prefixes(sd)
    w = sd.get("patch_embed.proj.weight")
    if w is None:
        raise CheckpointError("encoder weights lack patch_embed.proj.weight")
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    dim = w.shape[0]
    hidden = sd["blocks.0.mlp.fc1.weight"].shape[0] if depth else 0
    sizes = [n for n, s in VIT_SIZES.items() if s.embed_dim == dim and s.depth == depth]
    return {
        "embed_dim": dim, "depth": depth, "mlp_hidden": hidden, "in_chans": w.shape[1],
        "tubelet_size": w.shape[2], "patch_size": w.shape[3],
        "pos_embed": "sincos" if "pos_embed" in sd else "rope", "matching_sizes": sizes,
    }


# ---- strict loading --------------------------------------------------------------------------
def _format_keys(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def _check_position_tables(module: nn.Module, tables: dict[str, torch.Tensor], what: str) -> None:
    """A stored V-JEPA 1 sin-cos table must equal the one we compute (else positions would be
    silently wrong): this catches a wrong ``uniform_power`` or reference grid."""
    buffers = dict(module.named_buffers())
    for key, stored in tables.items():
        ours = buffers.get(key)
        if ours is None:
            raise CheckpointError(f"{what}: checkpoint has a sin-cos table '{key}' but the model uses RoPE; "
                                  "set model.pos_embed=sincos")
        stored = stored.reshape(ours.shape) if stored.numel() == ours.numel() else stored
        if stored.shape != ours.shape:
            raise CheckpointError(
                f"{what}: stored '{key}' has shape {tuple(stored.shape)}, the model expects {tuple(ours.shape)}: "
                "set data.num_frames / data.crop_size to the checkpoint's training clip size")
        err = (stored.float() - ours.float()).abs().max().item()
        if err > 1e-4:
            raise CheckpointError(
                f"{what}: stored '{key}' differs from the computed 3D sin-cos table (max diff {err:.3g}); "
                "try toggling model.uniform_power")


def load_state_strict(module: nn.Module, sd: StateDict, what: str = "model") -> None:
    """Load ``sd`` into ``module``; any missing/unexpected/mis-shaped key raises CheckpointError."""
    sd, tables = split_position_tables(strip_prefixes(sd))
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(sd) & set(own)) if sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        lines = [f"{what}: checkpoint does not match the model"]
        if missing:
            lines.append(f"  missing ({len(missing)}): {_format_keys(missing)}")
        if unexpected:
            lines.append(f"  unexpected ({len(unexpected)}): {_format_keys(unexpected)}")
        if shapes:
            lines.append(f"  shape mismatch ({len(shapes)}): {_format_keys(shapes, 6)}")
        if "patch_embed.proj.weight" in sd:
            facts = describe_encoder_state(sd)
            lines.append(f"  checkpoint encoder: embed_dim {facts['embed_dim']}, depth {facts['depth']}, "
                         f"patch {facts['patch_size']}, tubelet {facts['tubelet_size']}, "
                         f"{facts['pos_embed']} positions; matching sizes: {facts['matching_sizes'] or 'custom'}")
        raise CheckpointError("\n".join(lines))
    _check_position_tables(module, tables, what)
    module.load_state_dict(sd, strict=True)


def load_part(source: str | Path | dict, module: nn.Module, part: str = "target_encoder") -> nn.Module:
    """Strictly load ``part`` from a checkpoint path or an already-read dict into ``module``."""
    ckpt = read_checkpoint(source) if not isinstance(source, dict) else source
    _check_position_mode(ckpt, module, part)
    load_state_strict(module, select_state(ckpt, part), what=part)
    return module


def _check_position_mode(ckpt: dict, module: nn.Module, part: str) -> None:
    """RoPE weights carry no position table, so only our own files (which store their config) can
    tell a RoPE checkpoint apart from a sin-cos one: check it there."""
    stored = (ckpt.get("config") or {}).get("model", {}).get("pos_embed") if ckpt.get("format") == NATIVE_FORMAT else None
    ours = "rope" if getattr(module, "use_rope", True) else "sincos"
    if stored is not None and stored != ours:
        raise CheckpointError(f"{part}: checkpoint was trained with {stored} positions but the model uses {ours}; "
                              f"set model.pos_embed={stored}")


# ---- writing ---------------------------------------------------------------------------------
def _cpu_fp32(sd: StateDict) -> StateDict:
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in sd.items()}


def with_position_tables(module: nn.Module, sd: StateDict) -> StateDict:
    """Add the V-JEPA 1 sin-cos tables (stored in official checkpoints) to a state dict."""
    out = dict(sd)
    for key in POSITION_TABLE_KEYS:
        buf = dict(module.named_buffers()).get(key)
        if buf is not None:
            out[key] = buf.detach().cpu().float()
    return out


def save_native(path: str | Path, parts: dict[str, nn.Module], config: dict | None = None, **extra) -> None:
    """Our checkpoint: {'format', 'format_version', 'config', 'encoder', 'predictor',
    'target_encoder', ...extra}, fp32 on CPU, written atomically."""
    obj = {"format": NATIVE_FORMAT, "format_version": NATIVE_FORMAT_VERSION, "config": config or {}}
    obj.update({name: _cpu_fp32(m.state_dict()) for name, m in parts.items()})
    obj.update(extra)
    atomic_torch_save(obj, path)


def save_official(path: str | Path, parts: dict[str, nn.Module]) -> None:
    """The official V-JEPA layout: ``module.backbone.``-prefixed dicts (+ sin-cos tables)."""
    obj = {name: {f"module.backbone.{k}": v for k, v in _cpu_fp32(with_position_tables(m, m.state_dict())).items()}
           for name, m in parts.items()}
    atomic_torch_save(obj, path)


def hf_config_dict(encoder: nn.Module, predictor: nn.Module | None, num_frames: int, crop_size: int) -> dict:
    """A ``VJEPA2Config``-compatible dict describing our modules."""
    blk = encoder.blocks[0]
    cfg = {
        "model_type": "vjepa2", "architectures": ["VJEPA2Model"],
        "patch_size": encoder.patch_size, "tubelet_size": encoder.tubelet_size, "crop_size": crop_size,
        "frames_per_clip": num_frames, "in_chans": encoder.patch_embed.proj.in_channels,
        "hidden_size": encoder.embed_dim, "num_attention_heads": encoder.num_heads,
        "num_hidden_layers": len(encoder.blocks), "mlp_ratio": blk.mlp.fc1.out_features / encoder.embed_dim,
        "layer_norm_eps": blk.norm1.eps, "qkv_bias": blk.attn.qkv.bias is not None, "hidden_act": "gelu",
    }
    if predictor is not None:
        pblk = predictor.predictor_blocks[0]
        cfg.update({
            "pred_hidden_size": predictor.predictor_embed_dim, "pred_num_attention_heads": predictor.num_heads,
            "pred_num_hidden_layers": len(predictor.predictor_blocks),
            "pred_num_mask_tokens": predictor.num_mask_tokens,
            "pred_mlp_ratio": pblk.mlp.fc1.out_features / predictor.predictor_embed_dim,
        })
    return cfg


def save_hf(out_dir: str | Path, encoder: nn.Module, predictor: nn.Module | None, num_frames: int,
            crop_size: int) -> None:
    """A directory ``VJEPA2Model.from_pretrained`` can read: config.json + model.safetensors."""
    from safetensors.torch import save_file

    if not getattr(encoder, "use_rope", False):
        raise CheckpointError("Hugging Face VJEPA2 only supports RoPE models (model.pos_embed=rope)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sd = native_to_hf(encoder.state_dict(), predictor.state_dict() if predictor is not None else None)
    with atomic_path(out_dir / "model.safetensors") as tmp:
        save_file(_cpu_fp32(sd), str(tmp), metadata={"format": "pt"})
    write_json(out_dir / "config.json", hf_config_dict(encoder, predictor, num_frames, crop_size), indent=2,
               newline=False)
