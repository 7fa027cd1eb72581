"""Build the encoder / predictor (by ``model.predictor.kind``) / JEPA container from the typed config."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from .ac_predictor import ActionConditionedPredictor
from .conv_encoder import ConvEncoder
from .jepa import JEPA
from .predictor import Predictor
from .vit import VisionTransformer


def build_encoder(model_cfg, num_frames: int = 16, crop_size: int = 224) -> VisionTransformer | ConvEncoder:
    """Encoder for a ``ModelConfig`` (``encoder_kind`` vit or conv); num_frames / crop_size set the sin-cos
    reference grid (the conv encoder's input size)."""
    dim, depth, heads, mlp = model_cfg.resolved_size()
    if getattr(model_cfg, "encoder_kind", "vit") == "conv":
        return ConvEncoder(embed_dim=dim, channels=model_cfg.conv_channels, stages=model_cfg.conv_stages,
                           in_chans=model_cfg.in_chans, img_size=crop_size, tubelet_size=model_cfg.tubelet_size)
    return VisionTransformer(
        embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=mlp, patch_size=model_cfg.patch_size,
        tubelet_size=model_cfg.tubelet_size, in_chans=model_cfg.in_chans, num_frames=num_frames,
        img_size=crop_size, pos_embed=model_cfg.pos_embed, uniform_power=model_cfg.uniform_power,
        qkv_bias=model_cfg.qkv_bias, drop_path_rate=model_cfg.drop_path_rate,
        activation_checkpointing=model_cfg.activation_checkpointing,
        rope_layout=model_cfg.rope_layout, rope_rescale_grid=model_cfg.rope_rescale_grid,
        image_tokenizer=model_cfg.image_tokenizer, modality_embedding=model_cfg.modality_embedding,
        hierarchical_norms=model_cfg.hierarchical_norms,
    )


def build_masked_predictor(model_cfg, num_frames: int = 16, crop_size: int = 224) -> Predictor:
    """V-JEPA's predictor: context tokens + learned mask tokens at the target positions."""
    dim = model_cfg.resolved_size()[0]
    p = model_cfg.predictor
    return Predictor(
        embed_dim=dim, predictor_embed_dim=p.embed_dim, depth=p.depth, num_heads=p.num_heads,
        mlp_ratio=p.mlp_ratio, num_mask_tokens=p.num_mask_tokens, zero_init_mask_tokens=p.zero_init_mask_tokens,
        patch_size=model_cfg.patch_size, tubelet_size=model_cfg.tubelet_size, num_frames=num_frames,
        img_size=crop_size, pos_embed=model_cfg.pos_embed, uniform_power=model_cfg.uniform_power,
        qkv_bias=model_cfg.qkv_bias, drop_path_rate=model_cfg.drop_path_rate,
        activation_checkpointing=model_cfg.activation_checkpointing,
    )


def build_ac_predictor(cfg, embed_dim: int | None = None) -> ActionConditionedPredictor:
    """V-JEPA 2-AC's action-conditioned predictor for a root ``Config``: sizes from
    ``model.predictor``, conditioning from ``world_model``, the token grid from ``data.crop_size`` and
    ``model.patch_size``; ``embed_dim`` is the frozen encoder's width (default: ``model``'s)."""
    p, wm = cfg.model.predictor, cfg.world_model
    # the conv encoder gives one token per frame: a 1 x 1 grid
    img, patch = (1, 1) if cfg.model.encoder_kind == "conv" else (cfg.data.crop_size, cfg.model.patch_size)
    return ActionConditionedPredictor(
        embed_dim or cfg.model.resolved_size()[0], predictor_embed_dim=p.embed_dim, depth=p.depth,
        num_heads=p.num_heads, action_dim=wm.action_dim, state_dim=wm.state_dim, use_extrinsics=wm.use_extrinsics,
        extrinsics_dim=wm.extrinsics_dim,
        img_size=img, patch_size=patch, mlp_ratio=p.mlp_ratio,
        qkv_bias=cfg.model.qkv_bias, use_rope=True, drop_path_rate=cfg.model.drop_path_rate,
        activation_checkpointing=cfg.model.activation_checkpointing)


#: ``model.predictor.kind`` -> builder(model_cfg, num_frames, crop_size) of the masked-prediction
#: predictors; ``action_conditioned`` needs the whole config: :func:`build_ac_predictor`
PREDICTORS: dict[str, Callable[..., nn.Module]] = {"masked": build_masked_predictor}


def build_predictor(model_cfg, num_frames: int = 16, crop_size: int = 224) -> nn.Module:
    """The predictor named by ``model.predictor.kind``."""
    kind = model_cfg.predictor.kind
    if kind == "action_conditioned":
        raise ValueError("the action-conditioned predictor is built from the whole config: build_ac_predictor(cfg)")
    if kind not in PREDICTORS:
        raise ValueError(f"model.predictor.kind={kind!r} is not one of {sorted(PREDICTORS)}")
    return PREDICTORS[kind](model_cfg, num_frames, crop_size)


def build_jepa(cfg) -> JEPA:
    """Encoder + predictor + fp32 EMA target for a root ``Config``."""
    frames, crop = cfg.data.num_frames, cfg.data.crop_size
    return JEPA(build_encoder(cfg.model, frames, crop), build_predictor(cfg.model, frames, crop),
                mask_token_rule=cfg.model.predictor.mask_token_rule)
