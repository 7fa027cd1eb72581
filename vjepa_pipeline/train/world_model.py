"""The action-conditioned objective for training: the frozen encoder from ``world_model.encoder``
(anything the evaluation loaders read), the predictor fresh or from ``world_model.predictor_checkpoint``."""

from __future__ import annotations

import logging

from ..errors import ConfigError
from ..objectives import ActionConditionedObjective, Objective, build_objective

log = logging.getLogger(__name__)


def build_training_objective(cfg) -> Objective:
    """``cfg``'s objective, with the files it names loaded (the V-JEPA objective needs none)."""
    if cfg.objective.kind != ActionConditionedObjective.kind:
        return build_objective(cfg)
    from ..eval.encoders import load_encoder

    encoder = None
    wm = cfg.world_model
    if wm.encoder:
        loaded = load_encoder(wm.encoder, model_cfg=cfg.model)
        encoder = loaded.encoder
        check_describes(cfg, encoder, wm.encoder)
        log.info("world model: frozen %s encoder from %s (%s, %.1fM parameters)", loaded.kind, wm.encoder,
                 loaded.fingerprint, loaded.params / 1e6)
    objective = build_objective(cfg, encoder=encoder)
    if wm.predictor_checkpoint:
        from ..checkpoint.ac_checkpoint import load_ac_predictor_weights

        load_ac_predictor_weights(objective.predictor, wm.predictor_checkpoint)
        log.info("world model: predictor initialised from %s", wm.predictor_checkpoint)
    return objective


def check_describes(cfg, encoder, source: str) -> None:
    """``model.*`` must describe the frozen encoder: the run's config is what loads it back (export,
    evaluation, planning). Compared on parameter names and shapes, built on the meta device."""
    import torch

    from ..models.build import build_encoder

    with torch.device("meta"):
        described = build_encoder(cfg.model, cfg.model.tubelet_size, cfg.data.crop_size)
    # a sin-cos table's size follows the clip it was built for, not the weights: left out
    want = {k: tuple(v.shape) for k, v in described.state_dict().items() if k != "pos_embed"}
    have = {k: tuple(v.shape) for k, v in encoder.state_dict().items() if k != "pos_embed"}
    # what the weights do not show: the positions (the V-JEPA 2.1 options loaders infer from a file)
    for attr in ("patch_size", "tubelet_size", "use_rope", "rope_layout", "rope_rescale_grid"):
        if getattr(encoder, attr, None) != getattr(described, attr, None):
            have[attr], want[attr] = getattr(encoder, attr, None), getattr(described, attr, None)
    if want == have:
        return
    diff = next(k for k in sorted(want.keys() | have.keys(), key=str) if want.get(k) != have.get(k))
    dim, depth, heads = encoder.embed_dim, len(getattr(encoder, "blocks", [])), encoder.num_heads
    raise ConfigError(f"model.* does not describe the encoder in {source} ({diff}: {have.get(diff)} there, "
                      f"{want.get(diff)} from model.*): it is {dim} wide, {depth} deep, {heads} heads, patch "
                      f"{encoder.patch_size}; set model.size / embed_dim / depth / num_heads / patch_size to match")
