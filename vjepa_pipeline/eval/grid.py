"""Train a grid of probe heads (lr x weight decay) on cached features in one pass, as V-JEPA 2 does.

Every batch of features goes through every head (with the multi-view rule of
:mod:`vjepa_pipeline.eval.probes`), the per-head losses are summed and ONE backward runs; one AdamW
holds a param group per head (its lr / wd; no wd on biases, norms and other 1-D parameters).
Because the heads share no parameters, the gradient of the summed loss with respect to head i is
exactly head i's own gradient, and AdamW updates each parameter element-wise: the one-pass grid is
the same computation as training each setting alone with the same seed (same init, same batch
order), which ``tests/test_probes.py`` checks. All heads start from the same initial weights
(drawn from ``seed``), so grid entries differ only by their lr / wd.

Selection: ``cfg.selection == "holdout"`` trains on the training split minus a class-stratified,
seeded holdout (``cfg.holdout_fraction``) and picks the head with the best holdout top-1 (ties:
lower holdout cross-entropy, then grid order); ``"best_on_val"`` trains on the whole training split
and picks the best val top-1 (optimistic; what the papers report). When no holdout is possible
(every class has one sample, e.g. 1-shot) selection falls back to val and ``selection_rule`` says
so. The chosen head is the one at the end of training (no epoch picking) and is not retrained on
the holdout.

Schedule: per-step cosine decay of each head's lr to 0 after an optional linear warmup
(``cfg.warmup_epochs``; :func:`vjepa_pipeline.models.optim.warmup_cosine_factor`); constant weight
decay, none on biases and 1-D parameters (:func:`vjepa_pipeline.models.optim.param_groups`); AdamW
(betas 0.9/0.999); each head's gradient norm is clipped to ``clip_grad`` (1.0, as the official
eval) separately. The linear probe's token means are computed once up front
(:func:`prepool_for_linear`) instead of per head and epoch.

Accuracies are percentages (0-100), like the published tables. Per-class accuracy is ``None`` for
classes absent from the evaluated set; the mean class accuracy averages the present classes.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.optim import param_groups, warmup_cosine_factor
from .probes import (
    build_head,
    combine_outputs,
    knn_multiview_probs,
    make_head_config,
    multiview_forward,
    pool_features,
)
from .suite import ProbeConfig

LogFn = Callable[[dict[str, Any]], None]


@dataclass
class GridResult:
    kind: str
    chosen: dict[str, float]  # {lr, wd} (knn: {k, temperature})
    selection_rule: str  # "held-out 10% of train" | "best on val (optimistic)"
    grid: list[dict[str, Any]]  # [{lr, wd, holdout_top1, val_top1}] in grid order (lr-major)
    curves: dict[str, list]  # epoch, train_loss, holdout_top1, val_top1: [epoch][head]
    top1: float  # of the chosen head on val
    top5: float
    per_class: list[float | None]
    mean_class_acc: float
    confusion: list[list[int]]  # [true class][predicted class] counts
    val_probs: torch.Tensor  # (M_val, C) averaged multi-view probabilities of the chosen head
    head_state: dict[str, torch.Tensor] | None  # chosen head's state_dict (knn: the feature bank), on CPU
    head_config: dict[str, Any]  # build_head(head_config) rebuilds it
    chosen_index: int = 0
    head_states: list[dict[str, torch.Tensor]] | None = None  # every head, with keep_all_heads=True
    num_fit: int = 0
    num_holdout: int = 0
    train_seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-friendly view (no tensors)."""
        return {
            "kind": self.kind,
            "chosen": self.chosen,
            "selection_rule": self.selection_rule,
            "grid": self.grid,
            "top1": self.top1,
            "top5": self.top5,
            "mean_class_acc": self.mean_class_acc,
            "per_class": self.per_class,
            "confusion": self.confusion,
            "curves": self.curves,
            "num_fit": self.num_fit,
            "num_holdout": self.num_holdout,
            "train_seconds": self.train_seconds,
        }


# ----------------------------------------------------------------------------- helpers


def selection_rule_name(cfg: ProbeConfig) -> str:
    if cfg.selection == "best_on_val":
        return "best on val (optimistic)"
    return f"held-out {cfg.holdout_fraction * 100:g}% of train"


def holdout_split(labels: torch.Tensor, fraction: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-stratified, seeded split -> (fit_idx, holdout_idx), both sorted LongTensors.

    The holdout has round(fraction * M) samples (at least 1), shared out over the classes in
    proportion to their size (largest remainder, random tie-break); every class keeps at least one
    sample in the fit part, so single-sample classes are never held out."""
    labels = labels.cpu().long()
    m = len(labels)
    if m < 2:
        raise ValueError(f"need at least 2 training samples to hold some out, got {m}")
    g = torch.Generator().manual_seed(int(seed))
    classes = labels.unique()
    members = [(labels == c).nonzero().flatten() for c in classes]
    members = [idx[torch.randperm(len(idx), generator=g)] for idx in members]
    sizes = torch.tensor([len(idx) for idx in members], dtype=torch.float64)
    target = min(max(1, round(fraction * m)), int((sizes - 1).sum()))
    quota = fraction * sizes
    take = torch.minimum(quota.floor(), sizes - 1)
    # hand out the rest by largest remainder (random order among equal remainders)
    order = torch.randperm(len(members), generator=g)
    remainder = (quota - quota.floor())[order]
    order = order[torch.argsort(remainder, descending=True, stable=True)]
    while take.sum() < target:
        progressed = False
        for c in order.tolist():
            if take.sum() >= target:
                break
            if take[c] < sizes[c] - 1:
                take[c] += 1
                progressed = True
        if not progressed:
            break
    while take.sum() > target:  # only when fraction * M rounded down below the per-class floors
        c = int(torch.argmax(take))
        take[c] -= 1
    hold = [idx[: int(t)] for idx, t in zip(members, take, strict=True)]
    fit = [idx[int(t) :] for idx, t in zip(members, take, strict=True)]
    return torch.cat(fit).sort().values, torch.cat(hold).sort().values


def _selection_split(
    labels: torch.Tensor, cfg: ProbeConfig, seed: int
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(fit_idx, holdout_idx, selection_rule). A holdout is impossible when every class has a single
    sample (e.g. 1-shot): selection then falls back to val, and the rule says so."""
    everything, nothing = torch.arange(len(labels)), torch.arange(0)
    if cfg.selection != "holdout":
        return everything, nothing, selection_rule_name(cfg)
    if len(labels) < 2 or int(torch.bincount(labels).max()) < 2:
        return (
            everything,
            nothing,
            "best on val (optimistic: no holdout possible, every class has one sample)",
        )
    fit_idx, hold_idx = holdout_split(labels, cfg.holdout_fraction, seed)
    return fit_idx, hold_idx, selection_rule_name(cfg)


def classification_metrics(probs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """top1 / top5 (%), per-class accuracy (%; None if a class is absent), mean class accuracy,
    confusion matrix [true][pred] counts."""
    probs = probs.float().cpu()
    labels = labels.cpu().long()
    m = len(labels)
    pred = probs.argmax(dim=1)
    top5_idx = probs.topk(min(5, num_classes), dim=1).indices
    top1 = 100.0 * (pred == labels).double().mean().item() if m else 0.0
    top5 = 100.0 * (top5_idx == labels[:, None]).any(dim=1).double().mean().item() if m else 0.0
    confusion = torch.bincount(labels * num_classes + pred, minlength=num_classes * num_classes)
    confusion = confusion.view(num_classes, num_classes)
    support = confusion.sum(dim=1)
    per_class: list[float | None] = [
        (100.0 * confusion[c, c].item() / support[c].item()) if support[c] > 0 else None
        for c in range(num_classes)
    ]
    present = [a for a in per_class if a is not None]
    return {
        "top1": top1,
        "top5": top5,
        "per_class": per_class,
        "mean_class_acc": sum(present) / len(present) if present else 0.0,
        "confusion": confusion.tolist(),
    }


def _head_groups(head: nn.Module, lr: float, wd: float) -> list[dict[str, Any]]:
    """One head's AdamW groups (:func:`param_groups`, empty ones dropped) at its own base lr."""
    return [dict(g, lr=lr, base_lr=lr) for g in param_groups([head], wd) if g["params"]]


def _batches(m: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A seeded permutation cut into batches; a trailing batch of one sample is merged into the
    previous one (BatchNorm cannot train on a single sample)."""
    perm = torch.randperm(m, generator=generator)
    out = list(perm.split(batch_size))
    if len(out) > 1 and len(out[-1]) == 1:
        last = out.pop()  # (popped first: ``out[-2] = cat([out[-2], out.pop()])`` assigns one slot too far)
        out[-1] = torch.cat([out[-1], last])
    return out


def _take(feats: torch.Tensor, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
    return feats[idx.to(feats.device)].to(device, non_blocking=True).float()


@torch.no_grad()
def _eval_heads(
    heads: list[nn.Module],
    feats: torch.Tensor,
    labels: torch.Tensor,
    segment_mode: str,
    batch_size: int,
    device: torch.device,
) -> tuple[list[float], list[float]]:
    """Top-1 (%) and mean cross-entropy of the averaged probabilities, per head; each batch of
    features is loaded once for all heads."""
    for h in heads:
        h.eval()
    m = len(labels)
    correct = torch.zeros(len(heads), dtype=torch.float64)
    nll = torch.zeros(len(heads), dtype=torch.float64)
    for idx in torch.arange(m).split(batch_size):
        x = _take(feats, idx, device)
        y = labels[idx].to(device)
        for i, h in enumerate(heads):
            logp = combine_outputs(multiview_forward(h, x, segment_mode))
            correct[i] += (logp.argmax(dim=1) == y).sum().item()
            nll[i] += F.nll_loss(logp, y, reduction="sum").item()
    if m == 0:
        return [float("nan")] * len(heads), [float("nan")] * len(heads)
    return (100.0 * correct / m).tolist(), (nll / m).tolist()


@torch.no_grad()
def predict_probs(
    head: nn.Module,
    feats: torch.Tensor,
    segment_mode: str,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Averaged multi-view probabilities (M, C) of one head, on CPU."""
    device = torch.device(device)
    head.eval()
    out = [
        combine_outputs(multiview_forward(head, _take(feats, idx, device), segment_mode)).exp().cpu()
        for idx in torch.arange(len(feats)).split(batch_size)
    ]
    return torch.cat(out) if out else torch.empty(0, 0)


@torch.no_grad()
def prepool_for_linear(feats: torch.Tensor, segment_mode: str, batch_size: int = 256) -> torch.Tensor:
    """Mean-pool the tokens of each multi-view output once: (M, S, V, N, D) -> (M, 1, V, 1, D)
    ("attend": the mean over the S*N tokens of a view) or (M, S, V, 1, D) ("average"). A
    :class:`LinearProbe` gives the same logits on the result (it mean-pools a single token), so the
    grid does not repeat the pooling per head and per epoch. Stays on ``feats``' device, float32."""
    dims = (1, 3) if segment_mode == "attend" else (3,)
    out = [
        feats[idx.to(feats.device)].float().mean(dim=dims, keepdim=True)
        for idx in torch.arange(len(feats)).split(batch_size)
    ]
    if not out:
        return feats.float()[:, :1, :, :1] if segment_mode == "attend" else feats.float()[:, :, :, :1]
    return torch.cat(out)


def _check_inputs(feats: torch.Tensor, labels: torch.Tensor, name: str, num_classes: int) -> None:
    if feats.ndim != 5:
        raise ValueError(f"{name} features must be (M, S, V, N, D), got shape {tuple(feats.shape)}")
    if len(feats) != len(labels):
        raise ValueError(f"{name}: {len(feats)} feature rows but {len(labels)} labels")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"{name} labels must be in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]"
        )


# ----------------------------------------------------------------------------- training


def train_probe_grid(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    val_feats: torch.Tensor,
    val_labels: torch.Tensor,
    num_classes: int,
    cfg: ProbeConfig,
    seed: int = 0,
    device: str | torch.device = "cpu",
    log: LogFn | None = None,
    *,
    settings: list[tuple[float, float]] | None = None,
    keep_all_heads: bool = False,
    clip_grad: float | None = 1.0,
    eval_batch_size: int | None = None,
    val_every_epoch: bool = True,
) -> GridResult:
    """Train one head per (lr, wd) of ``cfg`` (or the explicit ``settings``) together and report the
    selected one on val.

    train_feats / val_feats: (M, S, V, N, D) features (any float dtype, any device; batches are
    moved to ``device`` and cast to float32); labels: (M,) long. ``log`` (optional) receives one
    dict per epoch: {epoch, train_loss, holdout_top1, val_top1, seconds} (lists over heads).
    ``clip_grad`` clips each head's gradient norm separately (official: 1.0)."""
    device = torch.device(device)
    train_labels = train_labels.cpu().long()
    val_labels = val_labels.cpu().long()
    _check_inputs(train_feats, train_labels, "train", num_classes)
    _check_inputs(val_feats, val_labels, "val", num_classes)
    if cfg.kind == "knn":
        return _knn_result(train_feats, train_labels, val_feats, val_labels, num_classes, cfg, seed, device)
    eval_bs = eval_batch_size or max(cfg.batch_size, 64)
    mode = cfg.segment_mode

    fit_idx, hold_idx, rule = _selection_split(train_labels, cfg, seed)
    fit_y, hold_y = train_labels[fit_idx], train_labels[hold_idx]
    if cfg.kind == "linear":  # the linear probe only sees token means: pool once, not per head and epoch
        train_feats = prepool_for_linear(train_feats, mode, eval_bs)
        val_feats = prepool_for_linear(val_feats, mode, eval_bs)

    if settings is None:
        settings = [(float(lr), float(wd)) for lr in cfg.lrs for wd in cfg.weight_decays]
    head_config = make_head_config(
        cfg.kind, train_feats.shape[-1], num_classes, cfg.num_heads, cfg.self_attn_blocks
    )
    with torch.random.fork_rng(devices=[]):  # nn.Linear's default init would advance the global RNG
        proto = build_head(head_config, generator=torch.Generator().manual_seed(int(seed)))
    heads = [proto] + [_clone(proto) for _ in settings[1:]]
    heads = [h.to(device) for h in heads]
    groups = [g for h, (lr, wd) in zip(heads, settings, strict=True) for g in _head_groups(h, lr, wd)]
    opt = torch.optim.AdamW(groups, lr=settings[0][0], fused=device.type == "cuda" or None)

    order_gen = torch.Generator().manual_seed(int(seed))
    steps_per_epoch = math.ceil(len(fit_idx) / cfg.batch_size)
    if steps_per_epoch > 1 and len(fit_idx) % cfg.batch_size == 1:
        steps_per_epoch -= 1  # see _batches
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))
    curves: dict[str, list] = {"epoch": [], "train_loss": [], "holdout_top1": [], "val_top1": []}
    step = 0
    t0 = time.perf_counter()
    hold_top1 = hold_nll = val_top1 = val_nll = None
    for epoch in range(cfg.epochs):
        te = time.perf_counter()
        for h in heads:
            h.train()
        loss_sum = torch.zeros(len(heads), dtype=torch.float64, device=device)  # no host sync per step
        seen = 0
        for idx in _batches(len(fit_idx), cfg.batch_size, order_gen):
            factor = warmup_cosine_factor(step, total_steps, warmup_steps)
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * factor
            rows = fit_idx[idx]
            x = _take(train_feats, rows, device)
            y = fit_y[idx].to(device)
            losses = []
            for h in heads:
                out = multiview_forward(h, x, mode)
                losses.append(
                    F.cross_entropy(out.reshape(-1, out.shape[-1]).float(), y.repeat_interleave(out.shape[1]))
                )
            opt.zero_grad(set_to_none=True)
            torch.stack(losses).sum().backward()
            if clip_grad is not None:
                for h in heads:
                    torch.nn.utils.clip_grad_norm_(h.parameters(), clip_grad)
            opt.step()
            loss_sum += torch.stack(losses).detach().double() * len(idx)
            seen += len(idx)
            step += 1
        last = epoch == cfg.epochs - 1
        if len(hold_idx):
            hold_top1, hold_nll = _eval_heads(
                heads, _Rows(train_feats, hold_idx), hold_y, mode, eval_bs, device
            )
        if val_every_epoch or last:
            val_top1, val_nll = _eval_heads(heads, val_feats, val_labels, mode, eval_bs, device)
        record = {
            "epoch": epoch + 1,
            "train_loss": (loss_sum / max(seen, 1)).cpu().tolist(),
            "holdout_top1": hold_top1 if len(hold_idx) else None,
            "val_top1": val_top1 if (val_every_epoch or last) else None,
            "seconds": time.perf_counter() - te,
        }
        for key in ("epoch", "train_loss", "holdout_top1", "val_top1"):
            curves[key].append(record[key])
        if log is not None:
            log(record)
    train_seconds = time.perf_counter() - t0

    sel_top1, sel_nll = (hold_top1, hold_nll) if len(hold_idx) else (val_top1, val_nll)
    best = min(range(len(heads)), key=lambda i: (-sel_top1[i], sel_nll[i], i))
    grid = [
        {"lr": lr, "wd": wd, "holdout_top1": hold_top1[i] if len(hold_idx) else None, "val_top1": val_top1[i]}
        for i, (lr, wd) in enumerate(settings)
    ]
    chosen = heads[best]
    probs = predict_probs(chosen, val_feats, mode, eval_bs, device)
    metrics = classification_metrics(probs, val_labels, num_classes)
    states = [_cpu_state(h) for h in heads] if keep_all_heads else None
    return GridResult(
        kind=cfg.kind,
        chosen={"lr": settings[best][0], "wd": settings[best][1]},
        selection_rule=rule,
        grid=grid,
        curves=curves,
        val_probs=probs,
        head_state=_cpu_state(chosen),
        head_config=head_config,
        chosen_index=best,
        head_states=states,
        num_fit=len(fit_idx),
        num_holdout=len(hold_idx),
        train_seconds=train_seconds,
        **metrics,
    )


def train_single(train_feats: torch.Tensor, train_labels: torch.Tensor, val_feats: torch.Tensor,
                 val_labels: torch.Tensor, num_classes: int, cfg: ProbeConfig, lr: float, wd: float,
                 *args: Any, **kwargs: Any) -> GridResult:
    """One head, one (lr, wd): the "one run per setting" baseline. The other arguments (seed,
    device, log, ...) are :func:`train_probe_grid`'s. Same split, init and batch order as the
    corresponding head of :func:`train_probe_grid` with the same seed."""
    one = dataclasses.replace(cfg, lrs=[lr], weight_decays=[wd])
    return train_probe_grid(train_feats, train_labels, val_feats, val_labels, num_classes, one, *args,
                            settings=[(float(lr), float(wd))], **kwargs)


def evaluate_head(
    head_state: dict[str, torch.Tensor],
    head_config: dict[str, Any],
    feats: torch.Tensor,
    labels: torch.Tensor,
    segment_mode: str,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
) -> dict[str, Any]:
    """Re-evaluate a saved head (``--val-only``): metrics of :func:`classification_metrics` plus
    ``probs`` (M, C)."""
    labels = labels.cpu().long()
    num_classes = head_config["num_classes"]
    if head_config["kind"] == "knn":
        probs = _knn_probs_batched(
            head_state["bank"],
            head_state["bank_labels"],
            feats,
            num_classes,
            segment_mode,
            head_config["k"],
            head_config["temperature"],
            batch_size,
            torch.device(device),
        )
    else:
        head = build_head(head_config)
        head.load_state_dict(head_state)
        probs = predict_probs(head.to(device), feats, segment_mode, batch_size, device)
    return dict(classification_metrics(probs, labels, num_classes), probs=probs)


# ----------------------------------------------------------------------------- k-NN


def _knn_probs_batched(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    feats: torch.Tensor,
    num_classes: int,
    segment_mode: str,
    k: int,
    temperature: float,
    batch_size: int,
    device: torch.device,
) -> torch.Tensor:
    bank = F.normalize(bank.to(device).float(), dim=-1)
    out = [
        knn_multiview_probs(
            bank, bank_labels, _take(feats, idx, device), num_classes, segment_mode, k, temperature
        ).cpu()
        for idx in torch.arange(len(feats)).split(batch_size)
    ]
    return torch.cat(out) if out else torch.empty(0, num_classes)


def _bank(feats: torch.Tensor, idx: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """One (D,) embedding per training video: the mean of all its tokens (segments, views, tokens)."""
    parts = [pool_features(_take(feats, idx[j], device)) for j in torch.arange(len(idx)).split(batch_size)]
    return torch.cat(parts) if parts else torch.empty(0, feats.shape[-1], device=device)


def _knn_result(
    train_feats, train_labels, val_feats, val_labels, num_classes, cfg, seed, device
) -> GridResult:
    """k-NN has nothing to train: the holdout top-1 (bank = the fit part) is reported for the grid
    table, and val is predicted with the whole training split as the bank."""
    t0 = time.perf_counter()
    bs = max(cfg.batch_size, 256)
    mode = cfg.segment_mode
    k, temp = int(cfg.knn_k), float(cfg.knn_temperature)
    hold_top1 = None
    fit_idx, hold_idx, rule = _selection_split(train_labels, cfg, seed)
    num_fit, num_hold = len(fit_idx), len(hold_idx)
    if num_hold:
        fit_bank = _bank(train_feats, fit_idx, bs, device)
        hold_probs = _knn_probs_batched(
            fit_bank,
            train_labels[fit_idx],
            _Rows(train_feats, hold_idx),
            num_classes,
            mode,
            k,
            temp,
            bs,
            device,
        )
        hold_top1 = classification_metrics(hold_probs, train_labels[hold_idx], num_classes)["top1"]
    bank = _bank(train_feats, torch.arange(len(train_labels)), bs, device)
    probs = _knn_probs_batched(bank, train_labels, val_feats, num_classes, mode, k, temp, bs, device)
    metrics = classification_metrics(probs, val_labels, num_classes)
    head_config = {
        "kind": "knn",
        "dim": int(train_feats.shape[-1]),
        "num_classes": int(num_classes),
        "k": k,
        "temperature": temp,
    }
    return GridResult(
        kind="knn",
        chosen={"k": k, "temperature": temp},
        selection_rule=rule,
        grid=[{"k": k, "temperature": temp, "holdout_top1": hold_top1, "val_top1": metrics["top1"]}],
        curves={"epoch": [], "train_loss": [], "holdout_top1": [], "val_top1": []},
        val_probs=probs,
        head_state={"bank": F.normalize(bank, dim=-1).cpu(), "bank_labels": train_labels.clone()},
        head_config=head_config,
        num_fit=num_fit,
        num_holdout=num_hold,
        train_seconds=time.perf_counter() - t0,
        **metrics,
    )


# ----------------------------------------------------------------------------- small utilities


class _Rows:
    """A lazy row subset of a feature tensor (avoids copying the holdout features)."""

    def __init__(self, feats: torch.Tensor, idx: torch.Tensor):
        self.feats, self.idx = feats, idx
        self.shape = (len(idx),) + tuple(feats.shape[1:])
        self.device = feats.device

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, rows: torch.Tensor) -> torch.Tensor:
        return self.feats[self.idx[rows.cpu()].to(self.device)]


def _clone(head: nn.Module) -> nn.Module:
    return copy.deepcopy(head)


def _cpu_state(head: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}
