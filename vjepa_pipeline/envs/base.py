"""What the embedded environments share: the constructor checks, the ``{"pixels", "state"}``
observation space, action parsing, the ``info`` dict, and anti-aliased rasterising in world units
(the unit square, y growing downward)."""

from __future__ import annotations

import math

import numpy as np
from gymnasium import spaces


def check_env_args(size: int, max_steps: int, render_mode: str | None) -> None:
    """One-line errors for the constructor arguments every embedded environment takes."""
    if size < 8 or size % 2:
        raise ValueError(f"size must be an even number >= 8, got {size}")
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    if render_mode not in (None, "rgb_array"):
        raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")


def parse_action(action, max_action: float) -> tuple[float, float]:
    """A (dx, dy) action, clipped to +-``max_action``; anything else is a one-line ValueError."""
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if a.shape != (2,) or not np.all(np.isfinite(a)):
        raise ValueError(f"action must be 2 finite numbers (dx, dy), got {action!r}")
    a = np.clip(a, -max_action, max_action)
    return float(a[0]), float(a[1])


def goal_info(tracked: tuple[float, float], goal: tuple[float, float], success_radius: float,
              state: np.ndarray, goal_array: np.ndarray) -> dict:
    """The ``info`` dict: distance from the tracked point (agent or block) to the goal, success, state,
    goal."""
    distance = math.hypot(goal[0] - tracked[0], goal[1] - tracked[1])
    return {"distance": distance, "success": distance < success_radius, "state": state, "goal": goal_array}


def parse_point(value, name: str, lo: float = 0.0, hi: float = 1.0) -> tuple[float, float]:
    """A finite (x, y) inside [lo, hi]^2 (reset options); anything else is a one-line ValueError."""
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.shape != (2,) or not np.all(np.isfinite(arr)) or np.any(arr < lo) or np.any(arr > hi):
        raise ValueError(f"{name} must be a finite (x, y) inside [{lo:g}, {hi:g}]^2, got {value!r}")
    return float(arr[0]), float(arr[1])


def pixel_state_space(size: int, state_dim: int) -> spaces.Dict:
    """``{"pixels": uint8 (size, size, 3), "state": float32 (state_dim,) in [0, 1]}``."""
    return spaces.Dict({
        "pixels": spaces.Box(0, 255, (size, size, 3), np.uint8),
        "state": spaces.Box(0.0, 1.0, (state_dim,), np.float32),
    })


def pixel_centres(size: int) -> np.ndarray:
    """Pixel centres in world units, (size,) float64."""
    return (np.arange(size, dtype=np.float64) + 0.5) / size


def rect_coverage(size: int, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    """Exact fraction of each pixel covered by the axis-aligned rectangle [x0, x1] x [y0, y1],
    (size, size) float64 indexed [row (y), column (x)]."""
    edges = np.arange(size + 1, dtype=np.float64) / size
    cx = np.clip(np.minimum(edges[1:], x1) - np.maximum(edges[:-1], x0), 0, None) * size
    cy = np.clip(np.minimum(edges[1:], y1) - np.maximum(edges[:-1], y0), 0, None) * size
    return cy[:, None] * cx[None, :]


def disc_coverage(size: int, x: float, y: float, radius: float) -> np.ndarray:
    """Approximate pixel coverage of a disc (a one-pixel linear ramp at the rim), (size, size)."""
    c = pixel_centres(size)
    dist = np.hypot(c[None, :] - x, c[:, None] - y) * size
    return np.clip(radius * size - dist + 0.5, 0.0, 1.0)


def paint(image: np.ndarray, alpha: np.ndarray, colour: tuple[int, int, int]) -> None:
    """Blend ``colour`` into the float image (H, W, 3) in place with per-pixel ``alpha``."""
    a = alpha[:, :, None]
    image *= 1.0 - a
    image += a * np.asarray(colour, dtype=np.float64)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
