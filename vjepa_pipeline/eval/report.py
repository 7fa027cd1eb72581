"""Evaluation report: ``results.json``, ``report.md`` and PNG plots from a suite's results dict.

Layout written by :func:`write_all` under ``out_dir``::

    results.json                      the results dict (sorted keys, NaN/inf -> null)
    report.md                         human-readable summary (links to the PNGs below)
    plots/confusion_<dataset>.png     row-normalised confusion matrix
    plots/curves_<dataset>.png        probe learning curves (chosen head bold)
    plots/comparison.png              encoders side by side (only when ``comparisons`` is present)

Accuracies in the results dict are fractions in [0, 1]; the report shows them as percentages.
Every file is written atomically (temporary file in the same folder, then ``os.replace``), so a
reader never sees a half-written report or image. matplotlib is imported lazily, inside the plot
functions, with the Agg backend.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..utils.atomic import atomic_path, atomic_write_text

RESULTS_NAME = "results.json"
REPORT_NAME = "report.md"
PLOTS_DIR = "plots"
COMPARISON_PNG = "comparison.png"

MAX_TICK_LABEL_CLASSES = 40  # above this, the confusion matrix has no class-name tick labels
MAX_ANNOTATED_CLASSES = 15  # up to this, every cell shows its count
PER_CLASS_FULL_LIST = 10  # up to this many classes, the report lists every class; above, top/bottom 5
PER_CLASS_EXTREMES = 5


# --------------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------------


def _slug(name: str) -> str:
    """A file-name-safe version of a dataset name (kept readable)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")
    return s or "dataset"


def confusion_png(out_dir: str | os.PathLike, dataset: str) -> Path:
    return Path(out_dir) / PLOTS_DIR / f"confusion_{_slug(dataset)}.png"


def curves_png(out_dir: str | os.PathLike, dataset: str) -> Path:
    return Path(out_dir) / PLOTS_DIR / f"curves_{_slug(dataset)}.png"


def comparison_png(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / PLOTS_DIR / COMPARISON_PNG


def _num(x: Any) -> float | None:
    """A finite float, or None for missing / NaN / inf / non-numbers."""
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _pct(x: Any, digits: int = 1) -> str:
    v = _num(x)
    return "—" if v is None else f"{100.0 * v:.{digits}f}%"


def _pct_pm(mean: Any, std: Any, digits: int = 1) -> str:
    m, s = _num(mean), _num(std)
    if m is None:
        return "—"
    if s is None:
        return f"{100.0 * m:.{digits}f}%"
    return f"{100.0 * m:.{digits}f} ± {100.0 * s:.{digits}f}%"


def _hp(x: Any) -> str:
    """A hyperparameter value (lr, wd) compactly: 0.001, 5e-05, 0.01."""
    v = _num(x)
    return "—" if v is None else f"{v:.3g}"


def _int(x: Any) -> str:
    v = _num(x)
    return "—" if v is None else f"{int(v):,}"


def _present(x: Any) -> bool:
    """Not None and not empty (works for lists and numpy arrays alike)."""
    if x is None:
        return False
    try:
        return len(x) > 0
    except TypeError:
        return True


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
    v = _num(n)
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


def is_optimistic(ds: Mapping[str, Any]) -> bool:
    """True when the reported head was picked on the split it is reported on ("best on val")."""
    protocol = ds.get("protocol") or {}
    if str(protocol.get("selection", "")).lower() == "best_on_val":
        return True
    rule = re.sub(r"[\s_-]+", " ", str(ds.get("selection_rule", "")).lower())
    return "best on val" in rule or ("val" in rule and "best" in rule and "held" not in rule)


def _selection_text(ds: Mapping[str, Any]) -> str:
    rule = str(ds.get("selection_rule") or (ds.get("protocol") or {}).get("selection") or "unspecified")
    if is_optimistic(ds):
        return f"{rule} — ⚠ optimistic (chosen on the reported split)"
    return rule


def chosen_index(ds: Mapping[str, Any]) -> int | None:
    """Index of the selected head in ``grid`` (and in the per-head curves), or None if unknown."""
    sel = ds.get("selected") or {}
    if isinstance(sel.get("index"), int):
        return sel["index"]
    lr, wd = _num(sel.get("lr")), _num(sel.get("wd"))
    if lr is None or wd is None:
        return None
    for i, g in enumerate(ds.get("grid") or []):
        glr, gwd = _num(g.get("lr")), _num(g.get("wd"))
        if (
            glr is not None
            and gwd is not None
            and math.isclose(glr, lr, rel_tol=1e-6)
            and math.isclose(gwd, wd, rel_tol=1e-6, abs_tol=1e-12)
        ):
            return i
    return None


def _jsonable(x: Any) -> Any:
    """Plain JSON types: NaN/inf -> None, numpy scalars/arrays -> Python, tuples -> lists, keys -> str."""
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, int):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    tolist = getattr(x, "tolist", None)  # numpy arrays/scalars, torch tensors
    if callable(tolist):
        return _jsonable(tolist())
    if isinstance(x, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in x]
    item = getattr(x, "item", None)
    if callable(item):
        return _jsonable(item())
    try:
        return _jsonable(float(x))
    except (TypeError, ValueError):
        return str(x)


# --------------------------------------------------------------------------------------------------
# results.json
# --------------------------------------------------------------------------------------------------


def write_results(out_dir: str | os.PathLike, results: Mapping[str, Any]) -> Path:
    """Write ``<out_dir>/results.json`` atomically: sorted keys, plain floats, NaN/inf as null."""
    path = Path(out_dir) / RESULTS_NAME
    text = json.dumps(_jsonable(results), sort_keys=True, indent=2, allow_nan=False, ensure_ascii=False)
    atomic_write_text(path, text + "\n")
    return path


# --------------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------------


def _new_figure(figsize: tuple[float, float]):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # no pyplot figure registry: nothing leaks on error

    return Figure(figsize=figsize, dpi=100)


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=fig.dpi, bbox_inches="tight")
    return path


def plot_confusion(
    path: str | os.PathLike,
    confusion: Sequence[Sequence[float]],
    class_names: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Row-normalised confusion matrix (rows = true class, cols = predicted) as a PNG.

    Class names label both axes (x rotated) up to 40 classes; counts are printed in the cells up to
    15 classes. The title shows top-1 computed from the counts (prefixed by ``title`` if given).
    Rows without samples stay blank (0)."""
    import numpy as np

    cm = np.asarray(confusion, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        raise ValueError(f"confusion must be a non-empty square matrix, got shape {cm.shape}")
    n = cm.shape[0]
    names = [str(c) for c in class_names] if _present(class_names) else [str(i) for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} class names for a {n}x{n} confusion matrix")
    cm = np.nan_to_num(cm, nan=0.0, posinf=0.0, neginf=0.0)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    total = cm.sum()
    top1 = float(np.trace(cm) / total) if total > 0 else float("nan")

    side = float(np.clip(3.0 + 0.32 * n, 5.0, 16.0))
    fig = _new_figure((side + 1.2, side))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="equal")
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("fraction of true class")

    if n <= MAX_TICK_LABEL_CLASSES:
        fs = 9 if n <= 15 else 7 if n <= 25 else 6
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        ax.set_xticklabels(
            names,
            rotation=45 if n <= 15 else 90,
            ha="right" if n <= 15 else "center",
            rotation_mode="anchor" if n <= 15 else "default",
            fontsize=fs,
        )
        ax.set_yticklabels(names, fontsize=fs)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"predicted class ({n} classes, labels omitted)")
        ax.set_ylabel(f"true class ({n} classes, labels omitted)")
    if n <= MAX_TICK_LABEL_CLASSES:
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")

    if n <= MAX_ANNOTATED_CLASSES:
        fs = 9 if n <= 8 else 7
        for i in range(n):
            for j in range(n):
                count = cm[i, j]
                txt = f"{int(count)}" if float(count).is_integer() else f"{count:.1f}"
                ax.text(
                    j,
                    i,
                    txt,
                    ha="center",
                    va="center",
                    fontsize=fs,
                    color="white" if norm[i, j] > 0.5 else "black",
                )

    top1_txt = "n/a" if not math.isfinite(top1) else f"{100 * top1:.1f}%"
    head = f"{title} — " if title else ""
    ax.set_title(f"{head}top-1 {top1_txt} ({int(total):,} clips, row-normalised)")
    return _save(fig, path)


def _per_epoch_heads(values: Any, epochs: int):
    """``[[per head] per epoch]`` (or one value per epoch) as an (epochs, heads) float array."""
    import numpy as np

    if values is None:
        return None
    try:
        a = np.array(
            [
                [np.nan if v is None else v for v in (row if isinstance(row, (list, tuple)) else [row])]
                for row in values
            ],
            dtype=np.float64,
        )
    except (TypeError, ValueError):
        return None
    if a.size == 0 or a.shape[0] != epochs:
        return None
    return a


def plot_learning_curve(
    path: str | os.PathLike,
    curves: Mapping[str, Any],
    chosen_index: int | None,
    head_labels: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Probe learning curves: train loss on the left axis, holdout/val top-1 (%) on the right, per
    epoch. Each series holds one value per head (the lr x wd grid trained in one pass); the chosen
    head is drawn bold, the others faint. ``chosen_index`` None draws every head alike.
    ``head_labels`` (e.g. "lr 0.001, wd 0.01" per head) names the chosen head in the legend."""
    import numpy as np

    fig = _new_figure((8.0, 4.8))  # also selects the Agg backend before any other matplotlib import
    from matplotlib.lines import Line2D

    epochs = list(curves["epoch"]) if _present(curves.get("epoch")) else []
    if not epochs:
        n = max(
            len(curves[k]) if _present(curves.get(k)) else 0
            for k in ("train_loss", "holdout_top1", "val_top1")
        )
        epochs = list(range(1, n + 1))
    x = np.asarray(epochs, dtype=np.float64)
    series = {
        k: _per_epoch_heads(curves.get(k), len(epochs)) for k in ("train_loss", "holdout_top1", "val_top1")
    }

    ax_loss = fig.add_subplot(1, 1, 1)
    ax_acc = ax_loss.twinx()
    style = {
        "train_loss": (ax_loss, "tab:red", "-", "train loss", 1.0),
        "holdout_top1": (ax_acc, "tab:blue", "--", "holdout top-1", 100.0),
        "val_top1": (ax_acc, "tab:green", "-", "val top-1", 100.0),
    }
    handles = []
    n_heads = 0
    for key, (ax, color, ls, label, scale) in style.items():
        a = series[key]
        if a is None:
            continue
        heads = a.shape[1]
        chosen = chosen_index if chosen_index is not None and 0 <= chosen_index < heads else None
        for h in range(heads):
            if chosen is None:
                kw = {"linewidth": 1.4, "alpha": 0.9}
            elif h == chosen:
                kw = {"linewidth": 2.8, "alpha": 1.0, "zorder": 3, "marker": "o" if len(x) <= 30 else None}
            else:
                kw = {"linewidth": 0.8, "alpha": 0.25, "zorder": 1}
            ax.plot(x, a[:, h] * scale, color=color, linestyle=ls, markersize=3, **kw)
        handles.append(Line2D([], [], color=color, linestyle=ls, linewidth=2.4, label=label))
        n_heads = max(n_heads, heads)
    if chosen_index is not None and 0 <= chosen_index < n_heads and n_heads > 1:
        hl = f" ({head_labels[chosen_index]})" if head_labels and chosen_index < len(head_labels) else ""
        handles.append(Line2D([], [], color="black", linewidth=2.8, label=f"bold: chosen head{hl}"))
        handles.append(
            Line2D([], [], color="grey", linewidth=0.8, alpha=0.4, label=f"faint: other {n_heads - 1} heads")
        )

    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("train loss", color="tab:red")
    ax_acc.set_ylabel("top-1 (%)")
    ax_loss.tick_params(axis="y", colors="tab:red")
    ax_loss.grid(True, alpha=0.3)
    if series["holdout_top1"] is not None or series["val_top1"] is not None:
        ax_acc.set_ylim(bottom=0)
    if handles:
        ax_loss.legend(
            handles=handles,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.13),
            ncol=min(3, len(handles)),
            fontsize=8,
            frameon=False,
        )
    ax_loss.set_title(title or "probe learning curves")
    return _save(fig, path)


def plot_comparison(
    path: str | os.PathLike, comparisons: Sequence[Mapping[str, Any]], title: str | None = None
) -> Path:
    """Grouped bar chart: one group per dataset, one bar per label (encoder), height = mean top-1,
    error bar = std over runs (``top1_std``, or computed from ``runs`` when missing); the
    individual runs are drawn as dots on their bar."""
    import numpy as np

    if not comparisons:
        raise ValueError("no comparisons to plot")
    datasets: list[str] = []
    labels: list[str] = []
    for c in comparisons:
        d, lab = str(c.get("dataset", "")), str(c.get("label", ""))
        if d not in datasets:
            datasets.append(d)
        if lab not in labels:
            labels.append(lab)
    cells = {(str(c.get("dataset", "")), str(c.get("label", ""))): c for c in comparisons}

    fig = _new_figure((max(6.0, 1.6 + 1.2 * len(datasets) * max(1, len(labels)) * 0.6), 4.8))
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(labels))
    colors = [f"C{i % 10}" for i in range(len(labels))]
    for li, lab in enumerate(labels):
        xs, means, stds = [], [], []
        for di, d in enumerate(datasets):
            c = cells.get((d, lab))
            if c is None:
                continue
            runs = [
                v for v in (_num(r) for r in (c["runs"] if _present(c.get("runs")) else [])) if v is not None
            ]
            mean = _num(c.get("top1"))
            if mean is None and runs:
                mean = float(np.mean(runs))
            std = _num(c.get("top1_std"))
            if std is None and len(runs) > 1:
                std = float(np.std(runs))
            if mean is None:
                continue
            x = di - 0.4 + width * (li + 0.5)
            xs.append(x)
            means.append(100 * mean)
            stds.append(100 * (std or 0.0))
            if runs:
                jitter = np.linspace(-width * 0.2, width * 0.2, len(runs)) if len(runs) > 1 else [0.0]
                ax.scatter(
                    x + np.asarray(jitter), 100 * np.asarray(runs), s=10, color="black", zorder=4, alpha=0.7
                )
        if xs:
            bars = ax.bar(
                xs,
                means,
                width=width * 0.92,
                yerr=stds,
                capsize=4,
                color=colors[li],
                label=lab,
                error_kw={"elinewidth": 1.2, "ecolor": "black"},
                zorder=2,
            )
            for b, m, sd in zip(bars, means, stds, strict=True):
                ax.text(
                    b.get_x() + b.get_width() / 2,
                    min(m + sd + 1.5, 97.0),
                    f"{m:.1f}",
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    zorder=5,
                )
    ax.set_xticks(range(len(datasets)))
    ax.set_xticklabels(datasets)
    ax.set_ylabel("top-1 (%)  (mean ± std over runs)")
    ax.set_ylim(0, 100)
    ax.grid(True, axis="y", alpha=0.3, zorder=0)
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(title or "encoder comparison")
    return _save(fig, path)


# --------------------------------------------------------------------------------------------------
# report.md
# --------------------------------------------------------------------------------------------------


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
            v = _num(item[0])
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
        str(c.get("dataset", "")): _num(c.get("top1"))
        for c in comparisons
        if str(c.get("label", "")) == first_label
    }
    rows = []
    for c in comparisons:
        d = str(c.get("dataset", ""))
        mean, b = _num(c.get("top1")), base.get(d)
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

    acc = list(ds["per_class"]) if _present(ds.get("per_class")) else []
    if not acc:
        return []
    names = [str(c) for c in ds["class_names"]] if _present(ds.get("class_names")) else []
    names += [f"class {i}" for i in range(len(names), len(acc))]
    support: list[Any] = ["—"] * len(acc)
    conf = ds.get("confusion")
    if _present(conf):
        try:
            cm = np.asarray(conf, dtype=np.float64)
            if cm.ndim == 2 and cm.shape[0] == len(acc):
                support = [int(v) for v in np.nan_to_num(cm).sum(axis=1)]
        except (TypeError, ValueError):
            pass
    entries = [(names[i], _num(a), support[i]) for i, a in enumerate(acc)]
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
    failed = _num(ds.get("failed_videos"))
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
    under ``<out_dir>/plots`` (run the plot functions first, or use :func:`write_all`)."""
    path = Path(out_dir) / REPORT_NAME
    atomic_write_text(path, render_report(results, out_dir))
    return path


# --------------------------------------------------------------------------------------------------
# everything
# --------------------------------------------------------------------------------------------------


def _head_labels(ds: Mapping[str, Any]) -> list[str] | None:
    grid = ds.get("grid") or []
    return [f"lr {_hp(g.get('lr'))}, wd {_hp(g.get('wd'))}" for g in grid] or None


def write_all(out_dir: str | os.PathLike, results: Mapping[str, Any]) -> list[Path]:
    """results.json, the plots (confusion + curves per dataset where present, comparison where
    present), then report.md linking them. Returns the written paths in that order."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [write_results(out_dir, results)]
    for name, ds in (results.get("datasets") or {}).items():
        ds = ds or {}
        if _present(ds.get("confusion")):
            written.append(
                plot_confusion(
                    confusion_png(out_dir, name), ds["confusion"], ds.get("class_names"), title=str(name)
                )
            )
        curves = ds.get("curves") or {}
        if any(_present(curves.get(k)) for k in ("train_loss", "holdout_top1", "val_top1")):
            written.append(
                plot_learning_curve(
                    curves_png(out_dir, name),
                    curves,
                    chosen_index(ds),
                    head_labels=_head_labels(ds),
                    title=f"{name}: probe learning curves",
                )
            )
    if results.get("comparisons"):
        written.append(plot_comparison(comparison_png(out_dir), results["comparisons"]))
    written.append(write_report(out_dir, results))
    return written
