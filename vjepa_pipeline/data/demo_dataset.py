"""The demo dataset: tiny motion-centric action recognition (in the spirit of Something-Something).

A clip's label is WHAT HAPPENS OVER TIME, never what a frame looks like:

    move_left  move_right  move_up  move_down   one object translates (direction within +-15 deg)
    rotate_cw  rotate_ccw                       one object turns 80-150 deg (clockwise on screen)
    grow       shrink                           one object scales by 1.5-2x
    occluded_reappear                           one object passes behind the bar and comes out
                                                on the other side (fully hidden for >= 1 frame)
    approach   separate                         two objects move towards / away from each other

Every clip holds the same cast whatever its class: two marked objects and one opaque bar over a
smooth, slowly drifting, tinted background, plus mild per-frame noise. Shape (square, disc,
triangle, cross, L, T, arrow, diamond), colours, sizes, start positions, speeds, directions and the
nuisance motion are drawn independently of the label. Every object carries a contrasting stripe
(the "marker") on one side, so any rotation is visible, discs and squares included.

A single frame carries no label information, by construction:

* The world is a torus: whatever leaves one edge re-enters at the opposite one (objects, bar and
  background are all periodic). Positions are then uniform in EVERY frame for every class, so a
  move_left clip does not start on the right. Orientations are uniform on the circle likewise.
* Sizes: a growing object's log-size runs linearly from ``a`` to ``a + g``; shrinking is the time
  reverse; objects of the other classes take the log-size ``a + g * t'/(T-1)`` at a random frame
  ``t'``, so the size seen in a random frame has the same distribution in every class.
* Two objects and one bar in every clip. Object N sits where an object crossing the bar would be at
  a random frame ``t_ref`` (so it is half or fully hidden as often as the occluded_reappear actor
  is); object F never touches the bar. Their distance at ``t_ref`` is drawn like an approaching
  pair's distance at a random frame. The class only decides who acts and how, and the motion
  passes through this layout at ``t_ref``: the occluded_reappear actor is N, the approach /
  separate pair is N and F, every other actor is F; a non-acting object only jitters (drift
  <= 3 % of the frame, turn <= 8 deg, size +-5 %).

Linear classifiers on single frames (pixels, Fourier magnitudes) stay at chance, while the same
classifier on motion measured from consecutive frame differences is near perfect
(tests/test_demo_dataset.py). What remains is second order: a fast mover changes its distance to
the other object over the clip, which a still pair does not.

Everything is deterministic in (seed, split, index): clip ``i`` of class ``c`` in split ``s``
comes from ``numpy.random.SeedSequence([seed, split code, c, i])``.

Layout written by :func:`generate_demo_dataset`::

    DIR/train/<class>/<class>_0000.mp4     folder per class: `vjepa shards build` labels them
    DIR/val/<class>/<class>_0000.mp4
    DIR/unlabelled/clip_00000.mp4          pretraining pool, classes mixed, no labels
    DIR/dataset.json                       written last, atomically: its absence marks an
                                           incomplete dataset, which the next call completes
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

CLASSES = ("move_left", "move_right", "move_up", "move_down", "rotate_cw", "rotate_ccw", "grow", "shrink",
           "occluded_reappear", "approach", "separate")
GENERATOR = "vjepa_pipeline.data.demo_dataset"
GENERATOR_VERSION = 1
MANIFEST = "dataset.json"
PARTIAL = ".demo_dataset_partial.json"  # marks a folder this generator is (or was) writing into
SPLIT_CODES = {"train": 1, "val": 2, "unlabelled": 3}
CRF = 18
MIN_SIZE, MIN_FRAMES = 16, 4

# Scene parameters, as fractions of the frame side unless named otherwise.
R_RANGE = (0.05, 0.11)         # object half-extent (all shape points lie within it)
SCALE_CHANGE = (1.5, 2.0)      # grow / shrink factor over the clip
MOVE_DIST = (0.18, 0.36)       # translation over the clip
MOVE_JITTER_DEG = 15.0         # direction deviation from the axis
ROTATION_DEG = (80.0, 150.0)   # rotation over the clip
APPROACH_DIST = (0.14, 0.24)   # change of the centre distance of approach / separate
APPROACH_GAP = (0.02, 0.06)    # edge gap between the two objects at their closest
APPROACH_MAX_DIST = 0.44       # farthest centre distance (< 0.5: the short way round stays the short way)
BAR_EXTRA = (0.05, 0.09)       # bar width beyond the object's diameter
OCCLUDE_GAP = (0.02, 0.06)     # clearance between object and bar at the first and last frame
NUISANCE_DRIFT = 0.03          # slow drift of objects that are not translating
NUISANCE_ROT_DEG = 8.0
NUISANCE_SCALE = 0.05          # +- log-size drift of objects that are not scaling
BG_DRIFT = 0.04
NOISE_STD = 0.012              # per-pixel, per-frame noise (0..1 scale)
MARKER_FROM = 0.3              # the marker is the part of the shape with local u > MARKER_FROM
CLEARANCE = 0.016              # smallest gap between an object and the bar / the other object


class DemoDatasetError(Exception):
    """The output folder cannot hold the demo dataset (the message says why)."""


# --------------------------------------------------------------------------------------------
# Shapes: unions of convex polygons (or the unit disc) in local coordinates within radius 1.


def _rect(x0: float, x1: float, y0: float, y1: float) -> list[tuple[float, float]]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


_SHAPE_POLYGONS: dict[str, list[list[tuple[float, float]]] | None] = {
    "square": [_rect(-0.7, 0.7, -0.7, 0.7)],
    "disc": None,
    "triangle": [[(1.0, 0.0), (-0.5, 0.866), (-0.5, -0.866)]],
    "cross": [_rect(-0.95, 0.95, -0.3, 0.3), _rect(-0.3, 0.3, -0.95, 0.95)],
    "L": [_rect(-0.7, -0.2, -0.7, 0.7), _rect(-0.7, 0.7, 0.2, 0.7)],
    "T": [_rect(0.22, 0.7, -0.7, 0.7), _rect(-0.7, 0.22, -0.22, 0.22)],
    "arrow": [_rect(-0.9, 0.1, -0.25, 0.25), [(0.1, -0.7), (0.95, 0.0), (0.1, 0.7)]],
    "diamond": [[(0.95, 0.0), (0.0, 0.6), (-0.95, 0.0), (0.0, -0.6)]],
}
SHAPES = tuple(_SHAPE_POLYGONS)


def _half_planes(poly: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Outward unit normals (k, 2) and offsets (k,) of a convex polygon: inside <=> n.p <= c."""
    pts = np.asarray(poly, dtype=np.float64)
    centre = pts.mean(axis=0)
    normals, offsets = [], []
    for a, b in zip(pts, np.roll(pts, -1, axis=0)):
        n = np.array([b[1] - a[1], a[0] - b[0]])
        n /= np.linalg.norm(n)
        if n @ (centre - a) > 0:
            n = -n
        normals.append(n)
        offsets.append(n @ a)
    return np.array(normals), np.array(offsets)


_SHAPE_PARTS = {name: None if polys is None else [_half_planes(p) for p in polys]
                for name, polys in _SHAPE_POLYGONS.items()}


def _wrap(d: np.ndarray, period: float) -> np.ndarray:
    """Signed torus difference in [-period/2, period/2)."""
    return (d + period / 2) % period - period / 2


def _object_coverage(shape: str, cx, cy, theta, r, size: int):
    """Anti-aliased coverage of an object and of its marker, on the torus, in a window around it.

    Returns (iy (T, S, 1), ix (T, 1, S), coverage (T, S, S), marker coverage (T, S, S)): frame t's
    window covers pixels (iy[t], ix[t]) (indices wrap around the frame). A local point (u, v) is
    drawn at screen offset r * R(theta) (u, v); the image y axis points down, so increasing theta
    turns the object clockwise on screen."""
    cx, cy, rr = (np.asarray(a, dtype=np.float64) for a in (cx, cy, r))
    half = math.ceil(float(rr.max()) + 2.0)
    span = min(2 * half + 1, size)
    steps = np.arange(span)
    ox, oy = np.floor(cx).astype(np.int64) - half, np.floor(cy).astype(np.int64) - half  # window origins
    dx = (ox[:, None] + steps[None, :] + 0.5 - cx[:, None])[:, None, :]  # (T, 1, S), exact offsets
    dy = (oy[:, None] + steps[None, :] + 0.5 - cy[:, None])[:, :, None]  # (T, S, 1)
    c, s = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    rr = rr[:, None, None]
    u = (c * dx + s * dy) / rr
    v = (-s * dx + c * dy) / rr
    parts = _SHAPE_PARTS[shape]
    if parts is None:
        sd = np.sqrt(u * u + v * v) - 0.95
    else:
        sd = None
        for normals, offsets in parts:
            d = normals[0, 0] * u + normals[0, 1] * v - offsets[0]
            for (nx, ny), off in zip(normals[1:], offsets[1:]):
                d = np.maximum(d, nx * u + ny * v - off)
            sd = d if sd is None else np.minimum(sd, d)
    cov = np.clip(0.5 - sd * rr, 0.0, 1.0)  # signed distance in pixels -> coverage
    marker = np.clip(0.5 + (u - MARKER_FROM) * rr, 0.0, 1.0) * cov
    iy = ((oy[:, None] + steps[None, :]) % size)[:, :, None]
    ix = ((ox[:, None] + steps[None, :]) % size)[:, None, :]
    return iy, ix, cov, marker


def _full_frame(iy: np.ndarray, ix: np.ndarray, window: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((window.shape[0], size, size))
    out[np.arange(window.shape[0])[:, None, None], iy, ix] = window
    return out


# --------------------------------------------------------------------------------------------
# Scene sampling
#
# Every clip has two objects and a bar. Object N ("near the bar") sits where a crossing object
# would be at a random frame t_ref of a crossing (so it is as often half or fully hidden as the
# occluded_reappear actor); object F ("free") is clear of the bar in every frame. Their distance
# at t_ref is drawn like an approaching pair's distance at a random frame. The class decides
# which object acts and how; its motion passes through the t_ref layout at frame t_ref.


def _colour(rng: np.random.Generator, avoid: list[np.ndarray], min_dist: float = 0.4) -> np.ndarray:
    for _ in range(100):
        col = rng.uniform(0.05, 0.95, 3)
        if all(np.linalg.norm(col - a) >= min_dist for a in avoid):
            return col
    return col


def _log_size(rng: np.random.Generator, size: int) -> tuple[float, float]:
    """(a, g): a log-size path from a to a + g that stays within R_RANGE."""
    lo, hi = math.log(R_RANGE[0] * size), math.log(R_RANGE[1] * size)
    g = rng.uniform(math.log(SCALE_CHANGE[0]), math.log(SCALE_CHANGE[1]))
    return rng.uniform(lo, hi - g), g


def _static_radius(rng: np.random.Generator, size: int, frames: int) -> float:
    """An object size distributed like a growing object's size at a random frame."""
    a, g = _log_size(rng, size)
    return math.exp(a + g * rng.integers(frames) / (frames - 1))


def _appearance(rng: np.random.Generator, bg: np.ndarray) -> dict:
    colour = _colour(rng, [bg])
    marker = colour * 0.25 if colour @ [0.299, 0.587, 0.114] > 0.5 else colour * 0.25 + 0.75
    return {"shape": SHAPES[rng.integers(len(SHAPES))], "colour": colour, "marker": marker}


def _still_tracks(rng: np.random.Generator, pos: np.ndarray, r: np.ndarray | float, dtau: np.ndarray,
                  size: float, drift_axis: np.ndarray | None = None) -> dict:
    """Tracks of an object that only jitters: slow drift through ``pos`` at t_ref (``dtau`` is
    tau - tau_ref), a slight turn, a slight size change (unless ``r`` is already a track)."""
    if drift_axis is None:
        a = rng.uniform(0, 2 * math.pi)
        drift_axis = np.array([math.cos(a), math.sin(a)])
    drift = rng.uniform(-1, 1) * NUISANCE_DRIFT * size * drift_axis
    theta0 = rng.uniform(0, 2 * math.pi)
    spin = math.radians(rng.uniform(-NUISANCE_ROT_DEG, NUISANCE_ROT_DEG))
    scale = rng.uniform(-NUISANCE_SCALE, NUISANCE_SCALE)
    r = np.asarray(r, dtype=np.float64)
    return {"pos": pos[None, :] + drift[None, :] * dtau[:, None], "theta": theta0 + spin * dtau,
            "r": r * np.exp(scale * dtau) if r.ndim == 0 else r}


def _clear(f: dict, n: dict, bar: dict, size: int) -> bool:
    """F clear of the bar in every frame, and the two objects never overlapping."""
    axis = 0 if bar["orient"] == "v" else 1
    margin = CLEARANCE * size
    if (np.abs(_wrap(f["pos"][:, axis] - bar["centre"], size)) <= bar["width"] / 2 + f["r"] + margin).any():
        return False
    d = _wrap(f["pos"] - n["pos"], size)
    return bool((np.hypot(d[:, 0], d[:, 1]) > f["r"] + n["r"] + margin).all())


def sample_scene(cls: str, rng: np.random.Generator, size: int = 64, frames: int = 16) -> dict:
    """Draw everything a clip of class ``cls`` needs (pure function of the rng state).

    Returns {"background", "bar", "objects": [two dicts with tracks cx, cy, theta, r over frames
    (pixels, radians; r is the half-extent)], "actors": indices of the acting objects}."""
    if cls not in CLASSES:
        raise ValueError(f"unknown class {cls!r}; classes: {', '.join(CLASSES)}")
    if frames < MIN_FRAMES:
        raise ValueError(f"frames must be >= {MIN_FRAMES}, got {frames}")
    if size < MIN_SIZE:
        raise ValueError(f"size must be >= {MIN_SIZE}, got {size}")
    for _ in range(1000):  # a layout that cannot be completed (rare) is drawn again
        scene = _try_scene(cls, rng, size, frames)
        if scene is not None:
            return scene
    raise RuntimeError(f"could not lay out a {cls} clip of {size} px")  # not seen in practice


def _try_scene(cls: str, rng: np.random.Generator, size: int, frames: int) -> dict | None:
    W, T = float(size), frames
    tau = np.linspace(0.0, 1.0, T)

    # Background: a tint plus a few periodic low-frequency waves, drifting slowly.
    bg_base = rng.uniform(0.25, 0.75, 3)
    waves = []
    for _ in range(8):
        k = rng.integers(-4, 5, 2)
        while not k.any():
            k = rng.integers(-4, 5, 2)
        amp = rng.uniform(0.02, 0.07) / math.sqrt(np.hypot(*k))
        waves.append((k, amp * rng.uniform(0.5, 1.0, 3), rng.uniform(0, 2 * math.pi)))
    a = rng.uniform(0, 2 * math.pi)
    background = {"base": bg_base, "waves": waves,
                  "drift": rng.uniform(0, BG_DRIFT * W) * np.array([math.cos(a), math.sin(a)])}

    # Bar, and object N on a crossing path relative to it, seen at frame t_ref.
    orient = "v" if rng.random() < 0.5 else "h"
    normal = np.array([1.0, 0.0]) if orient == "v" else np.array([0.0, 1.0])
    along = normal[::-1].copy()
    r_n = _static_radius(rng, size, T)
    bar = {"orient": orient, "width": 2 * r_n + rng.uniform(*BAR_EXTRA) * W, "centre": rng.uniform(0, W),
           "colour": _colour(rng, [bg_base]),
           "shade": (int(rng.integers(1, 3)), rng.uniform(0, 2 * math.pi), rng.uniform(0.0, 0.1))}
    t_c = min(max(int(rng.integers(round(0.35 * (T - 1)), round(0.65 * (T - 1)) + 1)), 1), T - 2)
    speed = (bar["width"] / 2 + r_n + rng.uniform(*OCCLUDE_GAP) * W) / min(t_c, T - 1 - t_c)  # px/frame
    cross = (1.0 if rng.random() < 0.5 else -1.0) * speed * (np.arange(T) - t_c)  # offset from the bar
    slant = math.tan(math.radians(rng.uniform(-10, 10)))
    t_ref = int(rng.integers(T))
    dtau = tau - tau[t_ref]
    n_ref = bar["centre"] * normal + cross[t_ref] * normal + rng.uniform(0, W) * along

    # Object F's size, and the pair distance at t_ref (as an approaching / separating pair's).
    if cls in ("grow", "shrink"):
        la, lg = _log_size(rng, size)
        r_f = np.exp(la + lg * (tau if cls == "grow" else 1.0 - tau))
    else:
        r_f = np.float64(_static_radius(rng, size, T))
    near = (float(np.max(r_f)) + r_n) * (1 + NUISANCE_SCALE) + rng.uniform(*APPROACH_GAP) * W
    change = max(0.0, min(rng.uniform(*APPROACH_DIST) * W, APPROACH_MAX_DIST * W - near))
    pair_dist = near + change * (1.0 - tau if cls == "approach" else tau)  # used by approach / separate
    d_ref = float(pair_dist[t_ref])

    # Class-specific motion parameters (drawn once, outside the placement retries).
    if cls.startswith("move_"):
        base = {"move_left": math.pi, "move_right": 0.0, "move_up": -math.pi / 2,
                "move_down": math.pi / 2}[cls]
        ang = base + math.radians(rng.uniform(-MOVE_JITTER_DEG, MOVE_JITTER_DEG))
        shift = rng.uniform(*MOVE_DIST) * W * np.array([math.cos(ang), math.sin(ang)])
    elif cls.startswith("rotate_"):
        turn = math.radians(rng.uniform(*ROTATION_DEG)) * (1 if cls == "rotate_cw" else -1)
    share = rng.uniform(0.3, 0.7)  # approach / separate: F's part of the distance change

    app_f, app_n = _appearance(rng, bg_base), _appearance(rng, bg_base)
    for attempt in range(200):  # place F around N; retry the direction until F is clear
        phi = rng.uniform(0, 2 * math.pi)
        e = np.array([math.cos(phi), math.sin(phi)])
        f_ref = n_ref + d_ref * e
        if attempt >= 100 and cls not in ("approach", "separate"):
            f_ref = rng.uniform(0, W, 2)  # a long mover may not fit at distance d_ref: anywhere then
        f = _still_tracks(rng, f_ref, r_f, dtau, W)
        if cls in ("approach", "separate"):
            n = _still_tracks(rng, n_ref, r_n, dtau, W)
            mid = f_ref - share * d_ref * e  # fixed point: F = mid + share d(t) e, N = mid - (1-share) d(t) e
            f["pos"] = mid[None, :] + share * pair_dist[:, None] * e[None, :]
            n["pos"] = mid[None, :] - (1.0 - share) * pair_dist[:, None] * e[None, :]
        else:
            n = _still_tracks(rng, n_ref, r_n, dtau, W, drift_axis=along)  # drifts along the bar only
            if cls == "occluded_reappear":
                off = cross - cross[t_ref]
                n["pos"] = n_ref[None, :] + off[:, None] * (normal + slant * along)[None, :]
            elif cls.startswith("move_"):
                f["pos"] = f_ref[None, :] + dtau[:, None] * shift[None, :]
            elif cls.startswith("rotate_"):
                f["theta"] = f["theta"][t_ref] + turn * dtau
        if _clear(f, n, bar, size):
            break
    else:
        return None

    objects = []
    for app, tracks in ((app_n, n), (app_f, f)):  # N first: drawn behind F
        pos = tracks["pos"] % W
        objects.append({**app, "cx": pos[:, 0], "cy": pos[:, 1], "theta": tracks["theta"],
                        "r": np.broadcast_to(tracks["r"], (T,)).astype(np.float64)})
    actors = {"occluded_reappear": [0], "approach": [0, 1], "separate": [0, 1]}.get(cls, [1])
    return {"class": cls, "size": size, "frames": T, "background": background, "bar": bar,
            "objects": objects, "actors": actors}


# --------------------------------------------------------------------------------------------
# Rendering


def _render_background(bg: dict, size: int, frames: int) -> np.ndarray:
    """(T, H, W, 3) float32: cos(kx*x + ky*y + phase) split into products of 1-D factors, summed
    over the waves with one batched matmul."""
    pix = np.arange(size, dtype=np.float64) + 0.5
    tau = np.linspace(0.0, 1.0, frames)
    sx = pix[None, :] - bg["drift"][0] * tau[:, None]  # (T, W)
    sy = pix[None, :] - bg["drift"][1] * tau[:, None]  # (T, H)
    k = np.array([w[0] for w in bg["waves"]], dtype=np.float64)  # (K, 2)
    amp = np.array([w[1] for w in bg["waves"]], dtype=np.float64)  # (K, 3)
    phase = np.array([w[2] for w in bg["waves"]])
    ax = 2 * math.pi * k[:, 0, None, None] * sx[None] / size + phase[:, None, None]  # (K, T, W)
    ay = 2 * math.pi * k[:, 1, None, None] * sy[None] / size  # (K, T, H)
    left = np.concatenate([np.cos(ay), -np.sin(ay)], axis=0).transpose(1, 2, 0)  # (T, H, 2K)
    right = np.concatenate([np.cos(ax)[..., None] * amp[:, None, None, :],
                            np.sin(ax)[..., None] * amp[:, None, None, :]], axis=0)  # (2K, T, W, 3)
    right = right.transpose(1, 0, 2, 3).reshape(frames, 2 * len(k), size * 3)
    img = np.matmul(left.astype(np.float32), right.astype(np.float32)).reshape(frames, size, size, 3)
    return img + bg["base"].astype(np.float32)


def render_scene(scene: dict, rng: np.random.Generator | None = None, noise: bool = True,
                 background: bool = True, layers: bool = False) -> tuple[np.ndarray, dict | None]:
    """Frames (T, H, W, 3) uint8 of a scene, and with ``layers=True`` the coverage maps they were
    composed from: ``objects`` [(coverage, marker coverage) (T, H, W)] per object as drawn before
    the bar, ``bar`` (H, W), ``visible`` (T, H, W) of each actor after the bar.

    ``noise=False`` / ``background=False`` (flat mid-grey) give clean renders for measuring."""
    size, T = scene["size"], scene["frames"]
    if background:
        img = _render_background(scene["background"], size, T)
    else:
        img = np.full((T, size, size, 3), 0.5, dtype=np.float32)
    t_idx = np.arange(T)[:, None, None]
    windows = []
    for obj in scene["objects"]:
        iy, ix, cov, mark = _object_coverage(obj["shape"], obj["cx"], obj["cy"], obj["theta"], obj["r"], size)
        windows.append((iy, ix, cov, mark))
        c, m = cov.astype(np.float32)[..., None], mark.astype(np.float32)[..., None]
        patch = img[t_idx, iy, ix]
        img[t_idx, iy, ix] = (patch * (1.0 - c) + (c - m) * obj["colour"].astype(np.float32)
                              + m * obj["marker"].astype(np.float32))
    bar = scene["bar"]
    pix = np.arange(size, dtype=np.float64) + 0.5
    band = np.clip(bar["width"] / 2 + 0.5 - np.abs(_wrap(pix - bar["centre"], size)), 0.0, 1.0)
    cycles, phase, depth = bar["shade"]
    shade = 1.0 + depth * np.cos(2 * math.pi * cycles * pix / size + phase)  # along the bar
    cols = np.flatnonzero(band)
    colour = (bar["colour"][None, :] * shade[:, None]).astype(np.float32)  # (along, 3)
    b = band[cols].astype(np.float32)
    if bar["orient"] == "v":  # img[:, :, cols]: (T, H, n, 3)
        b = b[:, None]
        img[:, :, cols] = img[:, :, cols] * (1.0 - b) + colour[:, None, :] * b
    else:  # img[:, cols]: (T, n, W, 3)
        b = b[:, None, None]
        img[:, cols] = img[:, cols] * (1.0 - b) + colour[None, :, :] * b
    if noise:
        rng = rng if rng is not None else np.random.default_rng(0)
        img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(NOISE_STD)
    img *= np.float32(255.0)
    np.rint(img, out=img)
    frames = np.clip(img, 0, 255).astype(np.uint8)
    if not layers:
        return frames, None
    bar_cov = np.broadcast_to(band[None, :], (size, size)) if bar["orient"] == "v" else \
        np.broadcast_to(band[:, None], (size, size))
    full = [(_full_frame(iy, ix, cov, size), _full_frame(iy, ix, mark, size))
            for iy, ix, cov, mark in windows]
    visible = [full[i][0] * (1.0 - bar_cov[None]) for i in scene["actors"]]
    return frames, {"objects": full, "bar": bar_cov, "visible": visible}


def render_clip(cls: str, rng: np.random.Generator, size: int = 64, frames: int = 16, *,
                debug: bool = False):
    """One clip of class ``cls``: uint8 (T, H, W, 3). Pure function of the rng state.

    ``debug=True`` returns (frames, info) with info = {"scene": the sampled scene, "layers":
    the coverage maps of :func:`render_scene`, "clean": the same clip without background
    texture and noise}."""
    if size < MIN_SIZE or size % 2:
        raise ValueError(f"size must be even and >= {MIN_SIZE}, got {size}")
    scene = sample_scene(cls, rng, size, frames)
    clip, layers = render_scene(scene, rng, layers=debug)
    if not debug:
        return clip
    clean, _ = render_scene(scene, noise=False, background=False)
    return clip, {"scene": scene, "layers": layers, "clean": clean}


def clip_rng(seed: int, split: str, index: int, class_index: int = 0) -> np.random.Generator:
    """The generator of one dataset clip (class_index: 1 + the class's position; 0 for the pool)."""
    key = [int(seed), SPLIT_CODES[split], int(class_index), int(index)]
    return np.random.default_rng(np.random.SeedSequence(key))


def unlabelled_class(seed: int, index: int) -> tuple[str, np.random.Generator]:
    """The (hidden) class of pool clip ``index`` and the generator, positioned to render it."""
    rng = clip_rng(seed, "unlabelled", index)
    return CLASSES[int(rng.integers(len(CLASSES)))], rng


def dataset_clip(seed: int, split: str, index: int, cls: str | None = None, size: int = 64,
                 frames: int = 16) -> tuple[str, np.ndarray]:
    """Clip ``index`` of a split: (class, frames). Train / val need ``cls``; the unlabelled pool
    draws its class from (seed, index)."""
    if split == "unlabelled":
        cls, rng = unlabelled_class(seed, index)
    else:
        if cls is None:
            raise ValueError(f"split {split!r} needs a class")
        rng = clip_rng(seed, split, index, CLASSES.index(cls) + 1)
    return cls, render_clip(cls, rng, size, frames)


# --------------------------------------------------------------------------------------------
# Writing the dataset


def _params(train_per_class: int, val_per_class: int, unlabelled: int, size: int, frames: int, fps: float,
            seed: int) -> dict:
    return {"generator_version": GENERATOR_VERSION, "classes": list(CLASSES),
            "train_per_class": train_per_class, "val_per_class": val_per_class, "unlabelled": unlabelled,
            "size": size, "frames": frames, "fps": fps, "seed": seed, "crf": CRF}


def _plan(p: dict) -> list[tuple[str, str, str | None, int]]:
    """(relative path, split, class or None, index) of every clip."""
    tasks = []
    for split, count in (("train", p["train_per_class"]), ("val", p["val_per_class"])):
        for cls in CLASSES:
            tasks += [(f"{split}/{cls}/{cls}_{i:04d}.mp4", split, cls, i) for i in range(count)]
    tasks += [(f"unlabelled/clip_{i:05d}.mp4", "unlabelled", None, i) for i in range(p["unlabelled"])]
    return tasks


def encode_clips(jobs: list[tuple[str | os.PathLike, np.ndarray]], fps: float, crf: int = CRF) -> None:
    """Write several uint8 clips (T, H, W, 3) to H.264 mp4 files with ONE ffmpeg process.

    Same encoder settings as :func:`vjepa_pipeline.shards.media.write_video` (each output has its
    own single-threaded, bit-exact x264 instance, so the files are byte-identical to its output);
    starting ffmpeg costs more than encoding a tiny clip, hence the batching."""
    import subprocess
    import tempfile

    from ..shards.media import ffmpeg_exe

    if not jobs:
        return
    gop = max(1, round(fps))
    with tempfile.TemporaryDirectory(prefix="vjepa_demo_") as tmp:
        cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
        for k, (_, frames) in enumerate(jobs):
            arr = np.ascontiguousarray(frames, dtype=np.uint8)
            if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[1] % 2 or arr.shape[2] % 2:
                raise ValueError(f"expected uint8 frames (T, H, W, 3) with even H and W, got {arr.shape}")
            raw = os.path.join(tmp, f"{k}.rgb")
            arr.tofile(raw)
            cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{arr.shape[2]}x{arr.shape[1]}",
                    "-r", str(fps), "-i", raw]
        for k, (dst, _) in enumerate(jobs):
            cmd += ["-map", f"{k}:v", "-an", "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf),
                    "-pix_fmt", "yuv420p", "-g", str(gop), "-sc_threshold", "0", "-threads", "1",
                    "-fflags", "+bitexact", "-flags:v", "+bitexact", "-movflags", "+faststart", "-f", "mp4",
                    str(dst)]
        run = subprocess.run(cmd, capture_output=True, timeout=120 + 10 * len(jobs), check=False)
        if run.returncode != 0:
            raise RuntimeError(f"ffmpeg could not write {len(jobs)} clips (first {jobs[0][0]}): "
                               f"{run.stderr.decode(errors='replace')[-300:]}")


def _write_batch(root: str, tasks: list[tuple], p: dict) -> int:
    """Render and encode a batch of planned clips; each lands under its final name by rename."""
    jobs, finals = [], []
    for rel, split, cls, index in tasks:
        _, frames = dataset_clip(p["seed"], split, index, cls, p["size"], p["frames"])
        dst = Path(root) / rel
        jobs.append((dst.with_name(dst.name + ".tmp"), frames))
        finals.append(dst)
    encode_clips(jobs, p["fps"], p["crf"])
    for (tmp, _), dst in zip(jobs, finals):
        os.replace(tmp, dst)
    return len(tasks)


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _check_args(train_per_class, val_per_class, unlabelled, size, frames, fps, seed, workers) -> None:
    for name, value in (("train_per_class", train_per_class), ("val_per_class", val_per_class),
                        ("unlabelled", unlabelled), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_SIZE or size % 2:
        raise ValueError(f"size must be an even integer >= {MIN_SIZE} (H.264 4:2:0 needs even sides), "
                         f"got {size!r}")
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < MIN_FRAMES:
        raise ValueError(f"frames must be an integer >= {MIN_FRAMES}, got {frames!r}")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not (0 < fps <= 240):
        raise ValueError(f"fps must be in (0, 240], got {fps!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if train_per_class + val_per_class + unlabelled == 0:
        raise ValueError("nothing to generate: all counts are 0")


def _progress_printer(total: int, enabled: bool) -> Callable[[int], None]:
    tty = sys.stderr.isatty()
    state = {"last": -1.0, "t0": time.monotonic()}

    def show(done: int) -> None:
        if not enabled or total == 0:
            return
        now = time.monotonic()
        if done < total and now - state["last"] < (0.2 if tty else 5.0):
            return
        state["last"] = now
        line = f"demo dataset: {done}/{total} clips ({now - state['t0']:.1f} s)"
        print(("\r" + line) if tty else line, end="\n" if (done == total or not tty) else "", file=sys.stderr,
              flush=True)

    return show


def generate_demo_dataset(out_dir: str | os.PathLike, train_per_class: int = 40, val_per_class: int = 10,
                          unlabelled: int = 800, size: int = 64, frames: int = 16, fps: float = 8,
                          seed: int = 0, workers: int = 2, progress: bool = True) -> dict:
    """Write the demo dataset under ``out_dir`` and return the content of its dataset.json
    (see :func:`write_demo_dataset`)."""
    return write_demo_dataset(out_dir, train_per_class, val_per_class, unlabelled, size, frames, fps, seed,
                              workers, progress)[0]


def write_demo_dataset(out_dir: str | os.PathLike, train_per_class: int = 40, val_per_class: int = 10,
                       unlabelled: int = 800, size: int = 64, frames: int = 16, fps: float = 8,
                       seed: int = 0, workers: int = 2, progress: bool = True) -> tuple[dict, int]:
    """Write the demo dataset under ``out_dir``: (content of its dataset.json, clips written now).

    Idempotent: when dataset.json records the same parameters and every clip exists, nothing is
    touched. An interrupted run (no dataset.json yet) is completed, keeping the clips already
    written with the same parameters; other parameters regenerate everything. Clips are written
    to a temporary name and renamed, dataset.json last. Raises DemoDatasetError for a non-empty
    folder that is not a demo dataset, ValueError for bad arguments."""
    _check_args(train_per_class, val_per_class, unlabelled, size, frames, fps, seed, workers)
    fps = float(fps) if not float(fps).is_integer() else int(fps)
    out = Path(out_dir)
    params = _params(train_per_class, val_per_class, unlabelled, size, frames, fps, seed)
    plan = _plan(params)
    manifest_path, partial_path = out / MANIFEST, out / PARTIAL
    manifest = _read_json(manifest_path) if manifest_path.exists() else None
    complete = manifest is not None and manifest.get("params") == params
    if complete and all((out / t[0]).is_file() for t in plan):
        return manifest, 0

    if out.exists() and not out.is_dir():
        raise DemoDatasetError(f"{out} exists and is not a folder")
    ours = partial_path.exists() or (manifest is not None and manifest.get("generator") == GENERATOR)
    if out.is_dir() and any(out.iterdir()) and not ours:
        raise DemoDatasetError(f"{out} is not empty and holds no demo dataset (no {MANIFEST} written by this "
                               "generator): give a new or empty folder")
    previous = _read_json(partial_path) if partial_path.exists() else manifest
    reuse = previous is not None and previous.get("params") == params
    out.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)  # from here on the folder reads as incomplete
    _write_json_atomic(partial_path, {"params": params})

    # Remove what this generator wrote before and the plan no longer holds (or everything, when
    # the parameters changed), so `vjepa shards build` sees exactly the planned clips.
    planned = {t[0] for t in plan}
    for split in ("train", "val", "unlabelled"):
        split_dir = out / split
        if not split_dir.is_dir():
            continue
        for f in sorted(split_dir.rglob("*")):
            if f.is_file() and (f.suffix == ".tmp" or (f.suffix == ".mp4" and (
                    not reuse or f.relative_to(out).as_posix() not in planned))):
                f.unlink()
        for d in sorted((d for d in split_dir.rglob("*") if d.is_dir()), reverse=True):
            if not any(d.iterdir()):
                d.rmdir()
    for split, cls in {(t[1], t[2]) for t in plan}:
        (out / split / cls if cls else out / split).mkdir(parents=True, exist_ok=True)

    todo = [t for t in plan if not (reuse and (out / t[0]).is_file())]
    show = _progress_printer(len(plan), progress)
    done = len(plan) - len(todo)
    t0 = time.monotonic()
    show(done)
    # Batches of clips, one ffmpeg each; small enough that every worker gets several.
    per_batch = max(1, min(24, math.ceil(len(todo) / (4 * workers))))
    batches = [todo[i:i + per_batch] for i in range(0, len(todo), per_batch)]
    if workers == 1 or len(batches) == 1:
        for batch in batches:
            done += _write_batch(str(out), batch, params)
            show(done)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = multiprocessing.get_context("spawn")  # no fork of a (possibly threaded) parent
        with ProcessPoolExecutor(max_workers=min(workers, len(batches)), mp_context=ctx) as pool:
            futures = [pool.submit(_write_batch, str(out), batch, params) for batch in batches]
            try:
                for fut in as_completed(futures):
                    done += fut.result()
                    show(done)
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise

    counts = {"train": {c: train_per_class for c in CLASSES}, "val": {c: val_per_class for c in CLASSES},
              "unlabelled": unlabelled, "total": len(plan)}
    hidden = [unlabelled_class(seed, i)[0] for i in range(unlabelled)]
    manifest = {
        "name": "vjepa-demo-motion",
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "classes": list(CLASSES),
        "counts": counts,
        "seed": seed, "size": size, "frames": frames, "fps": fps, "crf": CRF,
        "layout": {"train": "train/<class>/<class>_NNNN.mp4", "val": "val/<class>/<class>_NNNN.mp4",
                   "unlabelled": "unlabelled/clip_NNNNN.mp4"},
        "description": "motion-defined classes: a single frame carries no label information",
        "unlabelled_class_counts": {c: hidden.count(c) for c in CLASSES},  # the pool's hidden mix
        "written_clips": len(todo),
        "seconds": round(time.monotonic() - t0, 2),
        "params": params,
    }
    _write_json_atomic(manifest_path, manifest)
    partial_path.unlink(missing_ok=True)
    return manifest, len(todo)


__all__ = ["CLASSES", "GENERATOR_VERSION", "SHAPES", "DemoDatasetError", "clip_rng", "dataset_clip",
           "encode_clips", "generate_demo_dataset", "render_clip", "render_scene", "sample_scene",
           "unlabelled_class", "write_demo_dataset"]
