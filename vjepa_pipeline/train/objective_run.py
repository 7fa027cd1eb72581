"""A plain-PyTorch loop over the configured objective on generated clips.

It exercises the whole core (config -> objective -> models -> masks -> loss -> AdamW with
schedules -> post-step update such as the EMA) in seconds on a CPU, without Lightning, data files
or a run directory. The Lightning trainer (``vjepa pretrain``) is the production path; this is
the smoke test a new user can read top to bottom.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from math import nan

import torch

from ..data.synthetic import SyntheticClips, synthetic_batch
from ..models.collapse import collapse_stats
from ..models.optim import apply_schedules, build_adamw
from ..objectives import build_objective
from .determinism import pinned


@dataclass
class StepRecord:
    step: int
    loss: float
    lr: float
    weight_decay: float
    ema_momentum: float
    grad_norm: float
    target_std: float
    pooled_rankme: float
    seconds: float


def run_objective(cfg, steps: int | None = None, on_step: Callable[[StepRecord], None] | None = None) -> list[StepRecord]:
    """Train ``cfg``'s objective for ``steps`` optimizer steps (default ``cfg.train.max_steps``) on
    generated clips; returns one record per step. Deterministic for a fixed config on CPU."""
    if cfg.objective.kind != "vjepa":
        from ..errors import ConfigError

        raise ConfigError(f"`vjepa objective` runs the V-JEPA objective on generated clips; objective.kind="
                          f"{cfg.objective.kind!r} trains with `vjepa pretrain` on its own data (world models: "
                          "configs/world_model/moving_square_cpu.yaml)")
    with pinned(cfg.train):  # train.deterministic / train.num_threads, as `vjepa pretrain`
        total = steps or cfg.train.max_steps
        objective = build_objective(cfg, total_steps=total)
        networks = list(objective.trainable_networks().values())
        data = SyntheticClips(cfg.data.num_frames, cfg.data.crop_size, seed=cfg.data.seed)
        optim = build_adamw(networks, cfg.optim)
        params = [p for net in networks for p in net.parameters()]
        clip = cfg.optim.clip_grad if cfg.optim.clip_grad is not None else float("inf")
        records = []
        for step in range(total):
            t0 = time.perf_counter()
            lr, wd = apply_schedules(optim, cfg.optim, step, total)
            out = objective.step(synthetic_batch(data, step, cfg.data.batch_size))
            optim.zero_grad(set_to_none=True)
            out.loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
            optim.step()
            extra = objective.after_optimizer_step(step + 1)
            stats = collapse_stats(out.features) if out.features is not None else {}
            rec = StepRecord(step, float(out.loss.detach()), lr, wd, extra.get("ema_momentum", nan), grad_norm,
                             stats.get("target_std_mean", nan), stats.get("pooled_rankme", nan),
                             time.perf_counter() - t0)
            records.append(rec)
            if on_step is not None:
                on_step(rec)
    return records
