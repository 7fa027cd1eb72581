"""A plain-PyTorch loop over the JEPA objective on generated clips.

It exercises the whole model core (config -> models -> masks -> loss -> AdamW with schedules ->
EMA) in seconds on a CPU, without Lightning, data files or a run directory. The Lightning trainer
(``vjepa pretrain``) is the production path; this is the smoke test a new user can read top to
bottom.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..data.synthetic import SyntheticClips, normalize_clips
from ..models.build import build_jepa
from ..models.collapse import collapse_stats
from ..models.jepa import ema_momentum, param_groups
from ..models.masks import MaskCollator, grid_for, specs_from_config
from .schedules import apply_schedules


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
    """Train ``cfg``'s model for ``steps`` optimizer steps (default ``cfg.train.max_steps``) on
    generated clips; returns one record per step. Deterministic for a fixed config on CPU."""
    total = steps or cfg.train.max_steps
    torch.manual_seed(cfg.train.seed)
    model = build_jepa(cfg)
    grid = grid_for(cfg.data.num_frames, cfg.data.crop_size, cfg.model.patch_size, cfg.model.tubelet_size)
    masks = MaskCollator(specs_from_config(cfg.masks), grid, seed=cfg.train.seed)
    data = SyntheticClips(cfg.data.num_frames, cfg.data.crop_size, seed=cfg.data.seed)
    optim = torch.optim.AdamW(param_groups([model.encoder, model.predictor], cfg.optim.weight_decay),
                              lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps)
    start_m, end_m = cfg.optim.ema_momentum
    records = []
    for step in range(total):
        t0 = time.perf_counter()
        lr, wd = apply_schedules(optim, cfg.optim, step, total)
        clips = normalize_clips(data.batch(step, cfg.data.batch_size))
        out = model(clips, masks.sample(cfg.data.batch_size, step))
        optim.zero_grad(set_to_none=True)
        out.loss.backward()
        params = list(model.trainable_parameters())
        clip = cfg.optim.clip_grad if cfg.optim.clip_grad is not None else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
        optim.step()
        momentum = ema_momentum(step + 1, total, start_m, end_m, cfg.optim.ema_schedule)
        model.update_target(momentum)
        stats = collapse_stats(out.targets)
        rec = StepRecord(step, float(out.loss.detach()), lr, wd, momentum, grad_norm, stats["target_std_mean"],
                         stats["pooled_rankme"], time.perf_counter() - t0)
        records.append(rec)
        if on_step is not None:
            on_step(rec)
    return records
