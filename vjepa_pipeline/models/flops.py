"""Analytic FLOP count of one V-JEPA training step (for MFU reporting).

Counts matrix multiplies (2*m*n*k), the tubelet convolution and attention (QK^T and AV), the same
operations ``torch.utils.flop_counter`` counts; norms, activations and the loss are ignored.
Backward costs 2x forward for every trained layer, except that nothing needs the gradient of the
input pixels (the patch embedding's backward is weight-grad only: 1x).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def block_forward_flops(tokens: int, dim: int, mlp_hidden: int, batch: int = 1) -> int:
    """One transformer block on ``tokens`` tokens."""
    n, d = tokens, dim
    qkv = 2 * n * d * 3 * d
    attn = 2 * (2 * n * n * d)  # scores and weighted values, summed over heads
    proj = 2 * n * d * d
    mlp = 2 * (2 * n * d * mlp_hidden)
    return batch * (qkv + attn + proj + mlp)


@dataclass(frozen=True)
class ModelDims:
    embed_dim: int
    depth: int
    mlp_hidden: int
    pred_dim: int
    pred_depth: int
    pred_mlp_hidden: int
    patch_volume: int  # in_chans * tubelet * patch * patch

    @classmethod
    def from_config(cls, model_cfg) -> "ModelDims":
        dim, depth, _, mlp = model_cfg.resolved_size()
        p = model_cfg.predictor
        return cls(dim, depth, int(dim * mlp), p.embed_dim, p.depth, int(p.embed_dim * p.mlp_ratio),
                   model_cfg.in_chans * model_cfg.tubelet_size * model_cfg.patch_size**2)


def encoder_forward_flops(d: ModelDims, tokens: int, batch: int, embed_tokens: int | None = None) -> int:
    """Encoder forward over ``tokens`` kept tokens; the patch embedding runs on ``embed_tokens``."""
    embed = 2 * (tokens if embed_tokens is None else embed_tokens) * d.patch_volume * d.embed_dim * batch
    return embed + d.depth * block_forward_flops(tokens, d.embed_dim, d.mlp_hidden, batch)


def predictor_forward_flops(d: ModelDims, n_ctx: int, n_tgt: int, batch: int) -> int:
    n = n_ctx + n_tgt
    embed = 2 * n_ctx * d.embed_dim * d.pred_dim * batch
    proj = 2 * n_tgt * d.pred_dim * d.embed_dim * batch
    return embed + proj + d.pred_depth * block_forward_flops(n, d.pred_dim, d.pred_mlp_hidden, batch)


def train_step_flops(d: ModelDims, num_tokens: int, batch: int, mask_sizes: Sequence[tuple[int, int]]) -> dict:
    """FLOPs of one optimizer step on ``batch`` clips of ``num_tokens`` tokens, with one
    (context tokens, target tokens) pair per mask configuration. Returns a breakdown and 'total'."""
    target = encoder_forward_flops(d, num_tokens, batch)
    # The context encoder embeds all patches once and shares them across mask configurations.
    embed = 2 * num_tokens * d.patch_volume * d.embed_dim * batch
    context_fwd = embed + sum(d.depth * block_forward_flops(c, d.embed_dim, d.mlp_hidden, batch)
                              for c, _ in mask_sizes)
    predictor_fwd = sum(predictor_forward_flops(d, c, t, batch) for c, t in mask_sizes)
    context_bwd = 2 * (context_fwd - embed) + embed
    predictor_bwd = 2 * predictor_fwd
    total = target + context_fwd + context_bwd + predictor_fwd + predictor_bwd
    return {"target_forward": target, "context_forward": context_fwd, "context_backward": context_bwd,
            "predictor_forward": predictor_fwd, "predictor_backward": predictor_bwd, "total": total}


def config_step_flops(cfg, batch: int | None = None, mask_sizes: Sequence[tuple[int, int]] | None = None) -> dict:
    """FLOPs per optimizer step for a root ``Config``; mask sizes default to the expected token
    counts of the configured mask generators (sampled once, deterministic)."""
    from .masks import MaskCollator, grid_for, specs_from_config

    grid = grid_for(cfg.data.num_frames, cfg.data.crop_size, cfg.model.patch_size, cfg.model.tubelet_size)
    num_tokens = grid[0] * grid[1] * grid[2]
    batch = batch or cfg.data.batch_size
    if mask_sizes is None:
        collator = MaskCollator(specs_from_config(cfg.masks), grid, seed=0)
        mask_sizes = [(c.shape[1], t.shape[1]) for c, t in collator.sample(batch, step=0)]
    out = train_step_flops(ModelDims.from_config(cfg.model), num_tokens, batch, mask_sizes)
    out["mask_sizes"] = list(mask_sizes)
    out["num_tokens"] = num_tokens
    return out
