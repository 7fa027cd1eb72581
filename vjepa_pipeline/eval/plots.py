"""PNG plots of an evaluation report: confusion matrices, probe learning curves, encoder comparisons.

matplotlib is imported lazily, inside the plot functions, with the Agg backend; every PNG is written
atomically (temporary file in the same folder, then ``os.replace``). The ``*_png`` functions give
the report's file layout under its output folder.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..utils.atomic import atomic_path
from .results import num, present

PLOTS_DIR = "plots"
COMPARISON_PNG = "comparison.png"

MAX_TICK_LABEL_CLASSES = 40  # above this, the confusion matrix has no class-name tick labels
MAX_ANNOTATED_CLASSES = 15  # up to this, every cell shows its count


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
    names = [str(c) for c in class_names] if present(class_names) else [str(i) for i in range(n)]
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

    epochs = list(curves["epoch"]) if present(curves.get("epoch")) else []
    if not epochs:
        n = max(
            len(curves[k]) if present(curves.get(k)) else 0
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
                v for v in (num(r) for r in (c["runs"] if present(c.get("runs")) else [])) if v is not None
            ]
            mean = num(c.get("top1"))
            if mean is None and runs:
                mean = float(np.mean(runs))
            std = num(c.get("top1_std"))
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
