"""Read and write encoder / predictor weights in our, the official and the Hugging Face formats.

Every load is strict: a missing, unexpected or mis-shaped key is an error that lists them (silent
partial loads are a known pain of the official code). Files are read with
``torch.load(weights_only=True)``; nothing pickled is executed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn

from ..config.sizes import VIT_SIZES
from ..errors import CheckpointError
from ..utils.atomic import atomic_path, atomic_torch_save, write_json
from .layouts import (POSITION_TABLE_KEYS, StateDict, detect_layout, hf_to_native, native_to_hf,
                      split_hf_classifier, split_position_tables, strip_prefixes)
from .layouts import VJEPA2_ENCODER_OPTIONS, is_vjepa21_encoder, vjepa21_model_options, vjepa21_options_text

log = logging.getLogger(__name__)

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
    ckpt = with_official_aliases(ckpt)
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
        try:  # a VJEPA2ForVideoClassification head is set aside (eval/hf_classifier.py reads it)
            encoder, predictor = hf_to_native(split_hf_classifier(tensors)[0])
        except KeyError as exc:  # leftover keys: report, don't traceback
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


def count_mask_tokens(sd: StateDict) -> int:
    """How many learned mask tokens predictor weights carry (``mask_tokens.{k}``; 0 for none).

    Raises CheckpointError when the indices are not 0..K-1 (a file that lost some tokens)."""
    found = sorted(int(k.split(".")[1]) for k in strip_prefixes(sd)
                   if k.startswith("mask_tokens.") and k.split(".")[1].isdigit())
    if found != list(range(len(found))):
        raise CheckpointError(f"predictor weights hold mask tokens {found}: expected mask_tokens.0 .. "
                              f"mask_tokens.{len(found) - 1}")
    return len(found)


# ---- strict loading --------------------------------------------------------------------------
def _format_keys(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def _check_position_tables(module: nn.Module, tables: dict[str, torch.Tensor], what: str) -> None:
    """A stored V-JEPA 1 sin-cos table must equal the one we compute (else positions would be
    silently wrong): this catches a wrong ``uniform_power`` or reference grid.

    A RoPE model has no table and ignores a stored one, as the official V-JEPA 2 hub loader does
    (the released V-JEPA 2 encoder and predictor files carry ``pos_embed`` / ``predictor_pos_embed``
    although their models use RoPE); one log line per load says so. The weights alone cannot tell
    such a file from a V-JEPA 1 (sin-cos) one, hence the hint in that line."""
    buffers = dict(module.named_buffers())
    ignored = []
    for key, stored in tables.items():
        ours = buffers.get(key)
        if ours is None and getattr(module, "use_rope", False):
            ignored.append(f"'{key}' {tuple(stored.shape)}")
            continue
        if ours is None:
            raise CheckpointError(f"{what}: checkpoint has a sin-cos table '{key}' that the model does not have")
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
    if ignored:
        log.warning("%s: ignoring the stored sin-cos table %s: this model uses RoPE (released V-JEPA 2 files "
                    "carry one; the official loader ignores it too). For a V-JEPA 1 checkpoint set "
                    "model.pos_embed=sincos", what, ", ".join(ignored))


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
        tokens = sum(k.startswith("mask_tokens.") for k in sd)
        if tokens and tokens != len(getattr(module, "mask_tokens", ())):
            lines.append(f"  checkpoint predictor: {tokens} mask tokens; set model.predictor.num_mask_tokens={tokens}")
        if "patch_embed.proj.weight" in sd:
            facts = describe_encoder_state(sd)
            lines.append(f"  checkpoint encoder: embed_dim {facts['embed_dim']}, depth {facts['depth']}, "
                         f"patch {facts['patch_size']}, tubelet {facts['tubelet_size']}, "
                         f"{facts['pos_embed']} positions; matching sizes: {facts['matching_sizes'] or 'custom'}")
        lines.extend(vjepa21_hints(module, sd))
        if "action_encoder.weight" in sd and not hasattr(module, "action_encoder"):
            lines.append("  checkpoint predictor is V-JEPA 2-AC's action-conditioned predictor (action_encoder.*): "
                         "build models.ac_predictor.ActionConditionedPredictor and load it with "
                         "checkpoint.ac_layout.load_official_ac_predictor")
        raise CheckpointError("\n".join(lines))
    _check_position_tables(module, tables, what)
    module.load_state_dict(sd, strict=True)


def load_part(source: str | Path | dict, module: nn.Module, part: str = "target_encoder") -> nn.Module:
    """Strictly load ``part`` from a checkpoint path or an already-read dict into ``module``."""
    ckpt = read_checkpoint(source) if not isinstance(source, dict) else source
    _check_position_mode(ckpt, module, part)
    state = select_state(ckpt, part)
    if ckpt.get("format") != NATIVE_FORMAT:
        check_vjepa21_positions(module, state, part)
    load_state_strict(module, state, what=part)
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


def save_official(path: str | Path, parts: dict[str, nn.Module], **extra) -> None:
    """The official V-JEPA layout: ``module.backbone.``-prefixed dicts (+ sin-cos tables), plus
    ``extra`` top-level entries (the official trainers' ``epoch``, ``opt``, ``scaler`` ...: see
    checkpoint/export.py)."""
    obj = {name: {f"module.backbone.{k}": v for k, v in _cpu_fp32(with_position_tables(m, m.state_dict())).items()}
           for name, m in parts.items()}
    obj.update(extra)
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
    layout = getattr(encoder, "rope_layout", "repeat")
    extras = [name for name, present in (
        ("hierarchical output norms (norms_block)", getattr(encoder, "hierarchical_layers", None) is not None),
        ("an image tokenizer (patch_embed_img)", getattr(encoder, "patch_embed_img", None) is not None),
        ("modality embeddings", getattr(encoder, "img_mod_embed", None) is not None),
        (f"RoPE layout {layout!r}", layout != "repeat"),
        ("rescaled RoPE positions", bool(getattr(encoder, "rope_rescale_grid", None)))) if present]
    if extras:
        raise CheckpointError(f"Hugging Face VJEPA2 has no place for this encoder's {', '.join(extras)} "
                              "(a V-JEPA 2.1 encoder): export it with --format native or official")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sd = native_to_hf(encoder.state_dict(), predictor.state_dict() if predictor is not None else None)
    with atomic_path(out_dir / "model.safetensors") as tmp:
        save_file(_cpu_fp32(sd), str(tmp), metadata={"format": "pt"})
    write_json(out_dir / "config.json", hf_config_dict(encoder, predictor, num_frames, crop_size), indent=2,
               newline=False)


# ---- V-JEPA 2.1 (app/vjepa_2_1; docs/interop.md "V-JEPA 2.1") ---------------------------------
def with_official_aliases(ckpt: dict) -> dict:
    """V-JEPA 2.1's distilled ViT-B / ViT-L files keep their encoder under ``ema_encoder`` (the
    official hub loads ``checkpoint_key="ema_encoder"``): it serves as ``target_encoder`` when the
    file has none."""
    if not isinstance(ckpt.get("target_encoder"), dict) and isinstance(ckpt.get("ema_encoder"), dict):
        return {**ckpt, "target_encoder": ckpt["ema_encoder"]}
    return ckpt


def vjepa21_hints(module: nn.Module, sd: StateDict) -> list[str]:
    """Error lines naming the fix when a V-JEPA 2.1 encoder meets a V-JEPA 2 model or vice versa."""
    if not any(k == "patch_embed.proj.weight" for k in sd):
        return []
    ours_21 = getattr(module, "hierarchical_layers", None) is not None
    if is_vjepa21_encoder(sd) and not ours_21:
        try:
            options = vjepa21_model_options(sd)
        except ValueError as exc:
            return [f"  checkpoint encoder: {exc}"]
        return ["  checkpoint encoder is V-JEPA 2.1 (norms_block, no final norm): describe the model with "
                + vjepa21_options_text(options)]
    if ours_21 and not is_vjepa21_encoder(sd):
        return ["  checkpoint encoder has a final norm (V-JEPA / V-JEPA 2 layout) but the model is built as "
                "V-JEPA 2.1: set " + vjepa21_options_text(VJEPA2_ENCODER_OPTIONS)]
    return []


def check_vjepa21_positions(module: nn.Module, sd: StateDict, what: str = "encoder") -> None:
    """An official V-JEPA 2.1 encoder loaded into a 2.1-shaped model must also get 2.1's RoPE
    (``repeat_interleave`` layout, ``interpolate_rope`` grid): the weights cannot show it, and a
    mismatch would load strictly and give wrong features. Native files carry their config instead."""
    if getattr(module, "hierarchical_layers", None) is None or not is_vjepa21_encoder(sd):
        return
    try:
        options = vjepa21_model_options(sd)
    except ValueError as exc:
        raise CheckpointError(f"{what}: {exc}") from None
    ours = {"rope_layout": getattr(module, "rope_layout", "repeat"),
            "rope_rescale_grid": getattr(module, "rope_rescale_grid", None)}
    wrong = [k for k in ours if ours[k] != options[k]]
    if wrong:
        have = ", ".join(f"model.{k}={ours[k]}" for k in wrong)
        raise CheckpointError(f"{what}: official V-JEPA 2.1 encoder into a model with {have}; 2.1 rotates with "
                              f"repeat_interleave frequencies and interpolate_rope: set {vjepa21_options_text(options)}")


def apply_vjepa21_options(model_cfg, sd: StateDict, overrides=()) -> bool:
    """Describe an official V-JEPA 2.1 encoder on ``model_cfg`` (a ``ModelConfig``): set the options
    its weights imply (``vjepa21_model_options``) except those the user named in ``overrides``
    (``model.key=value`` strings). Returns whether ``sd`` is a 2.1 encoder."""
    try:
        options = vjepa21_model_options(sd)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    if options is None:
        return False
    named = {o.split("=", 1)[0].strip() for o in overrides}
    for key, value in options.items():
        if f"model.{key}" not in named:
            setattr(model_cfg, key, value)
    return True
