"""``vjepa model-info``: parameter counts, token counts and training FLOPs of a model config.

Models are built on the meta device, so even ViT-g is instant and uses no memory.
"""

from __future__ import annotations

import copy

from .common import add_config_args, load


def register(sub) -> None:
    from ..config.sizes import VIT_SIZES

    p = sub.add_parser("model-info", help="parameter counts and FLOPs of encoder/predictor sizes",
                       description="Print parameter counts (encoder, predictor), tokens per clip and FLOPs per "
                                   "clip for one training step, for a named size or every published size. "
                                   "Clip size and masks come from the recipe (default: built-in defaults, "
                                   "16 frames x 224 px, official masks).")
    p.add_argument("--size", choices=sorted(VIT_SIZES), help="published ViT size (replaces the recipe's model size)")
    p.add_argument("--all", action="store_true", help="one row per published size")
    add_config_args(p)
    p.set_defaults(run=run)


def describe(cfg) -> dict:
    """Counts for one config (meta-device build)."""
    import torch

    from ..models.build import build_encoder, build_predictor
    from ..models.flops import config_step_flops, encoder_forward_flops, ModelDims

    with torch.device("meta"):
        enc = build_encoder(cfg.model, cfg.data.num_frames, cfg.data.crop_size)
        pred = build_predictor(cfg.model, cfg.data.num_frames, cfg.data.crop_size)
    step = config_step_flops(cfg, batch=64)
    dim, depth, heads, mlp = cfg.model.resolved_size()
    return {
        "size": cfg.model.size, "embed_dim": dim, "depth": depth, "heads": heads, "mlp_ratio": mlp,
        "encoder_params": sum(p.numel() for p in enc.parameters()),
        "predictor_params": sum(p.numel() for p in pred.parameters()),
        "tokens": step["num_tokens"],
        "forward_gflops": encoder_forward_flops(ModelDims.from_config(cfg.model), step["num_tokens"], 1) / 1e9,
        "train_gflops": step["total"] / 64 / 1e9,
    }


def with_size(cfg, size: str):
    cfg = copy.deepcopy(cfg)
    cfg.model.size = size
    cfg.model.embed_dim = cfg.model.depth = cfg.model.num_heads = cfg.model.mlp_ratio = None
    return cfg


def run(args) -> int:
    from ..config import validate_config
    from ..config.sizes import VIT_SIZES

    cfg = load(args)
    if cfg.objective.kind == "action_conditioned":
        return describe_world_model(cfg)
    configs = [with_size(cfg, s) for s in VIT_SIZES] if args.all else [with_size(cfg, args.size) if args.size else cfg]
    for c in configs:
        validate_config(c)
    rows = [describe(c) for c in configs]
    c0 = configs[0]
    print(f"clip {c0.data.num_frames}x{c0.data.crop_size}x{c0.data.crop_size}, tubelet {c0.model.tubelet_size}x"
          f"{c0.model.patch_size}x{c0.model.patch_size}, positions {c0.model.pos_embed}, "
          f"predictor {c0.model.predictor.embed_dim}x{c0.model.predictor.depth}, {len(c0.masks)} mask configs")
    print(f"{'size':<10}{'dim':>6}{'depth':>6}{'heads':>6}{'encoder':>12}{'predictor':>12}{'tokens':>8}"
          f"{'fwd GFLOP/clip':>16}{'train GFLOP/clip':>18}")
    for r in rows:
        print(f"{r['size']:<10}{r['embed_dim']:>6}{r['depth']:>6}{r['heads']:>6}{r['encoder_params'] / 1e6:>11.1f}M"
              f"{r['predictor_params'] / 1e6:>11.1f}M{r['tokens']:>8}{r['forward_gflops']:>16.1f}{r['train_gflops']:>18.1f}")
    print("train GFLOP/clip = target forward + context/predictor forward and backward, per clip of one "
          "optimizer step (expected mask sizes at batch 64).")
    return 0


def describe_world_model(cfg) -> int:
    """Parameter counts of a world-model recipe: the frozen encoder and the action-conditioned predictor."""
    import torch

    from ..config import validate_config
    from ..models.build import build_ac_predictor, build_encoder

    validate_config(cfg)
    with torch.device("meta"):
        enc = build_encoder(cfg.model, cfg.model.tubelet_size, cfg.data.crop_size)
        pred = build_ac_predictor(cfg, enc.embed_dim)
    grid = cfg.data.crop_size // cfg.model.patch_size
    wm, p = cfg.world_model, cfg.model.predictor
    print(f"world model: {cfg.data.num_frames} frames x {cfg.data.crop_size} px, {grid * grid} patch tokens + "
          f"{pred.cond_tokens} conditioning tokens per frame, actions {wm.action_dim}-D, states {wm.state_dim}-D")
    print(f"frozen encoder ({cfg.model.size}): {sum(x.numel() for x in enc.parameters()) / 1e6:.1f}M parameters")
    print(f"action-conditioned predictor ({p.embed_dim} x {p.depth}, {p.num_heads} heads): "
          f"{sum(x.numel() for x in pred.parameters()) / 1e6:.1f}M parameters (trained)")
    return 0
