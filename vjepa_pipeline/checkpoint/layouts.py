"""Key-layout conversions between our modules, the official V-JEPA / V-JEPA 2 checkpoints and
Hugging Face ``VJEPA2Model`` state dicts. Pure functions on state dicts (name -> tensor).

Our parameter names are the official ones, so official <-> native is prefix handling plus the
position tables (V-JEPA 1 stores ``pos_embed``; we compute it). HF renames modules and splits the
fused ``qkv`` projection into query / key / value.
"""

from __future__ import annotations

import re

import torch

StateDict = dict[str, torch.Tensor]

OFFICIAL_PREFIXES = ("module.", "backbone.", "_orig_mod.")
HF_PREFIXES = ("vjepa2.",)
POSITION_TABLE_KEYS = ("pos_embed", "predictor_pos_embed")


def strip_key(key: str, prefixes: tuple[str, ...] = OFFICIAL_PREFIXES) -> str:
    """``key`` without the wrapper prefixes that lead it (``module.backbone.x`` -> ``x``), repeatedly."""
    changed = True
    while changed:
        changed = False
        for prefix in prefixes:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def strip_prefixes(sd: StateDict, prefixes: tuple[str, ...] = OFFICIAL_PREFIXES) -> StateDict:
    """Remove wrapper prefixes (``module.``, ``backbone.``, ...) wherever they lead a key, repeatedly."""
    return {strip_key(key, prefixes): value for key, value in sd.items()}


def detect_layout(sd: StateDict) -> str:
    """'hf' for HF VJEPA2Model keys, 'native' otherwise (official keys once prefixes are stripped)."""
    keys = strip_prefixes(strip_prefixes(sd), HF_PREFIXES).keys()
    if any(k.startswith(("encoder.embeddings.", "encoder.layer.", "predictor.embeddings.")) for k in keys):
        return "hf"
    if any(k.startswith(("patch_embed.", "blocks.", "predictor_embed.", "predictor_blocks.")) for k in keys):
        return "native"
    raise ValueError(
        "unrecognised state dict layout: expected official/native keys (patch_embed.*, blocks.*, "
        f"predictor_blocks.*) or Hugging Face VJEPA2 keys (encoder.layer.*); first keys: {list(sd)[:5]}"
    )


def split_position_tables(sd: StateDict) -> tuple[StateDict, dict[str, torch.Tensor]]:
    """Separate stored sin-cos tables (V-JEPA 1) from the learnable weights."""
    tables = {k: v for k, v in sd.items() if k in POSITION_TABLE_KEYS}
    return {k: v for k, v in sd.items() if k not in POSITION_TABLE_KEYS}, tables


# ---- Hugging Face <-> native ---------------------------------------------------------------
_HF_BLOCK = {
    "norm1": "norm1", "norm2": "norm2", "attention.proj": "attn.proj", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
}


def _hf_block_to_native(prefix_hf: str, prefix_native: str, hf: StateDict, out: StateDict, used: set) -> None:
    for key in list(hf):
        if not key.startswith(prefix_hf):
            continue
        rest = key[len(prefix_hf):]
        match = re.match(r"(\d+)\.(.+)\.(weight|bias)$", rest)
        if not match:
            continue
        idx, mod, kind = match.groups()
        if mod in _HF_BLOCK:
            out[f"{prefix_native}{idx}.{_HF_BLOCK[mod]}.{kind}"] = hf[key]
            used.add(key)
        elif mod == "attention.query":
            parts = [hf[f"{prefix_hf}{idx}.attention.{n}.{kind}"] for n in ("query", "key", "value")]
            out[f"{prefix_native}{idx}.attn.qkv.{kind}"] = torch.cat(parts, dim=0)
            used.update(f"{prefix_hf}{idx}.attention.{n}.{kind}" for n in ("query", "key", "value"))


def hf_to_native(hf_sd: StateDict) -> tuple[StateDict, StateDict]:
    """HF ``VJEPA2Model`` state dict -> (encoder, predictor) state dicts in our layout.

    Every HF key must be consumed; leftovers (e.g. a classification head) are reported."""
    hf = strip_prefixes(hf_sd, HF_PREFIXES)
    enc, pred, used = {}, {}, set()
    simple = {
        "encoder.embeddings.patch_embeddings.proj": (enc, "patch_embed.proj"),
        "encoder.layernorm": (enc, "norm"),
        "predictor.embeddings.predictor_embeddings": (pred, "predictor_embed"),
        "predictor.layernorm": (pred, "predictor_norm"),
        "predictor.proj": (pred, "predictor_proj"),
    }
    for hf_name, (target, name) in simple.items():
        for kind in ("weight", "bias"):
            if f"{hf_name}.{kind}" in hf:
                target[f"{name}.{kind}"] = hf[f"{hf_name}.{kind}"]
                used.add(f"{hf_name}.{kind}")
    _hf_block_to_native("encoder.layer.", "blocks.", hf, enc, used)
    _hf_block_to_native("predictor.layer.", "predictor_blocks.", hf, pred, used)
    if "predictor.embeddings.mask_tokens" in hf:
        tokens = hf["predictor.embeddings.mask_tokens"]  # (K, 1, 1, D)
        for k in range(tokens.shape[0]):
            pred[f"mask_tokens.{k}"] = tokens[k].clone()
        used.add("predictor.embeddings.mask_tokens")
    leftover = sorted(set(hf) - used)
    if leftover:
        raise KeyError(f"{len(leftover)} Hugging Face keys have no counterpart here: {leftover[:8]}")
    return enc, pred


def native_to_hf(encoder_sd: StateDict, predictor_sd: StateDict | None = None) -> StateDict:
    """(encoder, predictor) in our layout -> HF ``VJEPA2Model`` state dict (RoPE models only)."""
    encoder_sd, tables = split_position_tables(strip_prefixes(encoder_sd))
    if tables:
        raise ValueError("Hugging Face VJEPA2 uses RoPE; a sin-cos (V-JEPA 1) model cannot be exported to it")
    out: StateDict = {}
    inverse = {v: k for k, v in _HF_BLOCK.items()}

    def blocks(sd: StateDict, src: str, dst: str) -> None:
        for key, value in sd.items():
            match = re.match(rf"{re.escape(src)}(\d+)\.(.+)\.(weight|bias)$", key)
            if not match:
                continue
            idx, mod, kind = match.groups()
            if mod == "attn.qkv":
                for name, part in zip(("query", "key", "value"), value.chunk(3, dim=0)):
                    out[f"{dst}{idx}.attention.{name}.{kind}"] = part.clone()
            else:
                out[f"{dst}{idx}.{inverse[mod]}.{kind}"] = value

    renames = {"patch_embed.proj": "encoder.embeddings.patch_embeddings.proj", "norm": "encoder.layernorm",
               "predictor_embed": "predictor.embeddings.predictor_embeddings",
               "predictor_norm": "predictor.layernorm", "predictor_proj": "predictor.proj"}
    for sd in (encoder_sd, strip_prefixes(predictor_sd or {})):
        for key, value in sd.items():
            base, _, kind = key.rpartition(".")
            if base in renames:
                out[f"{renames[base]}.{kind}"] = value
    blocks(encoder_sd, "blocks.", "encoder.layer.")
    if predictor_sd:
        pred = strip_prefixes(predictor_sd)
        blocks(pred, "predictor_blocks.", "predictor.layer.")
        count = len([k for k in pred if k.startswith("mask_tokens.")])
        out["predictor.embeddings.mask_tokens"] = torch.stack([pred[f"mask_tokens.{k}"] for k in range(count)])
    return out
