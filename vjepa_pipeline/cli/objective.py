"""``vjepa objective``: a few optimizer steps of the JEPA objective on generated clips."""

from __future__ import annotations

import math

from .common import DEFAULT_RECIPE, add_config_args, load


def register(sub) -> None:
    p = sub.add_parser(
        "objective", help="train the JEPA objective for a few steps on generated clips (CPU smoke run)",
        description="Build the model, masks and EMA target from a recipe and run plain-PyTorch optimizer "
                    "steps on generated moving-object clips, printing loss, schedules and collapse "
                    "statistics per step. No data files, no run directory: a check that the model core "
                    "learns on this machine.")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: train.max_steps)")
    add_config_args(p, default=DEFAULT_RECIPE)
    p.set_defaults(run=run)


def run(args) -> int:
    import torch

    from ..models.build import build_encoder, build_predictor
    from ..train.objective_run import run_objective
    from ..errors import UsageError

    if args.steps is not None and args.steps < 1:
        raise UsageError("--steps must be >= 1")
    cfg = load(args)
    if cfg.data.source != "synthetic":
        raise UsageError("objective runs on generated clips only; set data.source=synthetic "
                         "(use `vjepa pretrain` for real data)")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with torch.device("meta"):
        n_enc = sum(p.numel() for p in build_encoder(cfg.model).parameters())
        n_pred = sum(p.numel() for p in build_predictor(cfg.model).parameters())
    total = args.steps or cfg.train.max_steps
    print(f"JEPA objective '{cfg.name}': encoder {n_enc / 1e6:.2f}M params, predictor {n_pred / 1e6:.2f}M, "
          f"{cfg.data.batch_size} clips of {cfg.data.num_frames}x{cfg.data.crop_size}px per step, "
          f"{len(cfg.masks)} mask configs, {cfg.model.pos_embed} positions, {total} steps")
    print(f"{'step':>5} {'loss':>8} {'lr':>9} {'ema m':>8} {'|grad|':>8} {'tgt std':>8} {'rankme':>7} {'s/step':>7}")

    def show(r) -> None:
        print(f"{r.step:>5} {r.loss:>8.4f} {r.lr:>9.2e} {r.ema_momentum:>8.5f} {r.grad_norm:>8.3f} "
              f"{r.target_std:>8.3f} {r.pooled_rankme:>7.2f} {r.seconds:>7.3f}", flush=True)

    records = run_objective(cfg, total, on_step=show)
    losses = [r.loss for r in records]
    if not all(math.isfinite(x) for x in losses):
        print("loss became non-finite: lower optim.lr or check the recipe")
        return 1
    k = max(1, len(losses) // 4)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    change = 100 * (first - last) / first
    trend = f"{change:.1f}% lower" if change > 0 else f"{-change:.1f}% higher: not learning yet"
    print(f"loss (mean of first/last {k} steps): {first:.4f} -> {last:.4f} ({trend})")
    return 0
