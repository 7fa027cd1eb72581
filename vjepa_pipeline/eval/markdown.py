"""``report.md``: the human-readable summary of a results dict (percentages, the selection rule
and its optimism, the lr x wd grid, per-class accuracy, low-shot and comparison tables, links to
the PNGs of :mod:`.plots` that exist)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..utils.atomic import atomic_write_text
from .plots import comparison_png, confusion_png, curves_png
from .results import chosen_index, is_optimistic, num, present

REPORT_NAME = "report.md"
PER_CLASS_FULL_LIST = 10  # up to this many classes, the report lists every class; above, top/bottom 5
PER_CLASS_EXTREMES = 5


def _pct(x: Any, digits: int = 1) -> str:
    v = num(x)
    return "—" if v is None else f"{100.0 * v:.{digits}f}%"


def _pct_pm(mean: Any, std: Any, digits: int = 1) -> str:
    m, s = num(mean), num(std)
    if m is None:
        return "—"
    if s is None:
        return f"{100.0 * m:.{digits}f}%"
    return f"{100.0 * m:.{digits}f} ± {100.0 * s:.{digits}f}%"


def _hp(x: Any) -> str:
    """A hyperparameter value (lr, wd) compactly: 0.001, 5e-05, 0.01."""
    v = num(x)
    return "—" if v is None else f"{v:.3g}"


def _int(x: Any) -> str:
    v = num(x)
    return "—" if v is None else f"{int(v):,}"


def _cell(x: Any) -> str:
    """Text safe inside a Markdown table cell."""
    return str(x).replace("|", "\\|").replace("\n", " ")


def _table(
    header: Sequence[str], rows: Sequence[Sequence[Any]], align: Sequence[str] | None = None
) -> list[str]:
    align = align or ["---"] * len(header)
    out = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "|".join(align) + "|"]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def _params(n: Any) -> str:
    v = num(n)
    if v is None:
        return "—"
    v = int(v)
    if v >= 1e9:
        short = f"{v / 1e9:.2f}B"
    elif v >= 1e6:
        short = f"{v / 1e6:.1f}M"
    elif v >= 1e3:
        short = f"{v / 1e3:.1f}K"
    else:
        return str(v)
    return f"{short} ({v:,})"


def _selection_text(ds: Mapping[str, Any]) -> str:
    rule = str(ds.get("selection_rule") or (ds.get("protocol") or {}).get("selection") or "unspecified")
    if is_optimistic(ds):
        return f"{rule} — ⚠ optimistic (chosen on the reported split)"
    return rule


def _protocol_views(p: Mapping[str, Any]) -> str:
    return f"{p.get('num_frames', '?')} × {p.get('segments', '?')} × {p.get('views', '?')}"


def _rel_link(out_dir: Path, target: Path) -> str:
    return target.relative_to(out_dir).as_posix()


def _header(results: Mapping[str, Any]) -> list[str]:
    enc = results.get("encoder") or {}
    lines = [f"# Evaluation report: {results.get('suite', 'suite')}", ""]
    if results.get("created_by"):
        lines.append(f"Created by {results['created_by']}.")
        lines.append("")
    layers = enc.get("layers")
    layer_txt = ", ".join(str(v) for v in layers) if layers else "—"
    lines += [
        f"- **Encoder:** `{enc.get('source', '?')}` (kind: {enc.get('kind', '?')})",
        f"- **Fingerprint:** `{enc.get('fingerprint', '?')}`",
        f"- **Parameters:** {_params(enc.get('params'))}",
        f"- **Layers:** {layer_txt} (features of these blocks, concatenated)",
        "",
    ]
    return lines


def _summary_table(datasets: Mapping[str, Any]) -> list[str]:
    rows = []
    any_optimistic = False
    for name, ds in datasets.items():
        p = ds.get("protocol") or {}
        sel = ds.get("selected") or {}
        opt = is_optimistic(ds)
        any_optimistic |= opt
        mark = " †" if opt else ""
        rows.append(
            [
                name,
                p.get("probe", "?"),
                _protocol_views(p),
                _pct(ds.get("top1")) + mark,
                _pct(ds.get("top5")),
                _pct(ds.get("mean_class_acc")),
                _hp(sel.get("lr")),
                _hp(sel.get("wd")),
                _selection_text(ds),
            ]
        )
    lines = ["## Results", ""]
    lines += _table(
        [
            "dataset",
            "probe",
            "frames × segments × views",
            "top-1",
            "top-5",
            "mean class acc",
            "lr",
            "wd",
            "selection rule",
        ],
        rows,
        ["---", "---", "---", "--:", "--:", "--:", "--:", "--:", "---"],
    )
    lines.append("")
    if any_optimistic:
        lines += [
            "† **Optimistic:** the probe hyperparameters were selected on the same validation split "
            'that is reported ("best on val"); these numbers overstate held-out accuracy. '
            "Use a held-out part of train for selection to get an unbiased number.",
            "",
        ]
    return lines


def _low_shot_table(datasets: Mapping[str, Any]) -> list[str]:
    rows = []
    for name, ds in datasets.items():
        ls = ds.get("low_shot") or {}

        def _k(item):
            v = num(item[0])
            return (0, v) if v is not None else (1, str(item[0]))

        for k, entry in sorted(ls.items(), key=_k):
            entry = entry or {}
            runs = entry.get("runs") or []
            rows.append([name, k, _pct_pm(entry.get("mean"), entry.get("std")), len(runs) if runs else "—"])
    if not rows:
        return []
    return (
        ["## Low-shot", "", "Top-1, mean ± std over seeds (k labelled clips per class).", ""]
        + _table(["dataset", "k / class", "top-1", "seeds"], rows, ["---", "--:", "--:", "--:"])
        + [""]
    )


def _comparison_table(comparisons: Sequence[Mapping[str, Any]], out_dir: Path) -> list[str]:
    if not comparisons:
        return []
    first_label = str(comparisons[0].get("label", ""))
    base = {
        str(c.get("dataset", "")): num(c.get("top1"))
        for c in comparisons
        if str(c.get("label", "")) == first_label
    }
    rows = []
    for c in comparisons:
        d = str(c.get("dataset", ""))
        mean, b = num(c.get("top1")), base.get(d)
        delta = (
            "—"
            if mean is None or b is None or str(c.get("label", "")) == first_label
            else f"{100 * (mean - b):+.1f} pp"
        )
        runs = c.get("runs") or []
        rows.append(
            [
                c.get("label", "?"),
                d,
                _pct_pm(c.get("top1"), c.get("top1_std")),
                len(runs) if runs else "—",
                delta,
            ]
        )
    lines = ["## Comparisons", ""]
    lines += _table(
        ["encoder", "dataset", "top-1 (mean ± std)", "runs", f"Δ vs {first_label}"],
        rows,
        ["---", "---", "--:", "--:", "--:"],
    )
    lines.append("")
    png = comparison_png(out_dir)
    if png.exists():
        lines += [f"![comparison]({_rel_link(out_dir, png)})", ""]
    return lines


def _grid_table(ds: Mapping[str, Any]) -> list[str]:
    grid = ds.get("grid") or []
    if not grid:
        return []
    idx = chosen_index(ds)
    rows = []
    for i, g in enumerate(grid):
        rows.append(
            [
                _hp(g.get("lr")),
                _hp(g.get("wd")),
                _pct(g.get("holdout_top1")),
                _pct(g.get("val_top1")),
                "✔" if i == idx else "",
            ]
        )
    rule = ds.get("selection_rule")
    crit = (
        "val top-1 (optimistic)"
        if is_optimistic(ds)
        else f"holdout top-1, {rule}"
        if rule
        else "holdout top-1"
    )
    return (
        [f"**Hyperparameter grid** (selected by {crit}):", ""]
        + _table(
            ["lr", "wd", "holdout top-1", "val top-1", "selected"], rows, ["--:", "--:", "--:", "--:", ":-:"]
        )
        + [""]
    )


def _per_class(ds: Mapping[str, Any]) -> list[str]:
    import numpy as np

    acc = list(ds["per_class"]) if present(ds.get("per_class")) else []
    if not acc:
        return []
    names = [str(c) for c in ds["class_names"]] if present(ds.get("class_names")) else []
    names += [f"class {i}" for i in range(len(names), len(acc))]
    support: list[Any] = ["—"] * len(acc)
    conf = ds.get("confusion")
    if present(conf):
        try:
            cm = np.asarray(conf, dtype=np.float64)
            if cm.ndim == 2 and cm.shape[0] == len(acc):
                support = [int(v) for v in np.nan_to_num(cm).sum(axis=1)]
        except (TypeError, ValueError):
            pass
    entries = [(names[i], num(a), support[i]) for i, a in enumerate(acc)]
    valid = [e for e in entries if e[1] is not None]
    missing = [e[0] for e in entries if e[1] is None]
    lines = ["**Per-class accuracy:**", ""]
    header, align = ["class", "accuracy", "val clips"], ["---", "--:", "--:"]
    if len(entries) <= PER_CLASS_FULL_LIST:
        lines += _table(header, [[n, _pct(a), s] for n, a, s in entries], align)
    else:
        ranked = sorted(valid, key=lambda e: -e[1])
        vals = np.array([e[1] for e in valid]) if valid else np.array([np.nan])
        lines += [
            f"{len(entries)} classes; per-class accuracy median {_pct(np.median(vals))}, "
            f"min {_pct(vals.min())}, max {_pct(vals.max())}.",
            "",
        ]
        k = min(PER_CLASS_EXTREMES, len(ranked))
        lines += [f"Top {k}:", ""] + _table(header, [[n, _pct(a), s] for n, a, s in ranked[:k]], align) + [""]
        bottom = ranked[-k:][::-1] if len(ranked) > k else []
        if bottom:
            lines += [f"Bottom {len(bottom)}:", ""] + _table(
                header, [[n, _pct(a), s] for n, a, s in bottom], align
            )
    lines.append("")
    if missing:
        lines += [f"No validation clips for: {', '.join(missing)} (accuracy undefined).", ""]
    return lines


def _dataset_section(name: str, ds: Mapping[str, Any], out_dir: Path) -> list[str]:
    p = ds.get("protocol") or {}
    sel = ds.get("selected") or {}
    lines = [f"### {name}", ""]
    probe_bits = [f"probe **{p.get('probe', '?')}**"]
    if p.get("segment_mode"):
        probe_bits.append(f"segments {p['segment_mode']}")
    if p.get("epochs") is not None:
        probe_bits.append(f"{p['epochs']} epochs")
    if p.get("batch_size") is not None:
        probe_bits.append(f"batch {p['batch_size']}")
    lrs, wds = p.get("lrs") or [], p.get("weight_decays") or []
    if lrs or wds:
        probe_bits.append(
            f"grid lr {{{', '.join(_hp(v) for v in lrs)}}} × wd {{{', '.join(_hp(v) for v in wds)}}}"
        )
    clip = (
        f"{p.get('num_frames', '?')} frames, step {p.get('frame_step', '?')}, {p.get('crop_size', '?')} px; "
        f"test: {p.get('segments', '?')} segments × {p.get('views', '?')} views"
    )
    lines += [
        f"- **Protocol:** {', '.join(probe_bits)}",
        f"- **Clips:** {clip}",
        f"- **Data:** {_int(ds.get('num_train'))} train / {_int(ds.get('num_val'))} val clips, "
        f"{_int(ds.get('num_classes'))} classes",
    ]
    failed = num(ds.get("failed_videos"))
    if failed:
        lines.append(f"- **⚠ Failed videos:** {int(failed):,} could not be decoded and were skipped")
    opt = " † optimistic" if is_optimistic(ds) else ""
    lines += [
        f"- **Top-1:** {_pct(ds.get('top1'))}{opt} · **top-5:** {_pct(ds.get('top5'))} · "
        f"**mean class acc:** {_pct(ds.get('mean_class_acc'))}",
        f"- **Selected:** lr {_hp(sel.get('lr'))}, wd {_hp(sel.get('wd'))} — rule: {_selection_text(ds)}",
    ]
    if ds.get("probe_checkpoint"):
        lines.append(f"- **Probe checkpoint:** `{ds['probe_checkpoint']}`")
    lines.append("")
    lines += _grid_table(ds)
    lines += _per_class(ds)
    pngs = [
        ("confusion matrix (row-normalised)", confusion_png(out_dir, name)),
        ("learning curves", curves_png(out_dir, name)),
    ]
    for label, png in pngs:
        if png.exists():
            lines += [f"![{name} {label}]({_rel_link(out_dir, png)})", ""]
    return lines


def render_report(results: Mapping[str, Any], out_dir: str | os.PathLike = ".") -> str:
    """The Markdown text of the report. PNGs are linked only if they exist under ``out_dir``."""
    out_dir = Path(out_dir)
    datasets = results.get("datasets") or {}
    lines = _header(results)
    if datasets:
        lines += _summary_table(datasets)
        lines += _low_shot_table(datasets)
    else:
        lines += ["No dataset results.", ""]
    lines += _comparison_table(results.get("comparisons") or [], out_dir)
    if datasets:
        lines += ["## Datasets", ""]
        for name, ds in datasets.items():
            lines += _dataset_section(str(name), ds or {}, out_dir)
    return "\n".join(lines).rstrip() + "\n"


def write_report(out_dir: str | os.PathLike, results: Mapping[str, Any]) -> Path:
    """Write ``<out_dir>/report.md`` atomically; returns its path. Links the PNGs already present
    under ``<out_dir>/plots`` (run the plot functions first, or use :func:`.report.write_all`)."""
    path = Path(out_dir) / REPORT_NAME
    atomic_write_text(path, render_report(results, out_dir))
    return path


def head_labels(ds: Mapping[str, Any]) -> list[str] | None:
    """Legend text per grid head ("lr 0.001, wd 0.01"), for the learning-curve plot."""
    grid = ds.get("grid") or []
    return [f"lr {_hp(g.get('lr'))}, wd {_hp(g.get('wd'))}" for g in grid] or None
