"""Energy landscapes: what the planner "sees" from one state (pure PyTorch / numpy).

A latent planner can only find a goal that its energy points to. Two views answer "does it?":

- :func:`action_landscape`: the energy after *one* predicted step, over a grid of first actions
  (two action dimensions varied, the others held at zero) from a given frame and state - the
  world model's view, predictor included. A bowl whose minimum lies toward the goal means one
  planning step moves the right way; a flat sheet means the planner is blind from here.
- :func:`state_landscape`: the energy of the *encoder's* latents of real frames rendered at a grid of
  positions against the goal frame's latents - no predictor, so it bounds what any predictor can
  give the planner: where this map is flat (e.g. far from the goal, when latents only see the agent
  locally), no planner reaches the goal by following the energy.

Both return plain arrays for :mod:`vjepa_pipeline.eval.planning_plots` to draw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .energy import goal_energy
from .world_model import LatentWorldModel


@dataclass
class Landscape:
    """``energy`` (len(ys), len(xs)): row i, column j = the energy at (xs[j], ys[i]); ``marks``: named
    points of the same axes (e.g. ``"start"``, ``"goal"``, ``"best"``) for the picture."""

    xs: np.ndarray
    ys: np.ndarray
    energy: np.ndarray
    x_label: str
    y_label: str
    marks: dict[str, tuple[float, float]]

    def argmin(self) -> tuple[float, float]:
        i, j = np.unravel_index(int(np.nanargmin(self.energy)), self.energy.shape)
        return float(self.xs[j]), float(self.ys[i])

    def contrast(self) -> float:
        """(median - min) / median: 0 for a flat sheet, toward 1 for a deep, narrow minimum."""
        med = float(np.nanmedian(self.energy))
        return (med - float(np.nanmin(self.energy))) / med if med > 0 else 0.0


@torch.no_grad()
def action_landscape(model: LatentWorldModel, pixels: np.ndarray, state: Sequence[float],
                     goal_pixels: np.ndarray, low: Sequence[float], high: Sequence[float],
                     steps: int = 21, dims: tuple[int, int] = (0, 1), distance: str = "l1",
                     batch: int = 256) -> Landscape:
    """Energy after one predicted step for a ``steps`` x ``steps`` grid of first actions: action dims
    ``dims`` span [low, high] of those dims, the other dims are 0 (clipped into their bounds). A 1-D
    action space gives one row of ``steps`` actions."""
    low, high = np.asarray(low, np.float32), np.asarray(high, np.float32)
    a_dim = low.shape[0]
    if a_dim < 1 or high.shape != low.shape:
        raise ValueError(f"action bounds must be two equal-length vectors, got {low.shape} and {high.shape}")
    if a_dim == 1:  # one action dimension: a 1-row landscape along it
        dims = (0, 0)
    if not all(0 <= d < a_dim for d in dims) or (a_dim > 1 and dims[0] == dims[1]):
        raise ValueError(f"dims {dims} must name two different action dimensions of {a_dim}")
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    xs = np.linspace(low[dims[0]], high[dims[0]], steps, dtype=np.float32)
    ys = np.linspace(low[dims[1]], high[dims[1]], steps, dtype=np.float32) if a_dim > 1 else np.zeros(1, np.float32)
    base = np.clip(np.zeros(a_dim, np.float32), low, high)
    grid = np.repeat(base[None], len(xs) * len(ys), axis=0)
    gx, gy = np.meshgrid(xs, ys)  # (len(ys), len(xs))
    grid[:, dims[0]] = gx.reshape(-1)
    if a_dim > 1:
        grid[:, dims[1]] = gy.reshape(-1)
    z0, zg = model.encode(pixels), model.encode(goal_pixels)
    s0 = torch.as_tensor(np.asarray(state, np.float32)).reshape(1, -1)
    energies = []
    for i in range(0, len(grid), batch):
        acts = torch.from_numpy(grid[i:i + batch]).unsqueeze(1)  # (b, 1, A)
        pred = model.rollout(z0, s0, acts)
        energies.append(goal_energy(pred, zg, distance).cpu())
    energy = torch.cat(energies).numpy().reshape(len(ys), len(xs))
    land = Landscape(xs, ys, energy, f"action[{dims[0]}]", f"action[{dims[1]}]" if a_dim > 1 else "-",
                     {"no action": (float(base[dims[0]]), float(base[dims[1]]) if a_dim > 1 else 0.0)})
    land.marks["lowest energy"] = land.argmin()
    return land


@torch.no_grad()
def state_landscape(model: LatentWorldModel, render: Callable[[float, float], np.ndarray],
                    goal: tuple[float, float], xs: Sequence[float], ys: Sequence[float],
                    distance: str = "l1", start: tuple[float, float] | None = None,
                    batch: int = 64) -> Landscape:
    """Energy of the encoder's latents of ``render(x, y)`` (the frame with the agent at (x, y)) against
    those of ``render(*goal)``, over the grid ``xs`` x ``ys``. ``start``: an extra mark."""
    xs, ys = np.asarray(xs, np.float32), np.asarray(ys, np.float32)
    if xs.ndim != 1 or ys.ndim != 1 or len(xs) < 2 or len(ys) < 2:
        raise ValueError("xs and ys must be 1-D with at least 2 positions each")
    zg = model.encode(render(*goal))
    points = [(float(x), float(y)) for y in ys for x in xs]
    energies = []
    for i in range(0, len(points), batch):
        frames = np.stack([render(x, y) for x, y in points[i:i + batch]])
        z = model.encode(frames)  # (b, N, D)
        energies.append(goal_energy(z.unsqueeze(1), zg, distance).cpu())
    energy = torch.cat(energies).numpy().reshape(len(ys), len(xs))
    marks = {"goal": (float(goal[0]), float(goal[1]))}
    if start is not None:
        marks["start"] = (float(start[0]), float(start[1]))
    return Landscape(xs, ys, energy, "x", "y", marks)


def guided_fraction(land: Landscape, rtol: float = 1e-3) -> float:
    """The share of grid positions (the goal's own cell excluded) from which the energy's steepest step
    to one of the 8 neighbouring cells strictly lowers the energy (by more than ``rtol`` of the energy's
    range) *and* ends closer to the goal: where a planner that follows the energy downhill makes
    progress. About 1 for an energy that measures the distance to the goal; near 0 where the latents see
    the agent only locally (a flat sheet away from the goal: nothing to follow)."""
    goal = land.marks.get("goal")
    if goal is None:
        raise ValueError("guided_fraction needs a landscape with a 'goal' mark (state_landscape)")
    e = land.energy
    tol = rtol * float(np.nanmax(e) - np.nanmin(e))
    gx, gy = np.meshgrid(land.xs, land.ys)
    dist = np.hypot(gx - goal[0], gy - goal[1])
    rows, cols = e.shape
    guided = total = 0
    goal_cell = np.unravel_index(int(np.argmin(dist)), dist.shape)
    for i in range(rows):
        for j in range(cols):
            if (i, j) == goal_cell:
                continue
            total += 1
            best, where = e[i, j] - tol, None
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    a, b = i + di, j + dj
                    if (di or dj) and 0 <= a < rows and 0 <= b < cols and e[a, b] < best:
                        best, where = e[a, b], (a, b)
            guided += where is not None and dist[where] < dist[i, j]
    return guided / total if total else 0.0
