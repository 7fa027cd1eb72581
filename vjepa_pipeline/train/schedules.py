"""Learning-rate and weight-decay schedules, computed from the config (never from Lightning's
``estimated_stepping_batches``). Pure functions of the optimizer step."""

from __future__ import annotations

import math


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


def apply_schedules(optimizer, optim_cfg, step: int, total: int) -> tuple[float, float]:
    """Set lr and weight decay on every param group (groups tagged ``wd_exclude`` keep wd 0)."""
    lr, wd = learning_rate(optim_cfg, step, total), weight_decay(optim_cfg, step, total)
    for group in optimizer.param_groups:
        group["lr"] = lr
        if not group.get("wd_exclude", False):
            group["weight_decay"] = wd
    return lr, wd
