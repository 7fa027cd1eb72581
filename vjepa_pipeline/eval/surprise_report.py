"""``vjepa eval surprise``: score paired videos with a JEPA's own predictor and write the report.

For every video of every pair: frames subsampled by ``frame_step``, short side resized to the
model's crop and centre-cropped, then the surprise curve of :mod:`.surprise` at each context length.
Writes under the output folder:

- ``results.json``: per context length and score (max / mean over time), ``relative_accuracy``,
  ``auroc`` and ``absolute_accuracy`` overall and per violation type with the number of pairs; the
  headline (``primary``) is the max score at the context length nearest half the window (the
  demo's and V-JEPA's training masks keep at most half the clip); the skipped inputs; every curve;
- ``report.md``: the table;
- ``plots/surprise_over_time.png``: mean surprise over time (+- one std) of possible vs impossible
  videos, one panel per violation type; ``plots/example_pairs.png``: a few pairs, frames of both
  twins side by side with their curves.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import UsageError
from ..shards.decoders import DecodeError
from ..utils.atomic import atomic_write_text, write_json
from .plots import _new_figure
from .plots import _save as save_figure
from .surprise import SCORES, SurpriseModel, default_context_frames, surprise_curve, video_scores
from .surprise_data import Pair
from .surprise_metrics import pair_metrics

#: results.json layout; 2 added the quadruplet margin (a cache of another version is rescored)
RESULTS_VERSION = 2
CURVES_PNG = Path("plots") / "surprise_over_time.png"
EXAMPLES_PNG = Path("plots") / "example_pairs.png"


def margin_text(margin: float | None) -> str:
    """A quadruplet margin (a fraction) as a signed percentage, 3 decimals; "n/a" where there is none."""
    return "n/a" if margin is None else f"{100 * margin:+.3f} %"


def prepare_frames(frames: np.ndarray, crop_size: int, frame_step: int) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> every ``frame_step``-th frame, short side resized to ``crop_size``, centre crop."""
    from ..data.augment import eval_views

    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames (T, H, W, 3), got shape {frames.shape}")
    clip = torch.from_numpy(np.ascontiguousarray(frames[::frame_step]))
    _, h, w, _ = clip.shape
    if min(h, w) == crop_size:  # already at the model's size: the centre crop alone (no resampling)
        top, left = (h - crop_size) // 2, (w - crop_size) // 2
        return clip[:, top:top + crop_size, left:left + crop_size].contiguous()
    return eval_views(clip, crop_size, 1)[0]


def primary_context(context_frames: Sequence[int], window: int) -> int:
    """Index of the context length nearest half the window (ties: the shorter)."""
    return min(range(len(context_frames)), key=lambda i: (abs(context_frames[i] - window / 2), context_frames[i]))


def score_pairs(model: SurpriseModel, pairs: Sequence[Pair], frame_step: int, stride: int = 2,
                context_frames: Sequence[int] | None = None, batch_size: int = 16, device: str = "cpu",
                progress: bool = True, window: int | None = None) -> tuple[list[dict], list[str], list[int]]:
    """(scored pairs, skipped, context lengths): each pair {"group", "violation", "quadruplet", "possible":
    {"key", "curve": [[per window] per context], "scores": {"max": [...], "mean": [...]}}, "impossible": ...}.
    A pair whose videos are too short or of different lengths after subsampling is skipped, with why.
    ``window``: frames per window (default: the model's clip length)."""
    from tqdm import tqdm

    window = window or model.num_frames
    if window % model.tubelet_size or window < 2 * model.tubelet_size:
        raise UsageError(f"window of {window} frames: needs a multiple of the {model.tubelet_size}-frame tubelet, "
                         "at least two of them")
    ctx = list(context_frames) if context_frames else default_context_frames(window, model.tubelet_size)
    bad = [c for c in ctx if not 0 < c < window or c % model.tubelet_size]
    if bad:
        raise UsageError(f"--context-frames {bad}: each must be a multiple of {model.tubelet_size} (the tubelet) "
                         f"and below the window of {window} frames")
    for net in (model.encoder, model.predictor, model.target_encoder):
        net.to(device).eval()
    scored, skipped = [], []
    tty = sys.stderr.isatty()
    for pair in tqdm(pairs, desc="surprise", unit="pair", disable=not progress, file=sys.stderr,
                     mininterval=0.2 if tty else 10.0, ascii=not tty):
        entry = {"group": pair.group, "violation": pair.violation, "quadruplet": pair.quadruplet}
        try:
            clips = [prepare_frames(v.load(), model.crop_size, frame_step) for v in (pair.possible, pair.impossible)]
            if clips[0].shape != clips[1].shape:
                raise ValueError(f"the twins differ in size: {tuple(clips[0].shape)} vs {tuple(clips[1].shape)}")
            for name, video, clip in zip(("possible", "impossible"), (pair.possible, pair.impossible), clips):
                curve = surprise_curve(model, clip, window, stride, ctx, batch_size, device)
                entry[name] = {"key": video.key, "curve": curve.tolist(), "scores": video_scores(curve)}
        except (ValueError, DecodeError, OSError) as exc:  # an unreadable / too short video: skipped and counted
            # (anything else - out of memory, a shape bug in the model - is ours and propagates)
            skipped.append(f"{pair.group}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
            continue
        scored.append(entry)
    halves = Counter(e["quadruplet"] for e in scored if e["quadruplet"])
    for entry in scored:  # a quadruplet whose other pair could not be scored: the pair stays, the quadruplet goes
        if entry["quadruplet"] and halves[entry["quadruplet"]] == 1:
            skipped.append(f"quadruplet {entry['quadruplet']}: its other pair could not be scored "
                           f"({entry['group']} is scored as a pair only)")
            entry["quadruplet"] = None
    return scored, skipped, ctx


def surprise_results(model: SurpriseModel, scored: list[dict], ctx: list[int], frame_step: int, stride: int,
                     data: str, skipped: list[str], window: int | None = None) -> dict:
    if not scored:
        first = f" (first: {skipped[0]})" if skipped else ""
        raise UsageError(f"{data}: no pair could be scored, {len(skipped)} skipped{first}")
    metrics = {str(c): {s: pair_metrics(scored, s, i) for s in SCORES} for i, c in enumerate(ctx)}
    window = window or model.num_frames
    primary = ctx[primary_context(ctx, window)]
    head = metrics[str(primary)]["max"]
    quads = metrics[str(primary)]["mean"]["quadruplets"]  # the mean over time: the visible content cancels
    return {
        "results_version": RESULTS_VERSION,
        "source": model.source, "kind": model.kind, "fingerprint": model.fingerprint, "data": str(data),
        "window": window, "frame_step": frame_step, "stride": stride, "context_frames": ctx,
        "primary": {"context_frames": primary, "score": "max"},
        "relative_accuracy": head["overall"]["relative_accuracy"], "auroc": head["overall"]["auroc"],
        "pairs": head["overall"]["pairs"],
        "per_violation": {v: {"relative_accuracy": m["relative_accuracy"], "auroc": m["auroc"], "pairs": m["pairs"]}
                          for v, m in head["per_violation"].items()},
        "quadruplets": None if quads is None else {
            "score": "mean", "context_frames": primary, **quads["overall"],
            "per_type": quads["per_type"]},
        "metrics": metrics, "skipped": skipped, "scored_pairs": scored,
    }


def report_markdown(res: dict) -> str:
    lines = [f"# Surprise (violation of expectation): {res['source']}", "",
             f"Data `{res['data']}`: {res['pairs']} pairs scored, {len(res['skipped'])} skipped. Windows of "
             f"{res['window']} frames (every {res['frame_step']}. frame) every {res['stride']} frames; headline: "
             f"max surprise over time at {res['primary']['context_frames']} context frames.", "",
             "| context frames | score | violation | pairs | relative accuracy | AUROC | absolute accuracy |",
             "|---|---|---|---|---|---|---|"]
    for c, by_score in res["metrics"].items():
        for s, m in by_score.items():
            rows = [("all", m["overall"])] + list(m["per_violation"].items())
            for v, r in rows:
                bold = "**" if (int(c) == res["primary"]["context_frames"] and s == "max" and v == "all") else ""
                lines.append(f"| {c} | {s} | {v} | {r['pairs']} | {bold}{100 * r['relative_accuracy']:.1f}%{bold} | "
                             f"{r['auroc']:.3f} | {100 * r['absolute_accuracy']:.1f}% |")
    if res.get("quadruplets"):
        lines += ["", "Matched quadruplets (two possible and two impossible movies of one scene; right when the "
                  "possible ones' summed surprise is lower; with the mean over time what is visible cancels):", "",
                  "| context frames | score | type | quadruplets | quadruplet accuracy | margin |", "|---|---|---|---|---|---|"]
        for c, by_score in res["metrics"].items():
            for s, m in by_score.items():
                q = m["quadruplets"]
                for t, r in [("all", q["overall"])] + list(q["per_type"].items()):
                    bold = "**" if (int(c) == res["quadruplets"]["context_frames"] and s == "mean" and t == "all") else ""
                    lines.append(f"| {c} | {s} | {t} | {r['quadruplets']} | {bold}{100 * r['quadruplet_accuracy']:.1f}%{bold} | "
                                 f"{margin_text(r['margin'])} |")
    lines += ["", "Chance: relative and quadruplet accuracy 50 %, AUROC 0.5."
              + (" Margin: how much more surprising the impossible movies of a quadruplet are than the possible ones, "
                 "in % of the latter (mean over quadruplets)." if res.get("quadruplets") else ""), "",
              f"![surprise over time]({CURVES_PNG.as_posix()})", "", f"![example pairs]({EXAMPLES_PNG.as_posix()})", ""]
    if res["skipped"]:
        lines += ["Skipped:", ""] + [f"- {s}" for s in res["skipped"][:50]]
    return "\n".join(lines) + "\n"


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path)


def plot_curves(res: dict, path: Path) -> Path:
    """Mean +- std surprise over windows, possible vs impossible, one panel per violation type."""
    ci = res["context_frames"].index(res["primary"]["context_frames"])
    kinds = sorted({p["violation"] for p in res["scored_pairs"]})
    fig = _new_figure((3.2 * len(kinds), 2.8))
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    for ax, kind in zip(axes, kinds):
        for name, colour in (("possible", "tab:blue"), ("impossible", "tab:red")):
            curves = [p[name]["curve"][ci] for p in res["scored_pairs"] if p["violation"] == kind]
            n = min(len(c) for c in curves)
            arr = np.array([c[:n] for c in curves])
            mean, std = arr.mean(0), arr.std(0)
            x = np.arange(n) * res["stride"]
            ax.plot(x, mean, color=colour, label=name)
            ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.2)
        ax.set_title(f"{kind} ({sum(p['violation'] == kind for p in res['scored_pairs'])} pairs)", fontsize=9)
        ax.set_xlabel("window start (frames)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("surprise (L1)")
    axes[0].legend(fontsize=8)
    return _save(fig, path)


def plot_examples(res: dict, pairs: Sequence[Pair], path: Path, crop_size: int, per_violation: int = 1,
                  frames_shown: int = 6) -> Path:
    """One row per example pair: frames of the possible twin, of the impossible twin, and both curves."""
    ci = res["context_frames"].index(res["primary"]["context_frames"])
    by_group = {p.group: p for p in pairs}
    chosen, seen = [], {}
    for entry in res["scored_pairs"]:
        if seen.get(entry["violation"], 0) < per_violation and entry["group"] in by_group:
            chosen.append(entry)
            seen[entry["violation"]] = seen.get(entry["violation"], 0) + 1
    fig = _new_figure((12, 1.9 * len(chosen)))
    axes = fig.subplots(len(chosen), 3, squeeze=False, gridspec_kw={"width_ratios": [3, 3, 1.6]})
    for row, entry in zip(axes, chosen):
        pair = by_group[entry["group"]]
        for ax, video, name in ((row[0], pair.possible, "possible"), (row[1], pair.impossible, "impossible")):
            frames = prepare_frames(video.load(), crop_size, 1).numpy()
            idx = np.linspace(0, len(frames) - 1, frames_shown).round().astype(int)
            ax.imshow(np.concatenate(list(frames[idx]), axis=1))
            ax.set_axis_off()
            ax.set_title(f"{entry['violation']}: {name} ({video.key})", fontsize=7)
        for name, colour in (("possible", "tab:blue"), ("impossible", "tab:red")):
            row[2].plot(entry[name]["curve"][ci], color=colour, label=name)
        row[2].tick_params(labelsize=6)
    axes[0][2].legend(fontsize=6)
    axes[-1][2].set_xlabel("window", fontsize=7)
    return _save(fig, path)


def run_surprise(model: SurpriseModel, pairs: Sequence[Pair], skipped: list[str], out: str | os.PathLike,
                 data: str, frame_step: int, stride: int = 2, context_frames: Sequence[int] | None = None,
                 batch_size: int = 16, device: str | None = None, plots: bool = True, progress: bool = True,
                 log=print, window: int | None = None) -> dict:
    """Score the pairs and write results.json, report.md and the plots under ``out``; returns the results."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    scored, failed, ctx = score_pairs(model, pairs, frame_step, stride, context_frames, batch_size, device, progress,
                                      window)
    res = surprise_results(model, scored, ctx, frame_step, stride, data, list(skipped) + failed, window)
    res["seconds"], res["device"] = round(time.perf_counter() - t0, 2), device
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", res, indent=1)
    if plots:
        plot_curves(res, out / CURVES_PNG)
        plot_examples(res, pairs, out / EXAMPLES_PNG, model.crop_size)
    atomic_write_text(out / "report.md", report_markdown(res))
    quads = res["quadruplets"]
    quad_text = "" if quads is None else (f"; {quads['quadruplets']} quadruplets, quadruplet accuracy "
                                          f"{100 * quads['quadruplet_accuracy']:.1f}%, margin {margin_text(quads['margin'])} "
                                          "(mean over time)")
    log(f"surprise: {res['pairs']} pairs, relative accuracy {100 * res['relative_accuracy']:.1f}%, AUROC "
        f"{res['auroc']:.3f} (max over time, {res['primary']['context_frames']} context frames){quad_text}; "
        f"report {out / 'report.md'}")
    return res


def summarize_runs(results: Sequence[dict]) -> dict:
    """Mean and std over runs (e.g. seeds) of the headline relative accuracy / AUROC, overall and per type."""
    def stats(values):
        return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "runs": list(values)}
    kinds = sorted(set().union(*(r["per_violation"] for r in results)))
    out = {"relative_accuracy": stats([r["relative_accuracy"] for r in results]),
           "auroc": stats([r["auroc"] for r in results]),
           "per_violation": {k: {"relative_accuracy": stats([r["per_violation"][k]["relative_accuracy"] for r in results]),
                                 "auroc": stats([r["per_violation"][k]["auroc"] for r in results])} for k in kinds}}
    quads = [r.get("quadruplets") for r in results]
    if all(quads):
        out["quadruplets"] = {"quadruplet_accuracy": stats([q["quadruplet_accuracy"] for q in quads]),
                              "margin": (stats([q["margin"] for q in quads])
                                         if all(q.get("margin") is not None for q in quads) else None),
                              "per_type": {t: stats([q["per_type"][t]["quadruplet_accuracy"] for q in quads])
                                           for t in sorted(set().union(*(q["per_type"] for q in quads)))
                                           if all(t in q["per_type"] for q in quads)}}
    return out


__all__ = ["RESULTS_VERSION", "margin_text", "prepare_frames", "primary_context", "run_surprise", "score_pairs", "summarize_runs"]
