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


# ---- Hugging Face VJEPA2ForVideoClassification head -> our attentive probe -------------------
HF_HEAD_PREFIXES = ("pooler.", "classifier.")
_HF_POOLER_SELF = {"layer_norm1": "norm1", "self_attn.out_proj": "attn.proj", "layer_norm2": "norm2",
                   "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
_HF_POOLER_CROSS = {"layer_norm1": "norm1", "cross_attn.q_proj": "xattn.q", "layer_norm2": "norm2",
                    "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}


def split_hf_classifier(sd: StateDict) -> tuple[StateDict, StateDict]:
    """(backbone, head) of an HF ``VJEPA2ForVideoClassification`` state dict (``vjepa2.*`` backbone,
    ``pooler.*`` + ``classifier.*`` head); the head is empty for any other dict. The head is
    recognised by its query token and classifier together: a stray ``classifier.*`` key alone stays
    with the backbone, where :func:`hf_to_native` reports it."""
    plain = {strip_key(k): k for k in sd}
    if "pooler.query_tokens" not in plain or "classifier.weight" not in plain:
        return dict(sd), {}
    head = {name: sd[key] for name, key in plain.items() if name.startswith(HF_HEAD_PREFIXES)}
    return {key: sd[key] for name, key in plain.items() if name not in head}, head


def hf_classifier_to_probe(head: StateDict) -> tuple[StateDict, dict]:
    """HF pooler + classifier -> (state dict of our ``AttentiveProbe`` with ``final_norm=False``,
    the facts that build it: ``dim``, ``num_classes``, ``self_attn_blocks``, ``mlp_ratio``).

    The two match layer for layer: pre-norm self-attention layers over the tokens, then the learned
    query cross-attending to the layer-normed tokens with an MLP on the query, then a Linear. HF's
    cross-attention has no output projection where ours has ``xattn.proj``: it becomes the identity
    (exact in floating point). The number of heads is not in the weights (HF: the config's
    ``num_attention_heads``). Raises ValueError naming the keys that have no counterpart."""
    head = strip_prefixes(head)
    out: StateDict = {}
    used: set[str] = set()

    def take(src: str, dst: str) -> None:
        for kind in ("weight", "bias"):
            if f"{src}.{kind}" in head:
                out[f"{dst}.{kind}"] = head[f"{src}.{kind}"]
                used.add(f"{src}.{kind}")

    def fuse(srcs: list[str], dst: str) -> None:  # separate projections -> one fused Linear (q|k|v order)
        for kind in ("weight", "bias"):
            keys = [f"{s}.{kind}" for s in srcs]
            if all(k in head for k in keys):
                out[f"{dst}.{kind}"] = torch.cat([head[k] for k in keys], dim=0)
                used.update(keys)

    blocks = sorted({int(m.group(1)) for k in head if (m := re.match(r"pooler\.self_attention_layers\.(\d+)\.", k))})
    for i in blocks:
        src, dst = f"pooler.self_attention_layers.{i}", f"pooler.blocks.{i}"
        for hf_name, name in _HF_POOLER_SELF.items():
            take(f"{src}.{hf_name}", f"{dst}.{name}")
        fuse([f"{src}.self_attn.{p}_proj" for p in ("q", "k", "v")], f"{dst}.attn.qkv")
    src, dst = "pooler.cross_attention_layer", "pooler.cross_attention_block"
    for hf_name, name in _HF_POOLER_CROSS.items():
        take(f"{src}.{hf_name}", f"{dst}.{name}")
    fuse([f"{src}.cross_attn.k_proj", f"{src}.cross_attn.v_proj"], f"{dst}.xattn.kv")
    take("classifier", "linear")
    if "pooler.query_tokens" in head:
        out["pooler.query_tokens"] = head["pooler.query_tokens"]
        used.add("pooler.query_tokens")
    leftover = sorted(set(head) - used)
    if leftover:
        raise ValueError(f"{len(leftover)} keys of the classification head have no counterpart in our attentive "
                         f"probe: {leftover[:8]}")
    needed = ("pooler.query_tokens", "linear.weight", f"{dst}.mlp.fc1.weight")
    if any(k not in out for k in needed):
        raise ValueError("not a VJEPA2ForVideoClassification head: it needs pooler.query_tokens, classifier.weight "
                         "and pooler.cross_attention_layer.*")
    if blocks != list(range(len(blocks))):
        raise ValueError(f"pooler self-attention layers are not numbered 0..n-1: {blocks}")
    query = out["pooler.query_tokens"]
    dim = query.shape[-1]
    if query.numel() != dim:
        raise ValueError(f"pooler.query_tokens has shape {tuple(query.shape)}: our probe has one query token")
    out[f"{dst}.xattn.proj.weight"] = torch.eye(dim, dtype=query.dtype)
    out[f"{dst}.xattn.proj.bias"] = torch.zeros(dim, dtype=query.dtype)
    facts = {"dim": int(dim), "num_classes": int(out["linear.weight"].shape[0]), "self_attn_blocks": len(blocks),
             "mlp_ratio": out[f"{dst}.mlp.fc1.weight"].shape[0] / dim}
    return out, facts


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


# ---- V-JEPA 2.1 encoders (app/vjepa_2_1) ----------------------------------------------------
#: Keys only a V-JEPA 2.1 encoder has (its ``norms_block`` replaces the final ``norm``).
VJEPA21_ENCODER_MARKERS = ("norms_block.", "img_mod_embed", "video_mod_embed", "patch_embed_img.")
#: The official ``interpolate_rope`` reference grid by patch size (256 px / 16, 252 px / 14).
VJEPA21_ROPE_GRID = {16: 16, 14: 18}
#: The model options that describe a V-JEPA 2.1 encoder, as config overrides.
VJEPA21_OPTION_KEYS = ("rope_layout", "rope_rescale_grid", "image_tokenizer", "modality_embedding",
                       "hierarchical_norms")
#: Their values for a V-JEPA / V-JEPA 2 encoder (the config defaults).
VJEPA2_ENCODER_OPTIONS = {"rope_layout": "repeat", "rope_rescale_grid": None, "image_tokenizer": False,
                          "modality_embedding": False, "hierarchical_norms": False}


def is_vjepa21_encoder(sd: StateDict) -> bool:
    """Whether an encoder state dict (any prefixes) is in the V-JEPA 2.1 layout (``norms_block.*``)."""
    return any(strip_key(k).startswith("norms_block.") for k in sd)


def vjepa21_model_options(sd: StateDict) -> dict | None:
    """The ``model.*`` options an official V-JEPA 2.1 encoder state dict implies, or None for
    another layout. The weights show the image tokenizer (``patch_embed_img``), the modality
    embeddings and ``norms_block``; the RoPE layout (``repeat_interleave``) and ``interpolate_rope``
    are the official code's and its released configs' (reference grid 16 for 16 px patches).
    Raises ValueError for a 2.1 layout this code cannot reproduce."""
    sd = strip_prefixes(sd)
    if not is_vjepa21_encoder(sd):
        return None
    norms = sorted({k.split(".")[1] for k in sd if k.startswith("norms_block.")}, key=int)
    if norms != ["0", "1", "2", "3"]:
        raise ValueError(f"V-JEPA 2.1 encoder with norms_block entries {norms}; the official layout has 4 "
                         "(one per hierarchical output block)")
    if "norm.weight" in sd:
        raise ValueError("state dict has both norms_block.* (V-JEPA 2.1) and a final norm.* (V-JEPA 2): "
                         "not an official layout")
    if ("img_mod_embed" in sd) != ("video_mod_embed" in sd):
        raise ValueError("V-JEPA 2.1 encoder has only one of img_mod_embed / video_mod_embed")
    patch = sd["patch_embed.proj.weight"].shape[-1] if "patch_embed.proj.weight" in sd else 16
    if patch not in VJEPA21_ROPE_GRID:
        raise ValueError(f"V-JEPA 2.1 encoder with {patch} px patches: the official interpolate_rope knows only "
                         f"patches of {sorted(VJEPA21_ROPE_GRID)} px")
    return {"rope_layout": "interleave", "rope_rescale_grid": VJEPA21_ROPE_GRID[patch],
            "image_tokenizer": "patch_embed_img.proj.weight" in sd, "modality_embedding": "img_mod_embed" in sd,
            "hierarchical_norms": True}


def vjepa21_options_text(options: dict) -> str:
    """``model.key=value ...`` overrides for :func:`vjepa21_model_options`' result."""
    def text(v):
        return str(v).lower() if isinstance(v, bool) else ("null" if v is None else str(v))
    return " ".join(f"model.{k}={text(options[k])}" for k in VJEPA21_OPTION_KEYS)
