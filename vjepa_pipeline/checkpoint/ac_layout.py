"""The official V-JEPA 2-AC predictor layout (``VisionTransformerPredictorAC``) <-> our
:class:`~vjepa_pipeline.models.ac_predictor.ActionConditionedPredictor`. Pure functions on state dicts.

Our parameter names are the official ones, so the mapping is nearly trivial, but strict:

- official files: ``app/vjepa_droid`` saves ``{"predictor": <DDP state dict>, "encoder", "target_encoder",
  "opt", "epoch", ...}``, so predictor keys carry ``module.`` (the hub loader strips ``module.`` and
  ``backbone.`` and then loads the predictor with ``strict=True``); any of :data:`OFFICIAL_PREFIXES`
  is accepted;
- the one difference: the official class always has ``extrinsics_encoder`` (``Linear(action_dim - 1,
  D)``), unused unless ``use_extrinsics``; ours has it only when used. Reading drops an unused one
  (after checking its shape); writing an official dict without one adds zeros (never read by the
  official model, but its strict loader needs the keys);
- every key must be known and every expected key present, else a :class:`CheckpointError` names them.

The number of attention heads is not in the weights (``qkv`` is (3D, D) for any head count), nor are
the image / patch size (the RoPE grid) or whether RoPE is used: they come from the configuration
(official V-JEPA 2-AC: ViT-g encoder, predictor 1024 wide, 24 blocks, 16 heads, 256 px, patch 16, RoPE).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..errors import CheckpointError
from .layouts import OFFICIAL_PREFIXES, StateDict, strip_prefixes

#: Predictor-level modules (each with weight and bias) besides the blocks.
_TOP = ("predictor_embed", "action_encoder", "state_encoder", "extrinsics_encoder", "predictor_norm",
        "predictor_proj")
_BLOCK = ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
_KEY = re.compile(r"^(?:(?P<top>" + "|".join(_TOP) + r")|predictor_blocks\.(?P<idx>\d+)\.(?P<mod>"
                  + "|".join(re.escape(m) for m in _BLOCK) + r"))\.(?P<kind>weight|bias)$")


@dataclass(frozen=True)
class ACPredictorShape:
    """What the weights of an action-conditioned predictor say about its architecture."""

    embed_dim: int  # encoder width (predictor_embed input, predictor_proj output)
    predictor_embed_dim: int
    depth: int
    mlp_hidden: int
    action_dim: int
    state_dim: int
    extrinsics_dim: int | None  # None: no extrinsics_encoder in the dict
    qkv_bias: bool

    @property
    def mlp_ratio(self) -> float:
        return self.mlp_hidden / self.predictor_embed_dim

    @classmethod
    def of_model(cls, model) -> ACPredictorShape:
        """The shape an ``ActionConditionedPredictor`` expects (extrinsics only where it uses them)."""
        blk = model.predictor_blocks[0]
        return cls(model.embed_dim, model.predictor_embed_dim, len(model.predictor_blocks), blk.mlp.fc1.out_features,
                   model.action_dim, model.state_dim, model.extrinsics_dim, blk.attn.qkv.bias is not None)


def predictor_state_of(obj: dict) -> StateDict:
    """The predictor state dict of an official ``app/vjepa_droid`` checkpoint (its ``predictor``
    entry) or of a bare state dict, with wrapper prefixes stripped."""
    if isinstance(obj.get("predictor"), dict):
        obj = obj["predictor"]
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != len(obj):
        others = [k for k in obj if k not in tensors][:5]
        raise CheckpointError(f"not a predictor state dict: entries {others} are not tensors (a full checkpoint "
                              "needs a 'predictor' entry)")
    return strip_prefixes(tensors, OFFICIAL_PREFIXES)


def _unknown_keys_error(unknown: list[str]) -> CheckpointError:
    hints = []
    if any(".mlp.fc3." in k for k in unknown):
        hints.append("mlp.fc3 is the SwiGLU MLP of use_silu=True predictors, which this code does not build")
    if any(k.startswith(("mask_tokens.", "predictor_pos_embed")) for k in unknown):
        hints.append("mask tokens belong to the masked V-JEPA predictor, not the action-conditioned one")
    shown = ", ".join(unknown[:8]) + (f", ... ({len(unknown) - 8} more)" if len(unknown) > 8 else "")
    return CheckpointError(f"action-conditioned predictor: {len(unknown)} unknown keys: {shown}"
                           + (f" ({'; '.join(hints)})" if hints else ""))


def _expected_keys(depth: int, qkv_bias: bool, extrinsics: bool) -> set[str]:
    tops = [t for t in _TOP if extrinsics or t != "extrinsics_encoder"]
    keys = {f"{t}.{kind}" for t in tops for kind in ("weight", "bias")}
    for i in range(depth):
        for mod in _BLOCK:
            keys.update(f"predictor_blocks.{i}.{mod}.{kind}" for kind in ("weight", "bias")
                        if qkv_bias or mod != "attn.qkv" or kind != "bias")
    return keys


def describe_ac_predictor(sd: StateDict) -> ACPredictorShape:
    """Check a predictor state dict (official or ours, any wrapper prefixes) key by key and read its
    architecture. Raises CheckpointError naming unknown / missing keys or inconsistent shapes."""
    sd = strip_prefixes(sd, OFFICIAL_PREFIXES)
    unknown = sorted(k for k in sd if not _KEY.match(k))
    if unknown:
        raise _unknown_keys_error(unknown)
    for name in ("predictor_embed.weight", "action_encoder.weight", "state_encoder.weight"):
        if name not in sd:
            raise CheckpointError(f"action-conditioned predictor: missing {name}")
    blocks = sorted({int(m.group("idx")) for k in sd if (m := _KEY.match(k)) and m.group("idx") is not None})
    if blocks != list(range(len(blocks))):
        raise CheckpointError(f"action-conditioned predictor: blocks {blocks} are not numbered 0..n-1")
    qkv_bias = "predictor_blocks.0.attn.qkv.bias" in sd
    extrinsics = "extrinsics_encoder.weight" in sd or "extrinsics_encoder.bias" in sd
    expected = _expected_keys(len(blocks), qkv_bias, extrinsics)
    missing = sorted(expected - set(sd))
    if missing:
        shown = ", ".join(missing[:8]) + (f", ... ({len(missing) - 8} more)" if len(missing) > 8 else "")
        raise CheckpointError(f"action-conditioned predictor: {len(missing)} missing keys: {shown}")
    width, enc = sd["predictor_embed.weight"].shape
    shape = ACPredictorShape(
        embed_dim=int(enc), predictor_embed_dim=int(width), depth=len(blocks),
        mlp_hidden=int(sd["predictor_blocks.0.mlp.fc1.weight"].shape[0]) if blocks else 0,
        action_dim=int(sd["action_encoder.weight"].shape[1]), state_dim=int(sd["state_encoder.weight"].shape[1]),
        extrinsics_dim=int(sd["extrinsics_encoder.weight"].shape[1]) if extrinsics else None, qkv_bias=qkv_bias)
    _check_shapes(sd, shape)
    return shape


def _check_shapes(sd: StateDict, s: ACPredictorShape) -> None:
    d, h = s.predictor_embed_dim, s.mlp_hidden
    want = {"predictor_embed": (d, s.embed_dim), "action_encoder": (d, s.action_dim),
            "state_encoder": (d, s.state_dim), "predictor_norm": (d,), "predictor_proj": (s.embed_dim, d)}
    if s.extrinsics_dim is not None:
        want["extrinsics_encoder"] = (d, s.extrinsics_dim)
    for i in range(s.depth):
        p = f"predictor_blocks.{i}."
        want.update({p + "norm1": (d,), p + "norm2": (d,), p + "attn.qkv": (3 * d, d), p + "attn.proj": (d, d),
                     p + "mlp.fc1": (h, d), p + "mlp.fc2": (d, h)})
    for name, shape in want.items():
        w, b = sd[f"{name}.weight"], sd.get(f"{name}.bias")
        if tuple(w.shape) != shape or (b is not None and tuple(b.shape) != shape[:1]):
            got = f"{tuple(w.shape)}" + (f" / bias {tuple(b.shape)}" if b is not None else "")
            raise CheckpointError(f"action-conditioned predictor: {name} has shape {got}, expected {shape} "
                                  f"for width {d}, encoder width {s.embed_dim}, MLP hidden {h}")


def check_ac_predictor_shape(found: ACPredictorShape, expected: ACPredictorShape, what: str = "predictor") -> None:
    """One-line CheckpointError naming every dimension where a checkpoint (``found``) and the model
    (``expected``) disagree, e.g. ``action_dim: checkpoint 7, model 4``."""
    names = ("embed_dim", "predictor_embed_dim", "depth", "mlp_hidden", "action_dim", "state_dim",
             "extrinsics_dim", "qkv_bias")
    diffs = [f"{n}: checkpoint {getattr(found, n)}, model {getattr(expected, n)}" for n in names
             if getattr(found, n) != getattr(expected, n)]
    if diffs:
        raise CheckpointError(f"{what}: action-conditioned predictor does not match the model: {'; '.join(diffs)}")


def ac_predictor_from_official(obj: dict, use_extrinsics: bool = False) -> StateDict:
    """Official ``VisionTransformerPredictorAC`` weights (a full ``app/vjepa_droid`` checkpoint or a
    bare state dict, any prefixes) -> our state dict. ``use_extrinsics`` is the official model's
    flag (not stored in the weights): without it the always-present ``extrinsics_encoder`` is unused
    and dropped."""
    sd = predictor_state_of(obj)
    shape = describe_ac_predictor(sd)
    if shape.extrinsics_dim is None:
        raise CheckpointError("official action-conditioned predictor lacks extrinsics_encoder.*: the official "
                              "class always has it (this looks like our layout: load it directly)")
    if shape.state_dim != shape.action_dim or shape.extrinsics_dim != shape.action_dim - 1:
        raise CheckpointError(f"not an official action-conditioned predictor: the official class has action_dim = "
                              f"state_dim = extrinsics_dim + 1, these weights have action_dim {shape.action_dim}, "
                              f"state_dim {shape.state_dim}, extrinsics_dim {shape.extrinsics_dim}")
    if not use_extrinsics:
        sd = {k: v for k, v in sd.items() if not k.startswith("extrinsics_encoder.")}
    return sd


def ac_predictor_to_official(sd: StateDict, prefix: str = "module.") -> StateDict:
    """Our action-conditioned predictor's state dict -> the official layout with ``prefix`` on every
    key (``module.``: what ``app/vjepa_droid`` saves under ``predictor``; the hub loader strips it).
    A missing ``extrinsics_encoder`` (our use_extrinsics=False) is written as zeros. Raises
    CheckpointError when the official class cannot hold the weights (state_dim != action_dim, or
    extrinsics_dim != action_dim - 1)."""
    sd = strip_prefixes(sd, OFFICIAL_PREFIXES)
    shape = describe_ac_predictor(sd)
    if shape.state_dim != shape.action_dim:
        raise CheckpointError(f"the official VisionTransformerPredictorAC encodes states with the action width: "
                              f"state_dim {shape.state_dim} != action_dim {shape.action_dim} cannot be exported")
    if shape.extrinsics_dim is not None and shape.extrinsics_dim != shape.action_dim - 1:
        raise CheckpointError(f"the official VisionTransformerPredictorAC has extrinsics_dim = action_dim - 1 = "
                              f"{shape.action_dim - 1}, these weights have {shape.extrinsics_dim}")
    out = dict(sd)
    if shape.extrinsics_dim is None:
        ref = sd["action_encoder.weight"]
        out["extrinsics_encoder.weight"] = ref.new_zeros(shape.predictor_embed_dim, shape.action_dim - 1)
        out["extrinsics_encoder.bias"] = ref.new_zeros(shape.predictor_embed_dim)
    return {prefix + k: v for k, v in out.items()}


def load_official_ac_predictor(model, obj: dict) -> None:
    """Strictly load official V-JEPA 2-AC predictor weights (file dict or state dict) into an
    ``ActionConditionedPredictor``; a dimension mismatch is a one-line CheckpointError naming it."""
    sd = ac_predictor_from_official(obj, use_extrinsics=model.use_extrinsics)
    check_ac_predictor_shape(describe_ac_predictor(sd), ACPredictorShape.of_model(model))
    model.load_state_dict(sd, strict=True)
