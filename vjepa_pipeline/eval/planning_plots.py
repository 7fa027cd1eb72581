"""Pictures of a planning benchmark (``vjepa plan``'s report folder): executed paths over the map and
energy landscapes. Inputs are plain arrays (episode states, :class:`~vjepa_pipeline.planning.landscape.
Landscape`-like objects), so nothing here depends on the planner.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .plots import _new_figure, _save

METHOD_COLOURS = {"world_model": "#1f77b4", "world_model_random_encoder": "#9467bd", "random": "#7f7f7f",
                  "greedy": "#ff7f0e"}


def plot_paths(path: str | os.PathLike, background: np.ndarray, episodes: dict[str, Sequence[dict]],
               max_panels: int = 8, title: str = "") -> Path:
    """One panel per start / goal pair (up to ``max_panels``): the map ``background`` (H, W, 3) uint8
    (world [0, 1]^2 -> pixels), the start (circle), the goal (star) and each method's executed path.
    ``episodes[method]`` lists dicts with ``states`` ((T+1, >=2) positions in [0, 1]), ``goal`` (x, y)
    and ``success``; the i-th entries of every method share a pair."""
    n = min(max_panels, max((len(v) for v in episodes.values()), default=0))
    if n == 0:
        raise ValueError("plot_paths: no episodes to draw")
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig = _new_figure((3.0 * cols, 3.1 * rows + 0.4))
    h, w = background.shape[:2]
    for k in range(n):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.imshow(background, extent=(0, 1, 1, 0), alpha=0.55)
        first = next(v[k] for v in episodes.values() if k < len(v))
        s0 = np.asarray(first["states"])[0]
        ax.plot(s0[0], s0[1], "o", ms=8, mfc="white", mec="black", label="start")
        gx, gy = first["goal"]
        ax.plot(gx, gy, "*", ms=14, mfc="gold", mec="black", label="goal")
        for method, eps in episodes.items():
            if k >= len(eps):
                continue
            st = np.asarray(eps[k]["states"])
            mark = "" if eps[k]["success"] else " (missed)"
            ax.plot(st[:, 0], st[:, 1], "-", lw=1.6, color=METHOD_COLOURS.get(method),
                    label=f"{method}{mark}")
        ax.set_xlim(0, 1)
        ax.set_ylim(1, 0)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"pair {k}", fontsize=9)
        if k == 0:
            ax.legend(fontsize=6, loc="lower left")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_landscapes(path: str | os.PathLike, landscapes: Sequence, titles: Sequence[str],
                    background: np.ndarray | None = None) -> Path:
    """Energy heat maps side by side (one per landscape; lower = darker; drawn relative to the landscape's
    minimum, which the colour bar names, so small differences stay readable), with their marks. A landscape
    over positions ([0, 1]^2 axes) gets ``background`` drawn under it when given."""
    if not landscapes or len(titles) != len(landscapes):
        raise ValueError("plot_landscapes: one title per landscape, at least one landscape")
    import textwrap

    fig = _new_figure((4.6 * len(landscapes), 4.2))
    for k, (land, title) in enumerate(zip(landscapes, titles)):
        ax = fig.add_subplot(1, len(landscapes), k + 1)
        low = float(np.nanmin(land.energy))
        extent = (float(land.xs[0]), float(land.xs[-1]), float(land.ys[-1]), float(land.ys[0]))
        if background is not None and land.x_label == "x":
            ax.imshow(background, extent=(0, 1, 1, 0), alpha=0.35)
        im = ax.imshow(land.energy - low, extent=extent, cmap="viridis", alpha=0.8 if background is not None else 1.0,
                       interpolation="nearest", aspect="auto")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, format="%.2g", label=f"energy - {low:.4g}")
        for name, (x, y) in land.marks.items():
            ax.plot(x, y, "*" if name == "goal" else "o", ms=10, mfc="white", mec="black")
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=7, color="white")
        ax.set_xlabel(land.x_label)
        ax.set_ylabel(land.y_label)
        ax.set_title("\n".join(textwrap.wrap(title, 48)) + f"\ncontrast {land.contrast():.2f}", fontsize=8)
    return _save(fig, path)
