"""Trained classification heads evaluated as they are: Hugging Face ``VJEPA2ForVideoClassification``
checkpoints (the ``facebook/vjepa2-*-ssv2`` style) and probe files written by ``vjepa eval``.

An HF classification checkpoint is a ``VJEPA2Model`` backbone (``vjepa2.*``) plus an attentive
pooler (``pooler.*``) and a Linear classifier (``classifier.*``). The backbone loads as any HF
encoder (:func:`~vjepa_pipeline.eval.encoders.load_encoder`; the checkpoint layer sets the head
aside); the pooler + classifier map onto our :class:`~vjepa_pipeline.eval.probes.AttentiveProbe`
(``final_norm=False``; ``checkpoint.layouts.hf_classifier_to_probe`` names the keys). The logits
then equal the HF model's. Where the head cannot be reproduced exactly (LayerNorm eps other than
our probe's 1e-6, an activation other than exact GELU, keys without a counterpart, no config.json
to give the number of heads) it is refused with a one-line reason; the backbone still loads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from ..checkpoint.interop import load_state_strict, read_checkpoint
from ..checkpoint.layouts import hf_classifier_to_probe, split_hf_classifier
from ..errors import CheckpointError
from .encoders import LoadedEncoder, load_encoder
from .probes import build_head, make_head_config

PROBE_NORM_EPS = 1e-6  # the LayerNorm eps of our attentive probe
PROBE_ACT = "gelu"  # exact (erf) GELU, as nn.GELU()


@dataclass
class GivenHead:
    """A trained head to evaluate without training (``vjepa eval --head``)."""

    head_state: dict[str, torch.Tensor]
    head_config: dict  # as make_head_config; build_head rebuilds the module
    source: str
    kind: str  # "hf" (a VJEPA2ForVideoClassification head) | "probe" (a vjepa eval probe file)
    class_names: list[str] = field(default_factory=list)  # HF id2label; [] when unknown

    def build(self) -> nn.Module:
        head = build_head(self.head_config)
        head.load_state_dict(self.head_state)
        return head.eval()


def _config_beside(path: Path) -> dict | None:
    cfg = (path if path.is_dir() else path.parent) / "config.json"
    return json.loads(cfg.read_text()) if cfg.exists() else None


def _class_names(config: dict, num_classes: int) -> list[str]:
    id2label = {str(k): v for k, v in (config.get("id2label") or {}).items()}
    names = [id2label.get(str(i)) for i in range(num_classes)]
    return [str(n) for n in names] if all(n is not None for n in names) else []


def hf_classifier_head(source: str | Path | dict, config: dict | None = None) -> GivenHead:
    """The pooler + classifier of an HF ``VJEPA2ForVideoClassification`` checkpoint as our attentive
    probe. ``source``: its directory (config.json + model.safetensors / pytorch_model.bin), a
    weights file (config.json read beside it) or a state dict (then pass ``config``, the
    config.json contents). Raises CheckpointError (one line) when the head cannot be mapped exactly."""
    if isinstance(source, dict):
        name, sd = "state dict", source
    else:
        name, sd = str(source), read_checkpoint(source)
        config = config if config is not None else _config_beside(Path(source))
    _, head = split_hf_classifier({k: v for k, v in sd.items() if isinstance(v, torch.Tensor)})
    if not head:
        raise CheckpointError(f"{name}: not a VJEPA2ForVideoClassification checkpoint "
                              "(no pooler.query_tokens and classifier.weight)")
    refused = f"{name}: classification head refused:"
    if config is None:
        raise CheckpointError(f"{refused} no config.json beside the weights, and the pooler's number of attention "
                              "heads is not stored in them")
    eps = float(config.get("layer_norm_eps", 1e-6))
    if eps != PROBE_NORM_EPS:
        raise CheckpointError(f"{refused} its LayerNorms use eps {eps:g}, our attentive probe's use {PROBE_NORM_EPS:g}")
    act = config.get("hidden_act", "gelu")
    if act != PROBE_ACT:
        raise CheckpointError(f"{refused} its MLPs use {act!r}, our attentive probe's use exact GELU ('gelu')")
    try:
        state, facts = hf_classifier_to_probe(head)
    except ValueError as exc:
        raise CheckpointError(f"{refused} {exc}") from None
    heads = config.get("num_attention_heads")
    if not isinstance(heads, int) or heads < 1 or facts["dim"] % heads:
        raise CheckpointError(f"{refused} config num_attention_heads={heads!r} does not divide the width {facts['dim']}")
    head_config = make_head_config("attentive_v2" if facts["self_attn_blocks"] else "attentive", facts["dim"],
                                   facts["num_classes"], num_heads=heads, self_attn_blocks=facts["self_attn_blocks"],
                                   mlp_ratio=facts["mlp_ratio"], final_norm=False)
    module = build_head(head_config)
    try:
        load_state_strict(module, state, what="head")
    except CheckpointError as exc:
        raise CheckpointError(f"{refused} " + "; ".join(line.strip() for line in str(exc).splitlines())) from None
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    return GivenHead(state, head_config, name, "hf", _class_names(config, facts["num_classes"]))


def load_head(source: str | Path) -> GivenHead:
    """A trained head from a probe file of ``vjepa eval`` (``probes/<dataset>.pt``) or an HF
    ``VJEPA2ForVideoClassification`` directory / weights file."""
    path = Path(source)
    if not path.exists():
        raise CheckpointError(f"head source {path} does not exist")
    if path.is_file() and path.suffix not in (".safetensors", ".bin"):
        obj = read_checkpoint(path)
        if isinstance(obj.get("head_state"), dict) and isinstance(obj.get("head_config"), dict):
            return GivenHead(obj["head_state"], obj["head_config"], str(path), "probe")
    return hf_classifier_head(path)


@dataclass
class HFClassifier:
    """An HF classification checkpoint in our modules: the frozen backbone and, when it maps
    exactly, the head (else ``head`` is None and ``head_refused`` says why, in one line)."""

    encoder: LoadedEncoder
    head: nn.Module | None
    given: GivenHead | None
    head_refused: str | None = None

    @torch.no_grad()
    def logits(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) normalised clips -> (B, num_classes), as the HF model's ``logits``."""
        if self.head is None:
            raise CheckpointError(self.head_refused or "no classification head")
        return self.head(self.encoder.encoder(clips))


def load_hf_classifier(directory: str | Path) -> HFClassifier:
    """Backbone + head of an HF ``VJEPA2ForVideoClassification`` directory (``save_pretrained``)."""
    encoder = load_encoder(directory)
    try:
        given = hf_classifier_head(directory)
    except CheckpointError as exc:
        return HFClassifier(encoder, None, None, str(exc))
    return HFClassifier(encoder, given.build(), given)
