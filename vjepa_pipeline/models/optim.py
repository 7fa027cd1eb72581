"""Optimizer parameter groups and learning-rate / weight-decay schedules (pure PyTorch).

Schedules are pure functions of the optimizer step computed from the config (never from
Lightning's ``estimated_stepping_batches``); pretraining, the objective loop and the probe grid
all take their groups and schedules from here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn


def param_groups(modules: Sequence[nn.Module], weight_decay: float) -> list[dict]:
    """AdamW groups as in V-JEPA: weight decay on weights with >= 2 dims, none on biases and 1-D
    parameters (norms). The no-decay group is tagged ``wd_exclude`` so decay schedules skip it."""
    decay, no_decay = [], []
    for module in modules:
        for name, p in module.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "wd_exclude": False},
        {"params": no_decay, "weight_decay": 0.0, "wd_exclude": True},
    ]


def build_adamw(modules: Sequence[nn.Module], optim_cfg) -> torch.optim.AdamW:
    """AdamW over ``modules`` with V-JEPA's groups and the ``OptimConfig``'s lr / betas / eps."""
    o = optim_cfg
    return torch.optim.AdamW(param_groups(modules, o.weight_decay), lr=o.lr, betas=tuple(o.betas), eps=o.eps)


def _frac(step: int, total: int) -> float:
    return min(max(step / max(total, 1), 0.0), 1.0)


def cosine(step: int, total: int, start: float, end: float) -> float:
    """Cosine interpolation from ``start`` (step 0) to ``end`` (step ``total``), clamped."""
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * _frac(step, total)))


def warmup_cosine_lr(step: int, total: int, warmup: int, start_lr: float, ref_lr: float, final_lr: float) -> float:
    """V-JEPA 1: linear warmup start_lr -> ref_lr, then cosine ref_lr -> final_lr."""
    if step < warmup:
        return start_lr + (ref_lr - start_lr) * step / warmup
    return cosine(step - warmup, total - warmup, ref_lr, final_lr)


def warmup_constant_cooldown_lr(step: int, total: int, warmup: int, cooldown: int, start_lr: float,
                                ref_lr: float, final_lr: float) -> float:
    """V-JEPA 2: linear warmup, constant ref_lr, then a linear cooldown to final_lr over the last
    ``cooldown`` steps."""
    if step < warmup:
        return start_lr + (ref_lr - start_lr) * step / warmup
    cool_start = total - cooldown
    if cooldown <= 0 or step < cool_start:
        return ref_lr
    return ref_lr + (final_lr - ref_lr) * _frac(step - cool_start, cooldown)


def learning_rate(optim_cfg, step: int, total: int) -> float:
    """Learning rate at ``step`` for an ``OptimConfig``."""
    o = optim_cfg
    if o.lr_schedule == "cosine":
        return warmup_cosine_lr(step, total, o.warmup_steps, o.start_lr, o.lr, o.final_lr)
    return warmup_constant_cooldown_lr(step, total, o.warmup_steps, o.cooldown_steps, o.start_lr, o.lr, o.final_lr)


def weight_decay(optim_cfg, step: int, total: int) -> float:
    """Weight decay at ``step``: cosine from weight_decay to final_weight_decay (V-JEPA 1); a
    constant when both are equal (V-JEPA 2)."""
    return cosine(step, total, optim_cfg.weight_decay, optim_cfg.final_weight_decay)


def schedule_step(optim_cfg, step: int) -> int:
    """The schedule position read for optimizer step ``step`` (0-based, counting steps already
    taken): ``step`` itself, or ``step + 1`` under ``schedule_alignment=official`` (the official
    trainers call ``scheduler.step()`` before each optimizer step, so their first step already
    uses the schedule's value at 1)."""
    return step + 1 if getattr(optim_cfg, "schedule_alignment", "pipeline") == "official" else step


def ema_schedule_step(optim_cfg, steps_done: int) -> int:
    """The momentum-schedule position for the EMA update after the ``steps_done``-th optimizer step
    (1-based): ``steps_done``, or ``steps_done - 1`` under ``schedule_alignment=official`` (the
    official momentum generator yields its value at 0 after the first step)."""
    official = getattr(optim_cfg, "schedule_alignment", "pipeline") == "official"
    return max(steps_done - 1, 0) if official else steps_done


def apply_schedules(optimizer, optim_cfg, step: int, total: int) -> tuple[float, float]:
    """Set lr and weight decay for optimizer step ``step`` (0-based) on every param group (groups
    tagged ``wd_exclude`` keep wd 0); ``optim.schedule_alignment`` picks the schedule position."""
    at = schedule_step(optim_cfg, step)
    lr, wd = learning_rate(optim_cfg, at, total), weight_decay(optim_cfg, at, total)
    for group in optimizer.param_groups:
        group["lr"] = lr
        if not group.get("wd_exclude", False):
            group["weight_decay"] = wd
    return lr, wd


def warmup_cosine_factor(step: int, total: int, warmup: int) -> float:
    """A multiplier for a base lr (the probe grid's schedule): ``(step + 1) / warmup`` over the first
    ``warmup`` steps, then a cosine from 1 to 0 over the remaining ``total - warmup`` steps."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
